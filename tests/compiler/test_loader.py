"""Tests of engine.compiler.loader: positions, parse errors, limits, revisions."""

from __future__ import annotations

from pathlib import Path

from engine.compiler import loader
from engine.compiler.loader import load_files, load_folder, parse_document

FIXTURES = Path(__file__).parent.parent / "fixtures" / "workspaces"


def test_positions_of_keys_and_values_are_one_based() -> None:
    text = b"tasks:\n  build:\n    flow:\n      test:\n        depends_on: [a, b]\n"
    document, issues = parse_document(".workflows/x.yaml", text)
    assert issues == []
    assert document is not None
    assert document.keys[("tasks", "build")] == (2, 3)
    assert document.keys[("tasks", "build", "flow", "test", "depends_on")] == (5, 9)
    assert document.values[("tasks", "build", "flow", "test", "depends_on", 1)] == (5, 25)
    assert document.locate(("tasks", "build", "flow", "test", "depends_on", 1)) == (5, 25)
    # A path that does not exist falls back to its nearest ancestor's key.
    assert document.locate(("tasks", "build", "flow", "nope", "x")) == (3, 5)


def test_parse_error_carries_file_line_and_column() -> None:
    document, issues = parse_document(".workflows/bad.yaml", b"tasks:\n  a: [1, 2\n  b: 3\n")
    assert document is None
    assert len(issues) == 1
    issue = issues[0]
    assert issue.file == ".workflows/bad.yaml"
    assert (issue.line, issue.column) == (3, 4)
    assert issue.message.startswith("invalid YAML:")


def test_duplicate_key_in_one_file_is_an_error() -> None:
    document, issues = parse_document("f.yaml", b"tasks:\n  a: 1\n  a: 2\n")
    assert document is None
    assert [(i.line, i.column, i.message) for i in issues] == [
        (3, 3, "duplicate key 'a' (first at line 2)")
    ]


def test_only_true_and_false_are_booleans() -> None:
    document, _ = parse_document("f.yaml", b"on: yes\nflags: [no, off, true, False]\n")
    assert document is not None
    assert document.data == {"on": "yes", "flags": ["no", "off", True, False]}


def test_alias_bomb_is_refused() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        refs = ", ".join([f"*{chr(96 + i)}"] * 10)
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [{refs}]")
    document, issues = parse_document("bomb.yaml", "\n".join(lines).encode())
    assert document is None
    assert "too many YAML nodes" in issues[0].message


def test_file_size_limit(tmp_path: Path) -> None:
    (tmp_path / ".workflows").mkdir()
    big = b"# " + b"x" * loader.MAX_FILE_BYTES + b"\n"
    (tmp_path / ".workflows" / "big.yaml").write_bytes(big)
    result = load_folder(tmp_path)
    assert result.documents == ()
    assert [i.file for i in result.issues] == [".workflows/big.yaml"]
    assert "too large" in result.issues[0].message
    # The same limit holds for in-memory file sets.
    assert "too large" in load_files({".workflows/big.yaml": big}).issues[0].message


def test_missing_workflows_folder(tmp_path: Path) -> None:
    result = load_folder(tmp_path)
    assert result.documents == ()
    assert "no .workflows/ folder" in result.issues[0].message


def test_folder_reads_nested_yaml_and_yml_only() -> None:
    result = load_folder(FIXTURES / "valid")
    assert result.issues == ()
    assert [d.file for d in result.documents] == [
        ".workflows/actions.yaml",
        ".workflows/connections.yaml",
        ".workflows/nested/triggers.yml",
        ".workflows/tasks.yaml",
    ]


def test_revision_is_a_content_hash(tmp_path: Path) -> None:
    files = {
        ".workflows/a.yaml": b"tasks: {}\n",
        ".workflows/b.yml": b"actions: {}\n",
        "README.md": b"ignored",
    }
    first = load_files(files).revision
    assert len(first) == 16
    assert load_files(dict(reversed(files.items()))).revision == first
    assert load_files({**files, "other.txt": b"x"}).revision == first
    assert load_files({**files, ".workflows/a.yaml": b"tasks: {} \n"}).revision != first
    # A folder with the same files has the same revision as the in-memory set.
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    assert load_folder(tmp_path).revision == first


def test_empty_file_is_an_empty_document() -> None:
    result = load_files({".workflows/empty.yaml": b"# nothing yet\n"})
    assert result.issues == ()
    assert result.documents[0].data is None
