"""Tests of engine.compiler.validate: every check, located at file:line:column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.compiler.validate import load_workspace, report, validate_path
from engine.errors import Issue, WorkspaceInvalid

FIXTURES = Path(__file__).parent.parent / "fixtures" / "workspaces"
EXAMPLES = Path(__file__).parent.parent.parent / "workspaces"


def workspace(tmp_path: Path, **files: str) -> Path:
    """A workspace folder with `.workflows/<name>.yaml` files (dedented)."""
    for name, text in files.items():
        path = tmp_path / ".workflows" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return tmp_path


def issues_of(path: Path) -> list[Issue]:
    _, issues = validate_path(path)
    return issues


def where(issue: Issue) -> tuple[str | None, int | None, int | None, str]:
    return (issue.file, issue.line, issue.column, issue.path)


def only(issues: list[Issue]) -> Issue:
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


def test_valid_fixture_loads() -> None:
    ws = load_workspace(FIXTURES / "valid", name="fixture")
    assert ws.name == "fixture"
    assert set(ws.spec.tasks) == {"release", "cleanup"}
    assert ws.warnings == ()
    assert ws.where("tasks", "release") == (".workflows/tasks.yaml", 2)
    assert ws.where("triggers", "nightly") == (".workflows/nested/triggers.yml", 2)
    assert ws.locate("tasks", "release", "flow", "compile", "input", "version") == (
        ".workflows/tasks.yaml", 17, 27,
    )


@pytest.mark.parametrize("name", ["default", "data-pipeline", "ops"])
def test_example_workspaces_validate(name: str) -> None:
    workspace, issues = validate_path(EXAMPLES / name)
    assert [str(i) for i in issues if i.severity == "error"] == []
    assert workspace is not None


def test_all_errors_at_once() -> None:
    with pytest.raises(WorkspaceInvalid) as raised:
        load_workspace(FIXTURES / "five-errors")
    got = [(*where(i)[1:], i.message, i.hint) for i in raised.value.issues]
    assert sorted(got) == [
        (6, 21, "actions.hello.input.name.type", "unknown input type 'strin'",
         "did you mean 'string'?"),
        (11, 17, "tasks.build.flow.compile.action", "unknown action 'helo'",
         "did you mean 'hello'?"),
        (13, 9, "tasks.build.flow.test.dependson", "unknown key 'dependson'",
         "did you mean 'depends_on'?"),
        (20, 17, "tasks.deploy.flow.ship.input.name", "unknown step 'nope'", None),
        (24, 11, "triggers.nightly.cron",
         "invalid cron expression '0 0 32 * *': [0 0 32 * *] is not acceptable, out of range",
         None),
    ]
    assert {i.file for i in raised.value.issues} == {".workflows/main.yaml"}


def test_duplicates_name_both_files() -> None:
    issue = only(issues_of(FIXTURES / "duplicates"))
    assert where(issue) == (".workflows/two.yaml", 6, 3, "tasks.build")
    assert issue.message == "duplicate task 'build': also defined in .workflows/one.yaml:2"


def test_cycles_are_named() -> None:
    issues = issues_of(FIXTURES / "cycle")
    assert [(where(i), i.message) for i in issues] == [
        ((".workflows/cycle.yaml", 7, 29, "tasks.loop.flow.a.depends_on[1]"),
         "dependency cycle: a → b → a"),
        ((".workflows/cycle.yaml", 13, 22, "tasks.loop.flow.self.depends_on[0]"),
         "dependency cycle: self → self"),
    ]


def test_parse_error_is_reported_with_the_other_files(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="tasks:\n  x: [\n", b="""
        tasks:
          y:
            flow:
              s: { action: missing }
    """)
    issues = issues_of(path)
    assert [(i.file, i.line) for i in issues] == [
        (".workflows/a.yaml", 3),
        (".workflows/b.yaml", 4),
    ]
    assert issues[0].message.startswith("invalid YAML")
    assert issues[1].message == "unknown action 'missing'"


def test_unknown_top_level_key(tmp_path: Path) -> None:
    issue = only(issues_of(workspace(tmp_path, a="task:\n  x: {}\n")))
    assert where(issue) == (".workflows/a.yaml", 1, 1, "task")
    assert issue.message == "unknown top-level key 'task'"
    assert issue.hint == "did you mean 'tasks'?"


def test_pydantic_errors_map_onto_yaml(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="""
        tasks:
          no-flow:
            description: nothing to do
          bad-retry:
            flow:
              s:
                cmd: echo hi
                retry: { max_attempts: 0 }
                timeout: soon
          bad-inline:
            flow:
              s:
                action:
                  type: shell
                  interpreter: sh
    """)
    got = [(i.line, i.column, i.path, i.message) for i in issues_of(path)]
    assert got == [
        (2, 3, "tasks.no-flow", "missing required field 'flow'"),
        (8, 32, "tasks.bad-retry.flow.s.retry.max_attempts",
         "Input should be greater than or equal to 1"),
        (9, 18, "tasks.bad-retry.flow.s.timeout",
         "invalid duration 'soon': use seconds or a string like '30s', '5m', '2h'"),
        (13, 9, "tasks.bad-inline.flow.s.action", "a shell action needs 'script' or 'cmd'"),
    ]


def test_step_unknown_key_suggests_action_fields_too(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="""
        tasks:
          t:
            flow:
              s:
                cmd: echo hi
                scirpt: echo
    """)
    issue = only(issues_of(path))
    assert (issue.line, issue.column, issue.path) == (6, 9, "tasks.t.flow.s.scirpt")
    assert issue.hint == "did you mean 'script'?"


def test_depends_on_unknown_step(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="""
        tasks:
          t:
            flow:
              build: { cmd: make }
              test:
                depends_on: [build, biuld2]
                cmd: make test
    """)
    issue = only(issues_of(path))
    assert where(issue) == (".workflows/a.yaml", 6, 29, "tasks.t.flow.test.depends_on[1]")
    assert issue.message == "depends on unknown step 'biuld2'"
    assert issue.hint == "did you mean 'build'?"


def test_template_syntax_errors_everywhere(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="""
        actions:
          a:
            type: http
            url: "https://x/<< input.id >"
            headers: { X-Id: "<< input.id | >>" }
        tasks:
          t:
            input: { id: {} }
            flow:
              s:
                action: a
                when: "<% if %>"
                input: { id: "<< ( >>" }
        triggers:
          tr:
            type: webhook
            task: t
            input: { id: "<< ] >>" }
        on_success:
          - action: a
            input: { id: "<<  >>" }
    """)
    got = [(i.line, i.path) for i in issues_of(path)]
    assert got == [
        (5, "actions.a.headers.X-Id"),
        (12, "tasks.t.flow.s.when"),
        (13, "tasks.t.flow.s.input.id"),
        (18, "triggers.tr.input.id"),
        (21, "on_success[0].input.id"),
    ]
    assert all(i.message.startswith("template syntax error") for i in issues_of(path))


def test_step_references_must_be_upstream(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="""
        tasks:
          t:
            flow:
              fetch-data: { cmd: echo }
              parse:
                depends_on: [fetch-data]
                cmd: echo << fetch_data.output >>
              report:
                depends_on: [parse]
                cmd: echo
                input:
                  a: "<< steps['fetch-data'].output >>"
                  b: "<< steps.other.output >>"
              other:
                input: { x: "<< parse.status >>" }
                cmd: echo
    """)
    got = [(i.line, i.column, i.path, i.message, i.hint) for i in issues_of(path)]
    assert got == [
        (13, 14, "tasks.t.flow.report.input.b",
         "step 'report' uses step 'other' but does not depend on it",
         "add 'other' to depends_on"),
        (15, 21, "tasks.t.flow.other.input.x",
         "step 'other' uses step 'parse' but does not depend on it",
         "add 'parse' to depends_on"),
    ]


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("*/5 * * * *", None),
        ("0 0 2 * * *", None),
        ("*/10 * * * * *", None),
        ("0 2 * *", "expected 5 fields (or 6 with seconds first), got 4"),
        ("0 0 0 2 * * 2024", "expected 5 fields (or 6 with seconds first), got 7"),
        ("61 0 2 * * *", "is not acceptable"),
        ("0 25 * * *", "is not acceptable"),
    ],
)
def test_cron(tmp_path: Path, cron: str, problem: str | None) -> None:
    path = workspace(tmp_path, a=f"""
        tasks:
          t: {{ flow: {{ s: {{ cmd: echo }} }} }}
        triggers:
          tr:
            type: scheduler
            task: t
            cron: "{cron}"
    """)
    issues = issues_of(path)
    if problem is None:
        assert issues == []
    else:
        issue = only(issues)
        assert (issue.line, issue.column, issue.path) == (7, 11, "triggers.tr.cron")
        assert problem in issue.message


def test_trigger_and_hook_references(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="""
        actions:
          notify: { type: http, url: "https://x" }
          sub: { type: task, task: relase }
        tasks:
          release:
            flow: { s: { cmd: echo } }
            on_error:
              - action: notfy
        triggers:
          nightly:
            type: scheduler
            cron: "0 2 * * *"
            timezone: Mars/Olympus
            task: releese
          after:
            type: event
            task: release
            on: { task: nope }
        on_success:
          - task: nope
    """)
    got = [(i.line, i.column, i.path, i.message, i.hint) for i in issues_of(path)]
    assert got == [
        (3, 28, "actions.sub.task", "unknown task 'relase'", "did you mean 'release'?"),
        (8, 17, "tasks.release.on_error[0].action", "unknown action 'notfy'",
         "did you mean 'notify'?"),
        (13, 15, "triggers.nightly.timezone", "unknown timezone 'Mars/Olympus'",
         "use an IANA name such as 'Europe/Oslo' or 'UTC'"),
        (14, 11, "triggers.nightly.task", "unknown task 'releese'", "did you mean 'release'?"),
        (18, 17, "triggers.after.on.task", "unknown task 'nope'", None),
        (20, 11, "on_success[0].task", "unknown task 'nope'", None),
    ]


def test_webhook_names_and_trigger_inputs(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="""
        tasks:
          t:
            input: { version: { type: string } }
            flow: { s: { cmd: echo } }
        triggers:
          deploy: { type: webhook, task: t }
          other: { type: webhook, task: t, name: deploy }
          nightly:
            type: scheduler
            cron: "0 2 * * *"
            task: t
            input: { verison: "1.0" }
    """)
    got = [(i.line, i.column, i.path, i.message, i.hint) for i in issues_of(path)]
    assert got == [
        (7, 42, "triggers.other.name", "webhook name 'deploy' is also used by trigger 'deploy'",
         None),
        (12, 14, "triggers.nightly.input.verison", "task 't' has no input 'verison'",
         "did you mean 'version'?"),
    ]


def test_input_types_and_connections(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="""
        connection_types:
          postgres:
            host: { type: string, required: true }
            port: { type: integer, default: 5432 }
        connections:
          db1: { type: postgres, port: 1 }
          db2: { type: postgress, host: x }
          db3: { type: postgres, host: x, hots: y }
        tasks:
          t:
            input:
              db: { type: postgres }
              n: { type: int }
            flow: { s: { cmd: echo } }
    """)
    got = [(i.line, i.column, i.path, i.message, i.hint) for i in issues_of(path)]
    assert got == [
        (6, 3, "connections.db1",
         "missing property 'host' required by connection type 'postgres'", None),
        (7, 16, "connections.db2.type", "unknown connection type 'postgress'",
         "did you mean 'postgres'?"),
        (8, 35, "connections.db3.hots", "unknown property 'hots' of connection type 'postgres'",
         "did you mean 'host'?"),
        (13, 18, "tasks.t.input.n.type", "unknown input type 'int'", "did you mean 'integer'?"),
    ]


def test_raw_in_shell_is_a_warning(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="""
        actions:
          a:
            script: |
              echo << input.x | raw >>
        tasks:
          t:
            flow:
              s: { action: a }
              u: { cmd: "ls << input.dir | raw >>" }
    """)
    ws, issues = validate_path(path)
    assert ws is not None
    assert [(i.severity, i.line, i.path, i.message) for i in issues] == [
        ("warning", 3, "actions.a.script", "value is not shell-quoted"),
        ("warning", 9, "tasks.t.flow.u.cmd", "value is not shell-quoted"),
    ]
    assert ws.warnings == tuple(issues)


def test_invalid_task_does_not_hide_other_errors(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="""
        tasks:
          broken:
            timeout: never
            flow:
              ok: { action: missing-one }
          fine:
            flow:
              s: { action: missing-two }
        triggers:
          tr: { type: webhook, task: broken }
    """)
    got = [(i.line, i.message) for i in issues_of(path)]
    assert got == [
        (3, "invalid duration 'never': use seconds or a string like '30s', '5m', '2h'"),
        (5, "unknown action 'missing-one'"),
        (8, "unknown action 'missing-two'"),
    ]


def test_secrets_may_use_env(tmp_path: Path) -> None:
    path = workspace(tmp_path, a="""
        secrets:
          TOKEN: "<< env.TOKEN >>"
          BAD: "<< env. >>"
    """)
    issue = only(issues_of(path))
    assert (issue.line, issue.path) == (3, "secrets.BAD")


def test_report_text_and_exit_codes(tmp_path: Path) -> None:
    text, code = report(FIXTURES / "five-errors")
    assert code == 1
    lines = text.splitlines()
    assert lines[0] == (".workflows/main.yaml:6:21: error: actions.hello.input.name.type: "
                        "unknown input type 'strin' (did you mean 'string'?)")
    assert lines[-1] == "5 errors, 0 warnings"
    text, code = report(FIXTURES / "valid")
    assert code == 0
    assert text.startswith(f"{FIXTURES / 'valid'}: ok (2 tasks, 2 actions, 3 triggers")
