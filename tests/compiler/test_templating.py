"""Tests of `<< >>` templating: types, blocks, strict undefined, sandbox, shell quoting,
static checks and contexts."""

from __future__ import annotations

from typing import Any

import pytest

from engine.compiler.templating import (
    build_context,
    check_syntax,
    has_template,
    is_truthy,
    referenced_steps,
    render_shell,
    render_text,
    render_value,
    uses_raw,
)
from engine.errors import RenderError


@pytest.fixture
def ctx() -> dict[str, Any]:
    return build_context(
        input={"name": "ada", "count": 3, "flag": False, "tags": ["a", "b"],
               "conf": {"k": 1}, "nothing": None, "text": "it's \"quoted\" $(x)"},
        secret={"token": "s3cr3t"},
        steps={
            "build-it": {"output": {"path": "/tmp/x", "n": 2}, "status": "completed",
                         "error": None},
            "lint": {"output": None, "status": "failed", "error": "exit 1"},
        },
        job={"id": "job-1", "task": "deploy", "workspace": "default", "revision": "r1"},
    )


# --- types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("<< input.count >>", 3),
        ("  << input.count >>\n", 3),
        ("<< input.flag >>", False),
        ("<< input.tags >>", ["a", "b"]),
        ("<< input.conf >>", {"k": 1}),
        ("<< input.nothing >>", None),
        ("<< input.count + 1 >>", 4),
        ("<< [input.count, input.name] >>", [3, "ada"]),
        ("<< input.tags | map('upper') >>", ["A", "B"]),
        ("<< input.conf.items() >>", [["k", 1]]),
        ("<< input.name >>", "ada"),
        ("<< '>>' >>", ">>"),
    ],
)
def test_a_lone_expression_keeps_its_type(
    ctx: dict[str, Any], template: str, expected: Any
) -> None:
    result = render_value(template, ctx)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("n=<< input.count >>", "n=3"),
        ("<< input.count >><< input.count >>", "33"),
        ("<< input.tags >>!", '["a", "b"]!'),
        ("cfg: << input.conf >>", 'cfg: {"k": 1}'),
        ("<< input.flag >> / << true >>", "false / true"),
        ("[<< input.nothing >>]", "[]"),
        ("héllo << input.name >> ✓", "héllo ada ✓"),
    ],
)
def test_anything_else_renders_to_text(ctx: dict[str, Any], template: str, expected: str) -> None:
    assert render_value(template, ctx) == expected


def test_render_text_always_gives_a_string(ctx: dict[str, Any]) -> None:
    assert render_text("<< input.count >>", ctx) == "3"
    assert render_text("<< input.tags >>", ctx) == '["a", "b"]'


def test_render_value_walks_nested_values_and_passes_non_strings(ctx: dict[str, Any]) -> None:
    value = {"a": ["<< input.count >>", 7, None, True], "b": {"c": "x-<< input.name >>"},
             "t": ("<< input.flag >>",), "plain": "no template"}
    assert render_value(value, ctx) == {
        "a": [3, 7, None, True], "b": {"c": "x-ada"}, "t": (False,), "plain": "no template",
    }


def test_blocks_and_comments(ctx: dict[str, Any]) -> None:
    template = (
        "<% if input.count > 2 %>many<% else %>few<% endif %>"
        "<# a comment with << nothing.defined >> inside #>"
        "<% for t in input.tags %>-<< t >><% endfor %>"
    )
    assert render_value(template, ctx) == "many-a-b"


def test_heredocs_and_shifts_are_plain_text(ctx: dict[str, Any]) -> None:
    script = "cat <<EOF\nhi << input.name >>\nEOF\ncat <<< x\necho $((1 << 4))\n"
    assert render_shell(script, ctx) == "cat <<EOF\nhi ada\nEOF\ncat <<< x\necho $((1 << 4))\n"
    assert not has_template("cat <<-'EOF'\nplain\nEOF")


# --- context -------------------------------------------------------------------------


def test_steps_by_name_by_item_and_by_shorthand(ctx: dict[str, Any]) -> None:
    assert render_value("<< steps['build-it'].output.path >>", ctx) == "/tmp/x"
    assert render_value('<< steps["build-it"].status >>', ctx) == "completed"
    assert render_value("<< build_it.output.n >>", ctx) == 2
    assert render_value("<< steps.lint.error >>", ctx) == "exit 1"
    assert render_value("<< lint.status >>", ctx) == "failed"


def test_secret_and_job_are_in_the_context(ctx: dict[str, Any]) -> None:
    assert render_value("<< secret.token >>", ctx) == "s3cr3t"
    assert render_value("<< job.id >>/<< job.task >>/<< job.workspace >>", ctx) == (
        "job-1/deploy/default"
    )


def test_each_hook_state_and_env() -> None:
    context = build_context(
        input={}, each={"item": {"host": "h1"}, "index": 2, "total": 5},
        hook={"event": "on_error"}, state={"last": 9}, env={"HOME": "/home/x"},
    )
    assert render_value("<< each.item.host >>:<< each.index >>/<< each.total >>", context) == (
        "h1:2/5"
    )
    assert render_value("<< hook.event >>", context) == "on_error"
    assert render_value("<< state.last >>", context) == 9
    assert render_value("<< env.HOME >>", context) == "/home/x"


def test_each_is_undefined_outside_a_loop(ctx: dict[str, Any]) -> None:
    with pytest.raises(RenderError) as info:
        render_value("<< each.item >>", ctx)
    assert info.value.name == "each"
    assert "'each' is undefined" in str(info.value)


def test_shorthand_never_shadows_reserved_names_and_exact_names_win() -> None:
    view_a = {"output": "hyphen", "status": "completed", "error": None}
    view_b = {"output": "underscore", "status": "completed", "error": None}
    for steps in ({"a-b": view_a, "a_b": view_b}, {"a_b": view_b, "a-b": view_a}):
        context = build_context(input={"x": 1}, steps=steps)
        assert render_value("<< a_b.output >>", context) == "underscore"
    context = build_context(input={"x": 1}, steps={"input": view_a, "st-eps": view_b})
    assert render_value("<< input.x >>", context) == 1
    assert render_value("<< steps.input.output >>", context) == "hyphen"
    assert render_value("<< st_eps.output >>", context) == "underscore"


def test_rendering_never_changes_the_context() -> None:
    context = build_context(input={"x": 1})
    before = {key: dict(value) for key, value in context.items() if isinstance(value, dict)}
    assert render_value("<% set input = 5 %><% set y = 2 %><< input >><< y >>", context) == "52"
    assert render_value("<< input.x >>", context) == 1
    assert {k: dict(v) for k, v in context.items() if isinstance(v, dict)} == before
    assert "y" not in context


# --- errors --------------------------------------------------------------------------


def test_a_missing_attribute_is_named_with_its_path(ctx: dict[str, Any]) -> None:
    with pytest.raises(RenderError) as info:
        render_value({"x": "hello << input.nme >>"}, ctx, where="task t, step s, input")
    err = info.value
    assert err.name == "input.nme"
    assert err.where == "task t, step s, input.x"
    assert "'input.nme' is undefined" in str(err)
    assert "name" in str(err)  # the keys input does have
    assert str(err).startswith("task t, step s, input.x: ")


def test_a_missing_top_level_name_is_named(ctx: dict[str, Any]) -> None:
    with pytest.raises(RenderError) as info:
        render_value("<< nope >>", ctx)
    assert info.value.name == "nope"
    assert "'nope' is undefined" in str(info.value)


def test_a_missing_step_is_named(ctx: dict[str, Any]) -> None:
    with pytest.raises(RenderError) as info:
        render_value("<< steps['no-such'].output >>", ctx)
    assert info.value.name == "steps['no-such']"
    assert "build-it" in str(info.value)


def test_the_failing_access_is_found_among_similar_ones() -> None:
    context = build_context(input={"a": {"x": 1}, "b": {}})
    with pytest.raises(RenderError) as info:
        render_value("<< input.a.x >> << input.b.x >>", context)
    assert info.value.name == "input.b.x"


def test_the_template_line_is_reported(ctx: dict[str, Any]) -> None:
    with pytest.raises(RenderError) as info:
        render_shell("echo one\necho two\necho << input.missing >>\n", ctx)
    assert "template line 3" in str(info.value)
    with pytest.raises(RenderError) as info:
        render_value("\n\n  << input.missing >>", ctx)
    assert "template line 3" in str(info.value)


def test_strict_undefined_in_blocks_and_structures(ctx: dict[str, Any]) -> None:
    with pytest.raises(RenderError, match=r"input\.nope"):
        render_value("<% if input.nope %>x<% endif %>", ctx)
    with pytest.raises(RenderError, match=r"input\.nope"):
        render_value("<< [1, input.nope] >>", ctx)


@pytest.mark.parametrize(
    "template",
    [
        "<< ''.__class__ >>",
        "<< ''.__class__.__mro__[1].__subclasses__() >>",
        "x << input.__class__ >>",
        "<< cycler.__init__.__globals__ >>",
        "<< 'a' * 100000000 >>",
        "<< 10 ** 100000000 >>",
        "<< range(10**9) | list >>",
        "<< '{0.__class__}'.format(input) >>",
        "<< lipsum.__globals__ >>",
    ],
)
def test_the_sandbox_refuses(ctx: dict[str, Any], template: str) -> None:
    with pytest.raises(RenderError) as info:
        render_value(template, ctx)
    assert info.value.name is None or "__" not in info.value.name


def test_runtime_errors_become_render_errors(ctx: dict[str, Any]) -> None:
    with pytest.raises(RenderError, match="ZeroDivisionError"):
        render_value("<< 1 / 0 >>", ctx)
    with pytest.raises(RenderError, match="syntax error"):
        render_value("<< input.name | >>", ctx)
    with pytest.raises(RenderError, match=r"No filter named 'nosuchfilter'"):
        render_value("<< input.name | nosuchfilter >>", ctx)


# --- shell ---------------------------------------------------------------------------


def test_shell_values_are_quoted(ctx: dict[str, Any]) -> None:
    assert render_shell("echo << input.name >>", ctx) == "echo ada"
    assert render_shell("echo << input.text >>", ctx) == (
        "echo 'it'\"'\"'s \"quoted\" $(x)'"
    )
    assert render_shell("echo << input.tags >>", ctx) == "echo '[\"a\", \"b\"]'"
    assert render_shell("echo << input.flag >> << input.nothing >>", ctx) == "echo false ''"


def test_raw_opts_out_of_quoting(ctx: dict[str, Any]) -> None:
    context = build_context(input={"cmd": "ls -l | wc -l"})
    assert render_shell("<< input.cmd | raw >>", context) == "ls -l | wc -l"
    assert render_shell("<< input.cmd >>", context) == "'ls -l | wc -l'"
    assert render_text("<< input.cmd | raw >>", context) == "ls -l | wc -l"
    assert render_value("<< input.cmd | raw >>", context) == "ls -l | wc -l"
    # Concatenating a raw value makes plain text again, which is quoted.
    assert render_shell("<< input.cmd | raw ~ '!' >>", context) == "'ls -l | wc -l!'"


def test_a_nul_byte_cannot_reach_a_shell() -> None:
    context = build_context(input={"v": "a\x00b"})
    with pytest.raises(RenderError, match="NUL"):
        render_shell("echo << input.v >>", context, where="step s, script")
    with pytest.raises(RenderError, match="NUL"):
        render_shell("echo << input.v | raw >>", context)
    assert render_text("<< input.v >>", context) == "a\x00b"


def test_uses_raw() -> None:
    assert uses_raw("echo << input.x | raw >>")
    assert uses_raw("<% if a %><< b|raw >><% endif %>")
    assert not uses_raw("echo << input.raw >>")
    assert not uses_raw("echo raw")


# --- static checks -------------------------------------------------------------------


def test_has_template() -> None:
    assert has_template("<< x >>")
    assert has_template({"a": [1, {"b": "<% if x %>y<% endif %>"}]})
    assert has_template("a <# c #>")
    assert not has_template({"a": [1, "plain", None]})
    assert not has_template("x << 2")


def test_check_syntax_finds_errors_with_their_lines() -> None:
    value = {"ok": "<< input.a >>", "bad": ["fine", "line one\nline two << input. >>"],
             "block": "<% if x %>never closed"}
    issues = check_syntax(value, where="tasks.t.flow.s.input")
    by_path = {issue.path: issue for issue in issues}
    assert set(by_path) == {"tasks.t.flow.s.input.bad[1]", "tasks.t.flow.s.input.block"}
    assert by_path["tasks.t.flow.s.input.bad[1]"].line == 2
    assert "template line 2" in by_path["tasks.t.flow.s.input.bad[1]"].message
    assert by_path["tasks.t.flow.s.input.block"].line == 1
    assert all(issue.severity == "error" for issue in issues)


def test_check_syntax_names_where_for_a_plain_string() -> None:
    issues = check_syntax("<< a b >>", where="tasks.t.flow.s.when")
    assert [issue.path for issue in issues] == ["tasks.t.flow.s.when"]
    assert check_syntax({"a": "<< a.b >>", "n": 3}, where="x") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<< steps.build.output >>", {"build"}),
        ("<< steps['a-b'].status >> << steps[\"c-d\"].output.x >>", {"a-b", "c-d"}),
        ("<< build_it.output >> << lint.status >> << fmt.error >>", {"build_it", "lint", "fmt"}),
        ("<< input.output >> << secret.status >> << each.item.output >>", set()),
        ("<< job.id >> << state.error >> << env.output >> << hook.status >>", set()),
        ("<% for r in input.rows %><< r.output >><% endfor %>", set()),
        ("<% set x = steps.a %><< x.output >>", {"a"}),
        ("<< foo.bar >> << foo['output'] >>", {"foo"}),
        ("<% for x in steps.loop.output %><< loop.index >><% endfor %>", {"loop"}),
        ({"a": ["<< steps.one.output >>"], "b": {"c": "<< two.output >>"}}, {"one", "two"}),
        ("<< steps.x.output", set()),  # a syntax error: check_syntax reports it
        ("plain", set()),
    ],
)
def test_referenced_steps(value: Any, expected: set[str]) -> None:
    assert referenced_steps(value) == expected


# --- truthiness ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [False, None, 0, 0.0, "", " ", "false", "FALSE", " no ", "0", "null", "None",
              [], {}, ()],
)
def test_falsy(value: Any) -> None:
    assert is_truthy(value) is False


@pytest.mark.parametrize("value", [True, 1, -1, 0.5, "yes", "true", "x", "00", [0], {"a": 0}])
def test_truthy(value: Any) -> None:
    assert is_truthy(value) is True


# --- speed ---------------------------------------------------------------------------


class _Watched(dict[str, Any]):
    """A context that counts the walks over all its names (what a copy of it does)."""

    walks = 0

    def __iter__(self) -> Any:
        _Watched.walks += 1
        return super().__iter__()

    def keys(self) -> Any:
        _Watched.walks += 1
        return super().keys()

    def items(self) -> Any:
        _Watched.walks += 1
        return super().items()


def test_many_small_templates_never_copy_a_large_context() -> None:
    """A plan of 1,000 steps gives a context of ~2,000 names: a template that copied it
    to render would make rendering every step's input quadratic in the plan's size."""
    steps = {f"step-{i}": {"output": {"n": i}, "status": "completed", "error": None}
             for i in range(1000)}
    context = _Watched(build_context(input={"x": 1}, steps=steps))
    _Watched.walks = 0
    for i in range(1000):
        value = {"a": f"<< steps['step-{i}'].output.n >>", "b": "n=<< input.x >>",
                 "c": f"<< step_{i}.output.n + 1 >>", "d": f"n=<< step_{i}.status >>!"}
        assert render_value(value, context) == {"a": i, "b": "n=1", "c": i + 1,
                                                "d": "n=completed!"}
    assert _Watched.walks == 0
