"""`<< >>` templating (DESIGN §3): the sandboxed Jinja2 environment, rendering with types
preserved, shell quoting, template contexts, and the static checks the validator runs.

Syntax: `<< expr >>` inserts a value, `<% … %>` is a block tag, `<# … #>` a comment.
Expressions run in Jinja2's sandbox with strict undefined: a missing name is a
`RenderError` naming it. A `<<` with no `>>` after it on the same line is plain text, so
shell heredocs (`cat <<EOF`), here-strings (`<<<`) and shifts (`$((1 << 4))`) need no
escaping.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from collections import ChainMap
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any, cast

from jinja2 import StrictUndefined, nodes
from jinja2.environment import Template
from jinja2.exceptions import (
    SecurityError,
    TemplateError,
    TemplateRuntimeError,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from engine.errors import Issue, RenderError

# Names the context always owns; a step's underscore shorthand never shadows them.
RESERVED_NAMES = frozenset({"input", "secret", "steps", "each", "job", "hook", "state", "env"})
# Attributes that make `name.attr` a reference to step `name` (Strøm shorthand).
STEP_FIELDS = frozenset({"output", "status", "error"})
# Names Jinja binds itself inside templates; never step references.
_JINJA_NAMES = frozenset({"loop", "self", "caller", "varargs", "kwargs"})

_MAX_SEQUENCE = 1_000_000  # longest string or list `*` may build
_MAX_EXPONENT = 4096  # largest integer exponent `**` may use

# A `<<` opens an expression only if a `>>` follows on its line (see the module docstring).
_SYNTAX = re.compile(r"<<(?=[^\n]*>>)|<%|<#")
_LITERAL_SHIFT = re.compile(r"<<(?![%#])(?![^\n]*>>)")
_LITERAL_SHIFT_ESCAPED = "<% raw %><<<% endraw %>"
_RAW_FILTER = re.compile(r"\|\s*raw\b")
# What a template result may be that reads as a JSON array.
_SEQUENCES = (list, tuple, Iterator, range, set, frozenset, KeysView, ValuesView, ItemsView)


class Raw(str):
    """Text marked by `| raw`: a shell body inserts it without quoting."""

    __slots__ = ()


class _MissingName(UndefinedError):
    """An undefined name or attribute, remembering which and on what object."""

    def __init__(self, message: str | None = None, *, name: Any = None, owner: Any = missing):
        super().__init__(message)
        self.missing_name = name
        self.owner = owner


class _Undefined(StrictUndefined):
    """StrictUndefined whose error carries the missing name, for a better message."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        super().__init__(hint, obj, name, exc)
        if exc is UndefinedError:
            factory = functools.partial(_MissingName, name=name, owner=obj)
            self._undefined_exception = cast("type[TemplateRuntimeError]", factory)


class _ShellUnsafe(Exception):
    """A value that no quoting can pass to a shell."""


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, plus limits on `*` and `**` so a template cannot exhaust memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and right > _MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is larger than {_MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > _MAX_SEQUENCE
                ):
                    raise SecurityError(f"result longer than {_MAX_SEQUENCE} items")
        return super().call_binop(context, operator, left, right)


def to_text(value: Any) -> str:
    """How a value reads inside text: JSON for structures, `true`/`false`, `""` for None."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Mapping) or isinstance(value, _SEQUENCES):
        return json.dumps(_plain(value), ensure_ascii=False, default=str)
    return str(value)


def _plain(value: Any) -> Any:
    """A template result as plain data: mappings → dicts, sequences → lists, no Undefined."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, _SEQUENCES):
        return [_plain(item) for item in value]
    return value


def _raw(value: Any) -> Raw:
    return Raw(to_text(value))


def _finalize_text(value: Any) -> str:
    return to_text(value)


def _finalize_shell(value: Any) -> str:
    text = to_text(value)
    if "\x00" in text:
        raise _ShellUnsafe(
            "a value containing a NUL byte cannot be passed safely to a shell"
        )
    return text if isinstance(value, Raw) else shlex.quote(text)


def _environment(finalize: Any) -> _Sandbox:
    env = _Sandbox(
        variable_start_string="<<",
        variable_end_string=">>",
        block_start_string="<%",
        block_end_string="%>",
        comment_start_string="<#",
        comment_end_string="#>",
        undefined=_Undefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=finalize,
    )
    env.filters["raw"] = _raw
    return env


_TEXT_ENV = _environment(_finalize_text)
_SHELL_ENV = _environment(_finalize_shell)


# --- compiling (cached) --------------------------------------------------------------


def _has_syntax(text: str) -> bool:
    return "<" in text and _SYNTAX.search(text) is not None


def _source(text: str) -> str:
    """The text with literal `<<` (heredocs, shifts) wrapped in a raw block."""
    return _LITERAL_SHIFT.sub(_LITERAL_SHIFT_ESCAPED, text)


@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> nodes.Template:
    return _TEXT_ENV.parse(_source(text))


@functools.lru_cache(maxsize=8192)
def _template(text: str, shell: bool) -> Template:
    env = _SHELL_ENV if shell else _TEXT_ENV
    return env.from_string(_source(text))



@functools.lru_cache(maxsize=8192)
def _expression(text: str) -> tuple[Template, int] | None:
    """For a text that is exactly one `<< expr >>`: a template assigning it to `result`,
    and the expression's line."""
    # Parsed afresh: compiling optimizes the tree in place, and `_parse` trees are shared.
    body = _TEXT_ENV.parse(_source(text)).body
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None
    exprs = [n for n in body[0].nodes if not isinstance(n, nodes.TemplateData)]
    data = [n for n in body[0].nodes if isinstance(n, nodes.TemplateData)]
    if len(exprs) != 1 or any(d.data.strip() for d in data):
        return None
    expr = exprs[0]
    assign = nodes.Assign(nodes.Name("result", "store"), expr, lineno=expr.lineno)
    return _TEXT_ENV.from_string(nodes.Template([assign], lineno=1)), expr.lineno


# --- rendering -----------------------------------------------------------------------


def _new_context(template: Template, context: Mapping[str, Any]) -> Context:
    # Layered rather than merged: a plan of thousands of steps has a context of thousands
    # of names, and copying it for every small template would dominate rendering.
    layered = ChainMap(cast("dict[str, Any]", context), template.globals)
    return template.new_context(cast("dict[str, Any]", layered), shared=True)


def _render(text: str, context: Mapping[str, Any], where: str, *, mode: str) -> Any:
    """Render one string: `mode` is `value` (types preserved), `text` or `shell`."""
    line: int | None = None
    try:
        if mode == "value":
            expression = _expression(text)
            if expression is not None:
                template, line = expression
                ctx = _new_context(template, context)
                for _ in template.root_render_func(ctx):
                    pass
                return _plain(ctx.vars["result"])
        template = _template(text, mode == "shell")
        return "".join(template.root_render_func(_new_context(template, context)))
    except Exception as exc:
        raise _render_error(exc, text, context, where, line) from exc


def _render_error(
    exc: Exception, text: str, context: Mapping[str, Any], where: str, line: int | None
) -> RenderError:
    name: str | None = None
    line = _template_line(exc) or line
    if isinstance(exc, RenderError):
        return exc
    if isinstance(exc, TemplateSyntaxError):
        message = f"template syntax error: {exc.message}"
        line = exc.lineno
    elif isinstance(exc, _MissingName):
        message, name = _describe_missing(exc, text, context)
    elif isinstance(exc, SecurityError):
        message = f"not allowed in a template: {exc.message}"
    elif isinstance(exc, TemplateError):
        message = exc.message or type(exc).__name__
    elif isinstance(exc, _ShellUnsafe):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}"
    if line is not None:
        message += f" (template line {line})"
    return RenderError(message, where=where, name=name)


def _template_line(exc: BaseException) -> int | None:
    """The template line of the innermost template frame in the traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if isinstance(template, Template):
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return line


def _describe_missing(
    exc: _MissingName, text: str, context: Mapping[str, Any]
) -> tuple[str, str]:
    """`("'input.nme' is undefined: input has no key 'nme' (it has: name)", "input.nme")`."""
    key, owner = exc.missing_name, exc.owner
    if owner is missing:
        return f"{str(key)!r} is undefined", str(key)
    node = _find_access(text, key, owner, context)
    path = _path_of(node) if node is not None else None
    base = _path_of(node.node) if isinstance(node, nodes.Getattr | nodes.Getitem) else None
    subject = base or "the value"
    if isinstance(owner, Mapping):
        keys = sorted(str(k) for k in owner)
        has = f"it has: {', '.join(keys[:20])}{', …' if len(keys) > 20 else ''}" if keys else (
            "it is empty"
        )
        detail = f"{subject} has no key {key!r} ({has})"
    elif isinstance(key, int) and isinstance(owner, list | tuple):
        detail = f"{subject} has no item {key} (it has {len(owner)})"
    else:
        detail = f"{subject} ({type(owner).__name__}) has no attribute {key!r}"
    shown = path or str(key)
    return f"{shown!r} is undefined: {detail}", shown


def _find_access(
    text: str, key: Any, owner: Any, context: Mapping[str, Any]
) -> nodes.Node | None:
    """The `x.key` / `x[key]` node that failed: the one whose `x` is `owner`, else the first."""
    try:
        ast = _parse(text)
    except TemplateSyntaxError:
        return None
    first: nodes.Node | None = None
    for node, base, name in _accesses(ast):
        if name != key:
            continue
        if _resolve(base, context) is owner:
            return node
        first = first or node
    return first


def _accesses(ast: nodes.Node) -> Iterator[tuple[nodes.Node, nodes.Node, Any]]:
    """`(node, base, key)` for every `base.key` and `base[constant key]` in a tree."""
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            yield node, node.node, node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            yield node, node.node, node.arg.value


def _resolve(node: nodes.Node, context: Mapping[str, Any]) -> Any:
    """The value a plain `a.b['c']` path names in the context (`missing` if it can't tell)."""
    try:
        if isinstance(node, nodes.Name):
            return context.get(node.name, missing)
        if isinstance(node, nodes.Getattr):
            base = _resolve(node.node, context)
            return base[node.attr] if isinstance(base, Mapping) else missing
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            base = _resolve(node.node, context)
            return base[node.arg.value] if isinstance(base, Mapping | list) else missing
    except (KeyError, IndexError, TypeError):
        pass
    return missing


def _path_of(node: nodes.Node) -> str | None:
    """`input.a['b-c'][0]` for the node of such a path; None for anything else."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _path_of(node.node)
        return f"{base}.{node.attr}" if base else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _path_of(node.node)
        return f"{base}[{node.arg.value!r}]" if base else None
    return None


def _join(where: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def render_value(value: Any, context: Mapping[str, Any], *, where: str = "") -> Any:
    """Render every string inside `value`; a lone `<< expr >>` keeps the value's type."""
    if isinstance(value, str):
        if not _has_syntax(value):
            return value
        return _render(value, context, where, mode="value")
    if isinstance(value, Mapping):
        return {k: render_value(v, context, where=_join(where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context, where=_join(where, i)) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(render_value(v, context, where=_join(where, i)) for i, v in enumerate(value))
    return value


def render_text(text: str, context: Mapping[str, Any], *, where: str = "") -> str:
    """Render a template to text."""
    if not _has_syntax(text):
        return text
    return cast(str, _render(text, context, where, mode="text"))


def render_shell(script: str, context: Mapping[str, Any], *, where: str = "") -> str:
    """Render a shell body: every `<< >>` value is shell-quoted unless marked `| raw`."""
    if not _has_syntax(script):
        return script
    return cast(str, _render(script, context, where, mode="shell"))


_FALSY_WORDS = frozenset({"", "false", "0", "no", "null", "none"})


def is_truthy(value: Any) -> bool:
    """Truthiness of a rendered `when`: also false are "false", "0", "no", "null", "none"."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return value.strip().lower() not in _FALSY_WORDS
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return len(value) > 0
    return True


# --- static checks -------------------------------------------------------------------


def _strings(value: Any, where: str) -> Iterable[tuple[str, str]]:
    """`(path, text)` of every string inside a nested value."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, _join(where, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, _join(where, index))


def has_template(value: Any) -> bool:
    """Whether any string inside `value` holds template syntax."""
    return any(_has_syntax(text) for _, text in _strings(value, ""))


def check_syntax(value: Any, *, where: str) -> list[Issue]:
    """Template syntax errors anywhere in `value`.

    Each issue's `path` is `where` (extended by the key path inside `value`) and its
    `line` the line within the template; the caller adds the YAML position if it has one.
    """
    issues: list[Issue] = []
    for path, text in _strings(value, where):
        if not _has_syntax(text):
            continue
        try:
            _template(text, False)
        except TemplateSyntaxError as exc:
            issues.append(Issue(
                message=f"template syntax error: {exc.message} (template line {exc.lineno})",
                path=path,
                line=exc.lineno,
            ))
    return issues


def referenced_steps(value: Any) -> set[str]:
    """Step names the templates in `value` refer to.

    `steps.X` and `steps['X']` give X; the shorthand `X.output|status|error` gives X as
    written (underscores), which the validator maps onto hyphenated step names.
    """
    found: set[str] = set()
    for _, text in _strings(value, ""):
        if not _has_syntax(text):
            continue
        try:
            ast = _parse(text)
        except TemplateSyntaxError:
            continue
        bound = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
        for _, base, key in _accesses(ast):
            if not isinstance(base, nodes.Name) or base.name in bound:
                continue
            if not isinstance(key, str):
                continue
            if base.name == "steps":
                found.add(key)
            elif (
                key in STEP_FIELDS
                and base.name not in RESERVED_NAMES
                and base.name not in _JINJA_NAMES
            ):
                found.add(base.name)
    return found


def uses_raw(script: str) -> bool:
    """Whether a template opts out of shell quoting somewhere with `| raw`."""
    if not _has_syntax(script):
        return False
    try:
        ast = _parse(script)
    except TemplateSyntaxError:
        return _RAW_FILTER.search(script) is not None
    return any(f.name == "raw" for f in ast.find_all(nodes.Filter))


# --- contexts ------------------------------------------------------------------------


def build_context(
    *,
    input: Mapping[str, Any],
    secret: Mapping[str, Any] | None = None,
    steps: Mapping[str, Mapping[str, Any]] | None = None,
    each: Mapping[str, Any] | None = None,
    job: Mapping[str, Any] | None = None,
    hook: Mapping[str, Any] | None = None,
    state: Any = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A template context.

    `steps` maps step name → `{output, status, error}`; each step is also reachable by its
    name with hyphens turned into underscores (a step literally named so wins), except
    where that would shadow a reserved name. `each`, `job`, `hook` and `env` are only
    defined when given, so using them elsewhere is an error that names them.
    """
    steps = steps or {}
    context: dict[str, Any] = {}
    for name, view in steps.items():
        key = name.replace("-", "_")
        if key in RESERVED_NAMES or (key in context and key != name):
            continue
        context[key] = view
    context.update(input=input, secret=secret or {}, steps=steps, state=state)
    for key, extra in (("each", each), ("job", job), ("hook", hook), ("env", env)):
        if extra is not None:
            context[key] = extra
    return context
