"""Debug reports of failed jobs: a deterministic, rule-based reading of the evidence.

`build_report` takes a job, its steps and the job's artifacts folder (what a browser step
left under `failure/`: `error.json`, `dom.html`, `network.jsonl`, `console.log`, plus
`trace.zip`) and returns the fields of the cloud API's debug report: `tldr`, `error`,
`handoff_prompt`, `screenshot_url`, `dom_snapshot_url`, `recording_url`, the `job_*`
fields, and an `analysis` with the rule that matched. The rules, in order: the step's
own timeout, navigation errors, HTTP errors, a selector that timed out — a missing element
(with its nearest candidates in the DOM) or one present but not actionable —, a failed
text expectation, an error in a script, anything else. The same inputs always give the
same report.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from engine.core.projections import JobRow, StepRow

FAILURE = "failure"
MAX_CANDIDATES = 5
MIN_SCORE = 0.45
_TEXT_LIMIT = 80
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "source", "track", "wbr"})
_SKIP = frozenset({"script", "style", "head", "title", "meta", "link", "html", "body",
                   "noscript", "template", "tbody", "thead", "tr"})
_NOISE_URLS = ("favicon.ico",)


# --- the DOM, as far as the rules need it --------------------------------------------


@dataclass(slots=True)
class Element:
    """An element of the DOM snapshot: tag, attributes and (the start of) its text."""

    tag: str
    attrs: dict[str, str]
    position: int
    text: str = ""

    @property
    def id(self) -> str:
        return self.attrs.get("id", "")

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()

    def suggested_selector(self) -> str:
        """A selector that picks this element, preferring stable attributes."""
        if self.id and re.fullmatch(r"[A-Za-z_][\w-]*", self.id):
            return f"#{self.id}"
        for attr in ("data-testid", "name", "aria-label", "placeholder"):
            if self.attrs.get(attr):
                return f'{self.tag}[{attr}="{self.attrs[attr]}"]'
        if self.classes:
            return self.tag + "".join(f".{c}" for c in self.classes[:3])
        if self.text:
            return f'{self.tag}:has-text("{self.text[:40]}")'
        return self.tag


class _DomParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, len(self.elements))
        self.elements.append(element)
        if tag not in _VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                return

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if not text:
            return
        for element in self._open[-3:]:
            if len(element.text) < _TEXT_LIMIT:
                element.text = (element.text + " " + text).strip()[:_TEXT_LIMIT]


def parse_dom(html: str) -> list[Element]:
    """The elements of an HTML document, in document order."""
    parser = _DomParser()
    parser.feed(html)
    parser.close()
    return parser.elements


# --- selectors ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SelectorParts:
    """What the last compound of a selector asks for; `simple` if we can evaluate it."""

    tag: str | None = None
    ids: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    attrs: tuple[tuple[str, str | None], ...] = ()
    text: str | None = None
    simple: bool = True


_COMPOUND = re.compile(
    r"^(?P<tag>[a-zA-Z][\w-]*|\*)?(?P<rest>(?:#[\w-]+|\.[\w-]+|\[[^\]]+\])*)$")
_ATTR = re.compile(r"""^\[\s*([\w-]+)\s*(?:[~|^$*]?=\s*["']?([^"'\]]*)["']?)?\s*\]$""")
_TEXT = re.compile(r"""(?:^text=|:has-text\(|:text\()\s*["']?([^"')]+)""")


def parse_selector(selector: str) -> SelectorParts:
    """The parts of the last compound of a CSS (or simple Playwright text) selector."""
    text_match = _TEXT.search(selector)
    if text_match:
        return SelectorParts(text=text_match.group(1).strip(), simple=False)
    last = re.split(r"\s*[>+~]\s*|\s+", selector.strip().split(">>")[-1].strip())[-1]
    match = _COMPOUND.match(last)
    if not match or ":" in last:
        words = tuple(w for w in re.findall(r"[\w-]+", last) if len(w) > 1)
        return SelectorParts(ids=words, simple=False)
    rest = match.group("rest")
    ids = tuple(re.findall(r"#([\w-]+)", rest))
    classes = tuple(re.findall(r"\.([\w-]+)", rest))
    attrs: list[tuple[str, str | None]] = []
    for raw in re.findall(r"\[[^\]]+\]", rest):
        found = _ATTR.match(raw)
        if found:
            attrs.append((found.group(1), found.group(2)))
    tag = match.group("tag")
    return SelectorParts(tag=None if tag in (None, "*") else tag.lower(), ids=ids,
                         classes=classes, attrs=tuple(attrs),
                         simple=" " not in selector.strip() and ">" not in selector)


def matches(element: Element, parts: SelectorParts) -> bool:
    """Whether `element` satisfies the compound `parts` (ancestors are not checked)."""
    if parts.text is not None:
        return parts.text.lower() in element.text.lower()
    if parts.tag and element.tag != parts.tag:
        return False
    if any(element.id != i for i in parts.ids):
        return False
    if any(c not in element.classes for c in parts.classes):
        return False
    for name, value in parts.attrs:
        if name not in element.attrs or (value is not None and element.attrs[name] != value):
            return False
    return bool(parts.tag or parts.ids or parts.classes or parts.attrs)


def _ratio(a: str, b: str) -> float:
    if not a or not b:
        return 0.0
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def _score(element: Element, parts: SelectorParts) -> float:
    names = [element.id, element.attrs.get("name", ""), element.attrs.get("data-testid", ""),
             element.attrs.get("aria-label", ""), element.attrs.get("placeholder", ""),
             *element.classes]
    best = 0.0
    for token in parts.ids:
        best = max(best, _ratio(token, element.id),
                   0.9 * max((_ratio(token, n) for n in names), default=0.0))
    for token in parts.classes:
        best = max(best, 0.9 * max((_ratio(token, n) for n in names), default=0.0))
    for name, value in parts.attrs:
        if value is not None:
            best = max(best, 0.9 * _ratio(value, element.attrs.get(name, "")),
                       0.8 * max((_ratio(value, n) for n in names), default=0.0))
        elif name in element.attrs:
            best = max(best, 0.6)
    if parts.text is not None:
        best = max(best, _ratio(parts.text, element.text[: max(len(parts.text) * 2, 10)]))
    if parts.tag and element.tag == parts.tag:
        best = best + 0.15 if best else 0.3
    return min(best, 1.0)


def nearest_candidates(selector: str, elements: Sequence[Element],
                       limit: int = MAX_CANDIDATES) -> list[dict[str, Any]]:
    """The elements most like what `selector` asks for, best first (ties: document order)."""
    parts = parse_selector(selector)
    scored = []
    for element in elements:
        if element.tag in _SKIP:
            continue
        score = _score(element, parts)
        if score >= MIN_SCORE:
            scored.append((-round(score, 3), element.position, element))
    scored.sort(key=lambda item: (item[0], item[1]))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for negative, _, element in scored:
        suggestion = element.suggested_selector()
        if suggestion in seen:
            continue
        seen.add(suggestion)
        out.append({"selector": suggestion, "tag": element.tag, "text": element.text[:60],
                    "score": -negative})
        if len(out) == limit:
            break
    return out


# --- the report ---------------------------------------------------------------------


@dataclass(slots=True)
class Evidence:
    """What one failed step left behind (each part may be missing)."""

    step: str
    folder: Path
    error: dict[str, Any] = field(default_factory=dict)
    dom: str | None = None
    network: list[dict[str, Any]] = field(default_factory=list)

    def has(self, name: str) -> bool:
        return (self.folder / name).is_file()


def load_evidence(step_dir: Path, step: str) -> Evidence:
    """Read the failure files a browser step wrote to `step_dir`."""
    evidence = Evidence(step=step, folder=step_dir)
    failure = step_dir / FAILURE
    try:
        data = orjson.loads((failure / "error.json").read_bytes())
        if isinstance(data, dict):
            evidence.error = data
    except (OSError, orjson.JSONDecodeError):
        pass
    try:
        evidence.dom = (failure / "dom.html").read_text(encoding="utf-8", errors="replace")
    except OSError:
        pass
    try:
        for line in (failure / "network.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                evidence.network.append(orjson.loads(line))
    except (OSError, orjson.JSONDecodeError):
        pass
    return evidence


def _failed_step(steps: Sequence[StepRow], name: str | None) -> StepRow | None:
    """The step to report on: `name` if it failed, else the first failed browser step."""
    failed = [s for s in steps if s.status == "failed" and name in (None, s.step_name)]
    failed.sort(key=lambda s: (s.action_type != "browser", s.completed_at or 0.0, s.position))
    return failed[0] if failed else None


def _http_failures(network: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for entry in network:
        status = entry.get("status")
        url = str(entry.get("url", ""))
        if url.endswith(_NOISE_URLS):
            continue
        if isinstance(status, int) and status >= 400:
            out.append(f"{entry.get('method', 'GET')} {url} → {status}")
        elif entry.get("failure"):
            out.append(f"{entry.get('method', 'GET')} {url} → {entry['failure']}")
    return out


def analyse(row: StepRow, evidence: Evidence) -> dict[str, Any]:
    """The rule that explains the failure: `{kind, summary, …}`."""
    error = evidence.error
    kind = error.get("kind")
    message = str(error.get("message") or row.error_message or "")
    first = message.splitlines()[0] if message else "unknown error"
    selector = error.get("selector")
    where = _where(row, error)
    findings = _http_failures(evidence.network)
    result: dict[str, Any] = {"kind": "error", "step": row.step_name,
                              "step_index": error.get("step_index"), "selector": selector,
                              "line": error.get("line"), "url": error.get("url"),
                              "candidates": [], "findings": findings}
    if row.error_kind == "timeout" and not error:
        result.update(kind="step_timeout", summary=(
            f"{where} was stopped by its timeout: {first}. The page may hang, or the step "
            "needs a longer `timeout`."))
    elif kind == "navigation":
        result.update(kind="navigation_error", summary=(
            f"{where} could not load the page: {first}. Check that the site is up and "
            "the URL is right."))
    elif kind == "http":
        result.update(kind="http_error", summary=f"{where} got an HTTP error: {first}.")
    elif kind == "timeout" and selector:
        _selector_rule(result, where, str(selector), evidence)
    elif kind == "timeout":
        result.update(kind="timeout", summary=f"{where} timed out: {first}.")
    elif kind == "assertion":
        result.update(kind="expectation_failed", summary=(
            f"{where}: the expected text was not found in time: {first}."))
    elif kind == "script":
        line = f" at line {error['line']}" if error.get("line") else ""
        result.update(kind="script_error", summary=(
            f"The script of step {row.step_name} raised {error.get('type', 'an error')}"
            f"{line}: {first}."))
    else:
        result["summary"] = f"{where} failed: {first}."
    if findings and result["kind"] not in ("http_error",):
        result["summary"] += f" The page also saw failed requests: {'; '.join(findings[:3])}."
    return result


def _selector_rule(result: dict[str, Any], where: str, selector: str,
                   evidence: Evidence) -> None:
    if evidence.dom is None:
        result.update(kind="selector_timeout", summary=(
            f"{where} timed out waiting for `{selector}` (no DOM snapshot to compare)."))
        return
    elements = parse_dom(evidence.dom)
    parts = parse_selector(selector)
    present = parts.simple and any(matches(e, parts) for e in elements)
    if present:
        result.update(kind="element_not_actionable", summary=(
            f"{where} timed out: `{selector}` is in the page but was not visible, enabled "
            "or stable in time."))
        return
    candidates = nearest_candidates(selector, elements)
    result["candidates"] = candidates
    nearest = ", ".join(f"`{c['selector']}`" for c in candidates[:3])
    hint = f" Nearest candidates: {nearest}." if nearest else " Nothing similar is in the page."
    result.update(kind="missing_element", summary=(
        f"{where} timed out: no element matches `{selector}` on "
        f"{evidence.error.get('url') or 'the page'}.{hint}"))


def _where(row: StepRow, error: Mapping[str, Any]) -> str:
    index = error.get("step_index")
    action = error.get("action")
    if index is not None:
        return f"Step {row.step_name} (browser step {int(index) + 1}, {action})"
    if error.get("phase") == "start_url":
        return f"Step {row.step_name} (opening start_url)"
    return f"Step {row.step_name}"


def artifact_url(base_url: str, job_id: str, step: str, name: str) -> str:
    """The `/api` URL of a step artifact."""
    return (f"{base_url}/api/jobs/{job_id}/artifacts/{quote(name)}?step={quote(step, safe='')}")


def recording_url(base_url: str, job_id: str, step: str, viewer: str = "/trace/") -> str:
    """The trace viewer opening the step's `trace.zip`."""
    trace = artifact_url(base_url, job_id, step, "trace.zip")
    return f"{base_url}{viewer}index.html?trace={quote(trace, safe='')}"


def build_report(job: JobRow, steps: Sequence[StepRow], job_artifacts: Path, *,
                 base_url: str = "", step: str | None = None,
                 recording: Callable[[str, str], str] | None = None) -> dict[str, Any]:
    """The debug report of `job`; see the module docstring. `base_url` prefixes links.

    It reports on the failed step named `step`, by default the first failed browser step
    (or the first failed step when no browser step failed). `recording(job_id, step)`,
    when given, makes the `recording_url` (the server passes a signed link that the trace
    viewer can open without credentials).
    """
    base = _job_fields(job)
    row = _failed_step(steps, step)
    if job.status != "failed" or row is None:
        return {**base, "debug_agent_status": "not_applicable", "debug_agent_mode": "rules",
                "error": None, "tldr": f"Job {job.job_id} has not failed (status: {job.status}).",
                "handoff_prompt": None, "screenshot_url": None, "dom_snapshot_url": None,
                "recording_url": None, "analysis": None}
    evidence = load_evidence(job_artifacts / row.step_name, row.step_name)
    analysis = analyse(row, evidence)
    url = {
        "screenshot_url": f"{FAILURE}/screenshot.png", "dom_snapshot_url": f"{FAILURE}/dom.html",
        "network_url": f"{FAILURE}/network.jsonl", "console_url": f"{FAILURE}/console.log",
        "trace_url": "trace.zip",
    }
    links = {key: artifact_url(base_url, job.job_id, row.step_name, name) if evidence.has(name)
             else None for key, name in url.items()}
    make_recording = recording or (lambda job_id, name: recording_url(base_url, job_id, name))
    links["recording_url"] = (make_recording(job.job_id, row.step_name)
                              if evidence.has("trace.zip") else None)
    error = (row.error_message or job.error or "").strip()
    report = {
        **base,
        "debug_agent_status": "completed", "debug_agent_mode": "rules",
        "error": error.splitlines()[0] if error else None,
        "tldr": analysis["summary"],
        "analysis": analysis,
        "failed_step": row.step_name,
        "last_actions": list(evidence.error.get("last_actions") or []),
        **links,
    }
    report["job_mapped_stack"] = evidence.error.get("stack") or None
    report["handoff_prompt"] = handoff_prompt(job, row, report)
    return report


def _job_fields(job: JobRow) -> dict[str, Any]:
    return {
        "job_id": job.job_id, "job_status": job.status, "job_error": job.error,
        "job_mapped_stack": None, "job_params": dict(job.input),
        "job_workflow": job.task_name, "job_workspace": job.workspace,
        "autofix_summary": None, "autofix_deployment_id": None, "email_sent_at": None,
    }


def handoff_prompt(job: JobRow, row: StepRow, report: Mapping[str, Any]) -> str:
    """A ready-to-paste prompt for whoever fixes the workflow."""
    analysis = report["analysis"]
    lines = [
        "A Partitur browser workflow failed; please fix it.",
        "",
        f"Workflow: task `{job.task_name}` in workspace `{job.workspace}` (job {job.job_id}).",
        f"Failing step: `{row.step_name}` (action `{row.action_name}`, type {row.action_type}).",
        f"Error: {report['error'] or 'unknown'}",
        f"Diagnosis: {report['tldr']}",
    ]
    if analysis.get("candidates"):
        lines.append("Elements in the page that look closest to the missing one:")
        lines += [f"  - {c['selector']}" + (f"  ({c['text']})" if c["text"] else "")
                  for c in analysis["candidates"]]
    if report["last_actions"]:
        lines.append("Last actions before the failure:")
        lines += [f"  {i}. {a}" for i, a in enumerate(report["last_actions"], 1)]
    if analysis.get("url"):
        lines.append(f"Page URL at the failure: {analysis['url']}")
    evidence = [(label, report.get(key)) for label, key in (
        ("Screenshot", "screenshot_url"), ("DOM snapshot", "dom_snapshot_url"),
        ("Recording (trace viewer)", "recording_url"), ("Network log", "network_url"),
        ("Console log", "console_url"))]
    if any(link for _, link in evidence):
        lines.append("Evidence:")
        lines += [f"  {label}: {link}" for label, link in evidence if link]
    lines += [
        f"Job input: {orjson.dumps(dict(job.input), default=str).decode()}",
        "",
        "Change the workflow YAML (the step's selectors, waits or script) so that this step "
        "succeeds against the page as it is now; keep the other steps as they are, and "
        "check the fix with `partitur run`.",
    ]
    return "\n".join(lines)
