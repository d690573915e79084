"""Workspace files → YAML documents with positions (the only file I/O of the compiler).

A workspace is a folder holding `.workflows/`; every `*.yaml`/`*.yml` under it
(recursively) is one document. Each document keeps, for every mapping key and every value
node, its 1-based (line, column), keyed by its path tuple (`("tasks", "build", "flow")`,
list items by index), so that the validator can point at the exact place of a problem.

The same entry point serves folders (`read_folder`) and in-memory file sets
(`load_files`, used for uploaded tarballs and git revisions). Problems are returned as
`Issue`s, never raised: a file that does not parse does not hide the others.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine.errors import Issue

WORKFLOWS_DIR = ".workflows"
YAML_SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 1 << 20
"""Largest workflow file accepted (1 MiB)."""
MAX_NODES = 200_000
"""Largest number of YAML nodes one file may expand to (aliases counted each time)."""

NodePath = tuple[str | int, ...]
Position = tuple[int, int]

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL_TAG = "tag:yaml.org,2002:bool"


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe YAML with YAML 1.2 booleans: only true/false are booleans, so that keys and
    values such as `on`, `yes`, `no` and `off` stay strings (`on:` in an event trigger)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed workflow file.

    `file` is the path relative to the workspace folder (`.workflows/build.yaml`).
    `keys` holds the position of every mapping key, `values` the position of every value
    node (mapping values and list items), both keyed by path.
    """

    file: str
    data: Any
    keys: Mapping[NodePath, Position] = field(default_factory=dict)
    values: Mapping[NodePath, Position] = field(default_factory=dict)

    def locate(self, path: Iterable[str | int], *, key: bool = False) -> Position:
        """The position of `path`, or of its nearest ancestor that has one.

        With `key=True` the position of the mapping key is preferred (for "unknown key"
        problems); otherwise the position of the value.
        """
        parts = tuple(path)
        while parts:
            first, second = (self.keys, self.values) if key else (self.values, self.keys)
            for table in (first, second):
                if parts in table:
                    return table[parts]
            parts = parts[:-1]
            key = True  # an ancestor is best shown at its key
        return (1, 1)

    def issue(self, message: str, path: NodePath, dotted: str, **extra: Any) -> Issue:
        """An Issue located at `path` in this file."""
        key = bool(extra.pop("key", False))
        line, column = self.locate(path, key=key)
        return Issue(
            message=message, path=dotted, file=self.file, line=line, column=column, **extra
        )


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Every document that parsed, the issues of those that did not, and the revision."""

    documents: tuple[Document, ...]
    issues: tuple[Issue, ...]
    revision: str


def revision_of(files: Mapping[str, bytes]) -> str:
    """A content hash of the workflow files: sha256 over sorted paths and bytes (16 hex)."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        data = files[rel]
        digest.update(rel.encode())
        digest.update(b"\0")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:16]


def is_workflow_file(rel: str) -> bool:
    """True for a `*.yaml`/`*.yml` path under `.workflows/` (posix, relative)."""
    return rel.startswith(WORKFLOWS_DIR + "/") and rel.endswith(YAML_SUFFIXES)


def read_folder(root: Path) -> tuple[dict[str, bytes], list[Issue]]:
    """Read the workflow files of the workspace folder `root`.

    Files larger than `MAX_FILE_BYTES` are not read (an Issue each); links that lead out
    of the workspace are refused.
    """
    issues: list[Issue] = []
    base = root / WORKFLOWS_DIR
    if not base.is_dir():
        issues.append(Issue(message=f"no {WORKFLOWS_DIR}/ folder in {root}", file=str(root)))
        return {}, issues
    resolved_root = root.resolve()
    files: dict[str, bytes] = {}
    for path in sorted(base.rglob("*")):
        if not path.name.endswith(YAML_SUFFIXES) or not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if not path.resolve().is_relative_to(resolved_root):
            issues.append(Issue(message="links out of the workspace are not allowed", file=rel))
            continue
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            issues.append(_too_big(rel, size))
            continue
        files[rel] = path.read_bytes()
    return files, issues


def load_folder(root: Path) -> LoadResult:
    """Read and parse the workflow files of the workspace folder `root`."""
    files, issues = read_folder(root)
    result = load_files(files)
    return LoadResult(result.documents, (*issues, *result.issues), result.revision)


def load_files(files: Mapping[str, bytes]) -> LoadResult:
    """Parse an in-memory file set `{relative_path: bytes}` (paths relative to the
    workspace root; only workflow files under `.workflows/` are considered)."""
    wanted = {rel: data for rel, data in files.items() if is_workflow_file(rel)}
    documents: list[Document] = []
    issues: list[Issue] = []
    for rel in sorted(wanted):
        data = wanted[rel]
        if len(data) > MAX_FILE_BYTES:
            issues.append(_too_big(rel, len(data)))
            continue
        document, problems = parse_document(rel, data)
        issues.extend(problems)
        if document is not None:
            documents.append(document)
    return LoadResult(tuple(documents), tuple(issues), revision_of(wanted))


def parse_document(rel: str, data: bytes) -> tuple[Document | None, list[Issue]]:
    """Parse one file; on a syntax error return no document and an Issue at the mark."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Issue(message=f"not UTF-8 text: {exc.reason}", file=rel, line=1, column=1)]
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(file=rel, data=None), []
        recorder = _Recorder()
        recorder.walk(node, ())
        if recorder.issues:
            return None, [
                Issue(message=m, file=rel, line=line, column=col)
                for m, line, col in recorder.issues
            ]
        value = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        return None, [Issue(message=f"invalid YAML: {message}", file=rel, line=line, column=column)]
    except yaml.YAMLError as exc:
        return None, [Issue(message=f"invalid YAML: {exc}", file=rel, line=1, column=1)]
    except RecursionError:
        return None, [Issue(message="invalid YAML: nested too deeply", file=rel, line=1, column=1)]
    finally:
        loader.dispose()
    return Document(file=rel, data=value, keys=recorder.keys, values=recorder.values), []


class _Recorder:
    """Walks a node tree, recording positions and catching duplicate keys and alias bombs."""

    def __init__(self) -> None:
        self.keys: dict[NodePath, Position] = {}
        self.values: dict[NodePath, Position] = {}
        self.issues: list[tuple[str, int, int]] = []
        self._seen: set[int] = set()
        self._sizes: dict[int, int] = {}
        self._count = 0

    def walk(self, node: Node, path: NodePath) -> None:
        self.values[path] = _pos(node)
        self._count += 1
        if isinstance(node, ScalarNode):
            return
        if id(node) in self._seen:
            # An alias of a node walked before: its contents are located at the anchor.
            self._count += self._size(node, set())
        if self._count > MAX_NODES:
            if not self.issues:
                line, col = _pos(node)
                self.issues.append(
                    (f"too many YAML nodes (more than {MAX_NODES}, counting aliases)", line, col)
                )
            return
        if id(node) in self._seen:
            return
        self._seen.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[str, Position] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    line, col = _pos(key_node)
                    self.issues.append(("a mapping key must be a plain value", line, col))
                    continue
                key = key_node.value
                if key == "<<" and key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if key in first:
                    line, col = _pos(key_node)
                    self.issues.append(
                        (f"duplicate key '{key}' (first at line {first[key][0]})", line, col)
                    )
                    continue
                first[key] = _pos(key_node)
                self.keys[(*path, key)] = _pos(key_node)
                self.walk(value_node, (*path, key))
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, (*path, index))


    def _size(self, node: Node, active: set[int]) -> int:
        """How many nodes `node` expands to, aliases counted each time (memoized)."""
        if not isinstance(node, MappingNode | SequenceNode) or id(node) in active:
            return 1
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        active.add(id(node))
        total = 1
        children = (
            [v for pair in node.value for v in pair]
            if isinstance(node, MappingNode)
            else node.value
        )
        for child in children:
            total += self._size(child, active)
        active.discard(id(node))
        self._sizes[id(node)] = total
        return total


def _pos(node: Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _too_big(rel: str, size: int) -> Issue:
    return Issue(
        message=f"file is too large ({size} bytes; the limit is {MAX_FILE_BYTES})", file=rel
    )
