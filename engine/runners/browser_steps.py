"""The declarative form of a browser action: parsing its `steps:` and running each one.

Each entry of `steps:` is a mapping with exactly one action key and, optionally,
`timeout` (seconds, for that step only):

    - goto: https://example.org            # or {url, wait_until, allow_http_error}
    - click: "#login"                      # or {selector}
    - fill: {selector: "#password", value: "<< secret.pw >>", secret: true}
    - select: {selector: "#country", value: NO}       # value: a string or a list
    - press: Enter                         # or {key, selector}
    - wait_for: ".results"                 # or {selector, state} | {url} | {load_state}
    - expect_text: Welcome                 # or {text, selector}
    - extract: {selector: ".price", attribute: data-cents, as: price, all: false}
    - screenshot: overview                 # or {name, full_page, selector}

Parsing is pure (no Playwright) so the runner checks the steps before it starts a
browser; `run_step` drives a Playwright page and is used by the driver process only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.async_api import Page

MASK = "••••••"
STEP_KINDS = (
    "goto", "click", "fill", "select", "press", "wait_for", "expect_text", "extract",
    "screenshot",
)
_SHORTHAND = {
    "goto": "url", "click": "selector", "press": "key", "wait_for": "selector",
    "expect_text": "text", "screenshot": "name",
}
_ALLOWED = {
    "goto": {"url", "wait_until", "allow_http_error"},
    "click": {"selector", "button", "click_count", "force"},
    "fill": {"selector", "value", "secret"},
    "select": {"selector", "value", "label"},
    "press": {"key", "selector"},
    "wait_for": {"selector", "state", "url", "load_state"},
    "expect_text": {"text", "selector"},
    "extract": {"selector", "attribute", "as", "all"},
    "screenshot": {"name", "full_page", "selector"},
}
_REQUIRED = {
    "goto": ("url",), "click": ("selector",), "fill": ("selector", "value"),
    "select": ("selector",), "press": ("key",), "expect_text": ("text",),
    "extract": ("selector", "as"),
}
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


class StepsInvalid(ValueError):
    """A `steps:` entry that cannot be run; the message names its index."""


class StepFailed(Exception):
    """A step whose outcome is wrong although Playwright did not raise (HTTP 404…)."""


@dataclass(frozen=True, slots=True)
class BrowserStep:
    """One parsed entry of `steps:`; `index` is 0-based."""

    index: int
    kind: str
    args: Mapping[str, Any]
    timeout: float | None = None

    @property
    def secret(self) -> bool:
        return bool(self.args.get("secret"))

    @property
    def selector(self) -> str | None:
        value = self.args.get("selector")
        return value if isinstance(value, str) else None

    def describe(self) -> str:
        """A log-safe one-line description (a secret `fill` value is masked)."""
        a = self.args
        if self.kind == "goto":
            return f"goto {a['url']}"
        if self.kind == "fill":
            value = MASK if self.secret else _short(str(a["value"]))
            return f"fill {a['selector']} {value}"
        if self.kind == "select":
            return f"select {a['selector']} {_short(str(a.get('value', a.get('label'))))}"
        if self.kind == "press":
            where = f" in {a['selector']}" if a.get("selector") else ""
            return f"press {a['key']}{where}"
        if self.kind == "wait_for":
            what = a.get("selector") or a.get("url") or a.get("load_state")
            return f"wait_for {what}"
        if self.kind == "expect_text":
            where = f" in {a['selector']}" if a.get("selector") else ""
            return f"expect_text {_short(str(a['text']))}{where}"
        if self.kind == "extract":
            attr = f"@{a['attribute']}" if a.get("attribute") else ""
            return f"extract {a['selector']}{attr} as {a['as']}"
        if self.kind == "screenshot":
            return f"screenshot {a['name']}"
        return f"{self.kind} {a.get('selector', '')}".rstrip()

    def safe_dict(self) -> dict[str, Any]:
        """The step as given, with a secret `fill` value masked (for evidence files)."""
        args = dict(self.args)
        if self.secret:
            args["value"] = MASK
        out: dict[str, Any] = {self.kind: args}
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_steps(raw: Any) -> list[BrowserStep]:
    """Check and normalise `steps:`; raises `StepsInvalid` naming the first bad entry."""
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise StepsInvalid("'steps' must be a list")
    return [_parse_one(i, entry) for i, entry in enumerate(raw)]


def _parse_one(index: int, entry: Any) -> BrowserStep:
    where = f"steps[{index}]"
    if not isinstance(entry, Mapping):
        raise StepsInvalid(f"{where}: a step is a mapping such as {{click: '#id'}}")
    kinds = [k for k in entry if k in STEP_KINDS]
    extra = [str(k) for k in entry if k not in STEP_KINDS and k != "timeout"]
    if len(kinds) != 1 or extra:
        found = ", ".join(str(k) for k in entry) or "nothing"
        raise StepsInvalid(
            f"{where}: needs exactly one of {', '.join(STEP_KINDS)} (and optionally "
            f"'timeout'); found {found}"
        )
    kind = kinds[0]
    value = entry[kind]
    if not isinstance(value, Mapping):
        if kind not in _SHORTHAND or value is None or isinstance(value, list | dict):
            raise StepsInvalid(f"{where}: '{kind}' takes a mapping")
        value = {_SHORTHAND[kind]: value if isinstance(value, str) else str(value)}
    args = {str(k): v for k, v in value.items()}
    unknown = sorted(set(args) - _ALLOWED[kind])
    if unknown:
        raise StepsInvalid(f"{where}: '{kind}' does not take {', '.join(unknown)} "
                           f"(it takes {', '.join(sorted(_ALLOWED[kind]))})")
    for name in _REQUIRED.get(kind, ()):
        if args.get(name) is None or args.get(name) == "":
            raise StepsInvalid(f"{where}: '{kind}' needs '{name}'")
    _check_kind(index, where, kind, args)
    timeout = entry.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or timeout <= 0):
        raise StepsInvalid(f"{where}: 'timeout' must be a positive number of seconds")
    return BrowserStep(index=index, kind=kind, args=args,
                       timeout=None if timeout is None else float(timeout))


def _check_kind(index: int, where: str, kind: str, args: dict[str, Any]) -> None:
    if kind == "fill":
        args["value"] = "" if args["value"] is None else str(args["value"])
    elif kind == "select" and args.get("value") is None and args.get("label") is None:
        raise StepsInvalid(f"{where}: 'select' needs 'value' or 'label'")
    elif kind == "wait_for" and sum(1 for k in ("selector", "url", "load_state")
                                    if args.get(k)) != 1:
        raise StepsInvalid(f"{where}: 'wait_for' needs one of selector, url, load_state")
    elif kind == "extract" and not isinstance(args["as"], str):
        raise StepsInvalid(f"{where}: 'extract.as' must be a name")
    elif kind == "screenshot":
        name = str(args.get("name") or f"screenshot-{index + 1}")
        if not name.endswith(".png"):
            name += ".png"
        if not _FILE_NAME.fullmatch(name):
            raise StepsInvalid(f"{where}: screenshot name {name!r} must be a plain file name")
        args["name"] = name


@dataclass(slots=True)
class StepContext:
    """What running steps share: the output being built and where files go."""

    artifacts_dir: Path
    log: Callable[[str], None]
    output: dict[str, Any] = field(default_factory=dict)


def _ms(step: BrowserStep) -> float | None:
    return None if step.timeout is None else step.timeout * 1000


async def run_step(page: Page, step: BrowserStep, ctx: StepContext) -> None:
    """Perform one step on `page`; Playwright's errors propagate to the caller."""
    from playwright.async_api import expect

    a = step.args
    timeout = _ms(step)
    if step.kind == "goto":
        response = await page.goto(str(a["url"]), wait_until=a.get("wait_until") or "load",
                                   timeout=timeout)
        if response is not None and response.status >= 400 and not a.get("allow_http_error"):
            raise StepFailed(f"HTTP {response.status} {response.status_text} for {response.url}")
    elif step.kind == "click":
        await page.locator(a["selector"]).first.click(
            button=a.get("button") or "left", click_count=int(a.get("click_count") or 1),
            force=bool(a.get("force")), timeout=timeout)
    elif step.kind == "fill":
        await page.locator(a["selector"]).first.fill(a["value"], timeout=timeout)
    elif step.kind == "select":
        value = a.get("value")
        if value is not None:
            values = [str(v) for v in value] if isinstance(value, list) else str(value)
            await page.locator(a["selector"]).first.select_option(values, timeout=timeout)
        else:
            label = a["label"]
            labels = [str(v) for v in label] if isinstance(label, list) else str(label)
            await page.locator(a["selector"]).first.select_option(label=labels, timeout=timeout)
    elif step.kind == "press":
        if a.get("selector"):
            await page.locator(a["selector"]).first.press(str(a["key"]), timeout=timeout)
        else:
            await page.keyboard.press(str(a["key"]))
    elif step.kind == "wait_for":
        if a.get("selector"):
            await page.locator(a["selector"]).first.wait_for(
                state=a.get("state") or "visible", timeout=timeout)
        elif a.get("url"):
            await page.wait_for_url(str(a["url"]), timeout=timeout)
        else:
            await page.wait_for_load_state(a["load_state"], timeout=timeout)
    elif step.kind == "expect_text":
        target = page.locator(a["selector"]).first if a.get("selector") else page.locator("body")
        await expect(target).to_contain_text(str(a["text"]), timeout=timeout)
    elif step.kind == "extract":
        ctx.output[a["as"]] = await _extract(page, a, timeout)
    elif step.kind == "screenshot":
        path = ctx.artifacts_dir / a["name"]
        if a.get("selector"):
            await page.locator(a["selector"]).first.screenshot(path=path, timeout=timeout)
        else:
            await page.screenshot(path=path, full_page=bool(a.get("full_page", True)),
                                  timeout=timeout)


async def _extract(page: Page, a: Mapping[str, Any], timeout: float | None) -> Any:
    locator = page.locator(a["selector"])
    attribute = a.get("attribute")
    if a.get("all"):
        await locator.first.wait_for(state="attached", timeout=timeout)
        if attribute:
            return [await item.get_attribute(str(attribute)) for item in await locator.all()]
        return [text.strip() for text in await locator.all_inner_texts()]
    first = locator.first
    if attribute:
        return await first.get_attribute(str(attribute), timeout=timeout)
    return (await first.inner_text(timeout=timeout)).strip()
