"""Starting a step's program with the C library's `posix_spawn`, where it can do all of it.

`subprocess.Popen` runs a few hundred lines of Python per start (and holds the GIL for
them, next to the event loop); glibc's `posix_spawn` does the same work — `vfork`, the
step's working directory, its standard streams, a new session, default signal handling,
every other descriptor closed, `exec` — in C, with the GIL released: about half the
parent's CPU per step. It needs glibc 2.34 or later (`addchdir_np`, `addclosefrom_np`);
elsewhere, or when a descriptor is one the child's standard streams need to move,
`spawn_program` returns None and the caller uses `Popen`.

The child gets what `Popen(..., start_new_session=True, close_fds=True,
restore_signals=True)` gives it: its own session and process group, SIGPIPE and SIGXFSZ
back to their defaults (Python ignores SIGPIPE), no blocked signals, only fds 0–2 open.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# glibc's flags (spawn.h); the opaque structs are smaller than these buffers.
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80
_STRUCT_BYTES = 512
_SIGSET_BYTES = 128


class _Libc:
    """The `posix_spawn` functions of glibc, and one attributes object for every start.

    Only `posix_spawn` itself releases the GIL (`lib`, a `CDLL`): the file actions are
    filled in through `keep` (a `PyDLL` of the same library), since every release is a
    chance for another thread to take the GIL and the caller to wait for it back.
    """

    def __init__(self, lib: Any, keep: Any) -> None:
        self.lib = lib
        self.spawn = lib.posix_spawn
        self.spawn.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, ctypes.c_void_p,
                               ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.fa_init = keep.posix_spawn_file_actions_init
        self.fa_destroy = keep.posix_spawn_file_actions_destroy
        self.fa_open = keep.posix_spawn_file_actions_addopen
        self.fa_open.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p,
                                 ctypes.c_int, ctypes.c_uint]
        self.fa_dup2 = keep.posix_spawn_file_actions_adddup2
        self.fa_chdir = keep.posix_spawn_file_actions_addchdir_np
        self.fa_chdir.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.fa_closefrom = keep.posix_spawn_file_actions_addclosefrom_np
        self.attr = ctypes.create_string_buffer(_STRUCT_BYTES)
        self._check(lib.posix_spawnattr_init(self.attr))
        defaults = ctypes.create_string_buffer(_SIGSET_BYTES)
        empty = ctypes.create_string_buffer(_SIGSET_BYTES)
        self._check(lib.sigemptyset(defaults))
        self._check(lib.sigemptyset(empty))
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            self._check(lib.sigaddset(defaults, int(sig)))
        self._check(lib.posix_spawnattr_setsigdefault(self.attr, defaults))
        self._check(lib.posix_spawnattr_setsigmask(self.attr, empty))
        self._check(lib.posix_spawnattr_setflags(
            self.attr, ctypes.c_short(_SETSID | _SETSIGDEF | _SETSIGMASK)))

    @staticmethod
    def _check(rc: int) -> None:
        if rc != 0:
            raise OSError(rc, os.strerror(rc))


def _load() -> _Libc | None:
    if not sys.platform.startswith("linux") or os.environ.get("PARTITUR_SPAWN") == "popen":
        return None
    try:
        name = ctypes.util.find_library("c") or "libc.so.6"
        lib = ctypes.CDLL(name, use_errno=True)
        if not hasattr(lib, "posix_spawn_file_actions_addclosefrom_np"):
            return None  # glibc < 2.34 (or not glibc)
        return _Libc(lib, ctypes.PyDLL(name))
    except (OSError, AttributeError):
        return None


_LIBC = _load()
_FOUND: dict[tuple[bytes, bytes], bytes] = {}


def available() -> bool:
    """Whether `spawn_program` starts programs here (else it always returns None)."""
    return _LIBC is not None


def _executable(name: bytes, path: bytes, refresh: bool = False) -> bytes | None:
    """`name` looked up on `path` (the child's PATH), as `Popen` does; cached."""
    if b"/" in name:
        return name
    key = (name, path)
    found = None if refresh else _FOUND.get(key)
    if found is None:
        where = shutil.which(os.fsdecode(name), path=os.fsdecode(path))
        if where is None:
            return None
        found = _FOUND[key] = os.fsencode(where)
    return found


def spawn_program(
    argv: Sequence[str], *, cwd: Path, env: Mapping[bytes, bytes] | Mapping[str, str],
    stdin: int | None, stdout: int, stderr: int,
) -> int | None:
    """Start `argv` in `cwd` with exactly `env`; its stdin is `stdin` (None: /dev/null),
    its stdout/stderr the given descriptors. Returns its pid, or None when this start
    is not one for `posix_spawn` (the caller uses `Popen`). Raises `OSError` (as `Popen`
    does: `FileNotFoundError` naming the program or the missing `cwd`) when it cannot
    start."""
    prepared = prepare_spawn(argv, cwd=cwd, env=env, stdin=stdin, stdout=stdout,
                             stderr=stderr)
    if prepared is None:
        return None
    try:
        return prepared.start()
    finally:
        prepared.close()


def prepare_spawn(
    argv: Sequence[str], *, cwd: Path, env: Mapping[bytes, bytes] | Mapping[str, str],
    stdin: int | None, stdout: int, stderr: int,
) -> PreparedSpawn | None:
    """`spawn_program` in two parts: everything but the start, done here with the GIL
    held, and `PreparedSpawn.start` (one call that releases it), for another thread.
    None when this start is not one for `posix_spawn`; `close` it after the start."""
    libc = _LIBC
    if libc is None or min(stdout, stderr, 3 if stdin is None else stdin) < 3:
        return None
    args = [os.fsencode(a) for a in argv]
    environ = [(k if type(k) is bytes else os.fsencode(k)) + b"="
               + (v if type(v) is bytes else os.fsencode(v)) for k, v in env.items()]
    path = next((e[5:] for e in environ if e.startswith(b"PATH=")), os.defpath.encode())
    return PreparedSpawn(libc, args, environ, path, os.fsencode(cwd), stdin, stdout, stderr)


_ARRAYS: dict[int, Any] = {}


def _array(length: int) -> Any:
    """The ctypes type `char *[length]` (made once per length: making one costs more than
    filling it)."""
    kind = _ARRAYS.get(length)
    if kind is None:
        kind = _ARRAYS[length] = ctypes.c_char_p * length
    return kind


class PreparedSpawn:
    """One start, ready: the file actions filled in, the C arrays of argv and environ."""

    __slots__ = ("_actions", "_args", "_argv", "_directory", "_env", "_libc", "_path",
                 "_program")

    def __init__(self, libc: _Libc, args: list[bytes], environ: list[bytes], path: bytes,
                 directory: bytes, stdin: int | None, stdout: int, stderr: int) -> None:
        self._libc, self._args, self._path, self._directory = libc, args, path, directory
        self._program = _executable(args[0], path)
        actions: Any = ctypes.create_string_buffer(_STRUCT_BYTES)
        _Libc._check(libc.fa_init(actions))
        self._actions: Any = actions
        try:
            if stdin is None:
                _Libc._check(libc.fa_open(actions, 0, b"/dev/null", os.O_RDONLY, 0))
            else:
                _Libc._check(libc.fa_dup2(actions, stdin, 0))
            _Libc._check(libc.fa_dup2(actions, stdout, 1))
            _Libc._check(libc.fa_dup2(actions, stderr, 2))
            _Libc._check(libc.fa_chdir(actions, directory))
            _Libc._check(libc.fa_closefrom(actions, 3))
        except BaseException:
            self.close()
            raise
        self._argv = _array(len(args) + 1)(*args, None)
        self._env = _array(len(environ) + 1)(*environ, None)

    def start(self) -> int:
        """Start the program (any thread); its pid. Raises `OSError` as `spawn_program`."""
        libc, name, program = self._libc, self._args[0], self._program
        for attempt in range(2):
            if attempt:
                program = _executable(name, self._path, refresh=True)
            if program is None:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory",
                                        os.fsdecode(name))
            pid = ctypes.c_int(0)
            rc = libc.spawn(ctypes.byref(pid), program, self._actions, libc.attr,
                            self._argv, self._env)
            if rc == 0:
                return pid.value
            if rc == errno.ENOENT and not os.path.isdir(self._directory):
                raise FileNotFoundError(rc, os.strerror(rc), os.fsdecode(self._directory))
            if rc != errno.ENOENT or b"/" in name:
                break  # else the cached lookup may be stale: look again once
        raise OSError(rc, os.strerror(rc), os.fsdecode(name))

    def close(self) -> None:
        """Free the file actions (after the start, or instead of it)."""
        if self._actions is not None:
            self._libc.fa_destroy(self._actions)
            self._actions = None
