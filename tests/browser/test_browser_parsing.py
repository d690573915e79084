"""Pure parts of browser steps (no Chromium): step parsing and the DOM rules of reports."""

from __future__ import annotations

import pytest

from engine.debugreport import matches, nearest_candidates, parse_dom, parse_selector
from engine.runners.browser_steps import MASK, StepsInvalid, parse_steps


def test_shorthands_normalise_and_secrets_are_masked() -> None:
    steps = parse_steps([
        {"goto": "http://x"}, {"click": "#go", "timeout": 2},
        {"fill": {"selector": "#pw", "value": "hunter22", "secret": True}},
        {"screenshot": "home"}, {"extract": {"selector": "td", "as": "cells", "all": True}},
    ])
    assert [s.kind for s in steps] == ["goto", "click", "fill", "screenshot", "extract"]
    assert steps[1].timeout == 2.0 and steps[1].selector == "#go"
    assert steps[2].describe() == f"fill #pw {MASK}"
    assert steps[2].safe_dict() == {"fill": {"selector": "#pw", "value": MASK, "secret": True}}
    assert steps[3].args["name"] == "home.png"


@pytest.mark.parametrize(("raw", "message"), [
    ("click: x", "'steps' must be a list"),
    ([{"click": "#a", "fill": {"selector": "#b", "value": 1}}], r"steps\[0\]: needs exactly one"),
    ([{"goto": "u"}, {"tap": "#a"}], r"steps\[1\]: needs exactly one"),
    ([{"fill": {"selector": "#a"}}], r"'fill' needs 'value'"),
    ([{"extract": {"selector": "#a"}}], r"'extract' needs 'as'"),
    ([{"click": {"selector": "#a", "delay": 3}}], r"does not take delay"),
    ([{"wait_for": {"state": "visible"}}], r"needs one of selector, url, load_state"),
    ([{"screenshot": "../x"}], r"must be a plain file name"),
    ([{"click": "#a", "timeout": -1}], r"positive number"),
])
def test_bad_steps_name_their_index(raw: object, message: str) -> None:
    with pytest.raises(StepsInvalid, match=message):
        parse_steps(raw)


DOM = """<html><body><form id="login">
  <input id="username" name="username"><input id="password" name="password" type="password">
  <button id="sign-in" class="btn primary" type="submit">Sign in</button>
  <a href="/help" class="help-link">Help</a></form></body></html>"""


def test_selectors_are_matched_against_the_dom_snapshot() -> None:
    elements = parse_dom(DOM)
    button = next(e for e in elements if e.tag == "button")
    assert button.text == "Sign in" and button.classes == ["btn", "primary"]
    assert matches(button, parse_selector("button#sign-in.btn"))
    assert matches(button, parse_selector("form > .primary"))
    assert not matches(button, parse_selector("#sign-in-button"))
    assert matches(next(e for e in elements if e.id == "password"),
                   parse_selector('input[type="password"]'))


def test_nearest_candidates_are_ranked_and_deterministic() -> None:
    elements = parse_dom(DOM)
    first = nearest_candidates("#sign-in-button", elements)
    assert first[0]["selector"] == "#sign-in"
    assert first == nearest_candidates("#sign-in-button", elements)
    assert nearest_candidates("text=Sign on", elements)[0]["selector"] == "#sign-in"
    assert nearest_candidates('input[name="user"]', elements)[0]["selector"] == "#username"
    assert nearest_candidates("#zzzz-qqqq", elements) == []
