"""Compiling recorded action logs into declarative browser workflows."""

from __future__ import annotations

import orjson
import pytest
import yaml

from engine.actionlog import compile_action_log, workspace_yaml
from engine.errors import ValidationFailed

LOG = "\n".join(orjson.dumps(e).decode() for e in [
    {"action": "navigate", "url": "http://site.test/"},
    {"action": "click", "selector": "#username", "url": "http://site.test/"},
    {"action": "type", "selector": "#username", "value": "a"},
    {"action": "type", "selector": "#username", "value": "alice"},
    {"action": "fill", "selector": "#password", "value": "wonderland"},
    {"action": "select", "selector": "#region", "value": "eu"},
    {"action": "click", "selector": "#sign-in"},
    {"action": "click", "selector": "#sign-in"},
    {"action": "navigate", "url": "http://site.test/orders"},
    {"action": "click", "selector": "#export"},
])


def test_dedupes_and_parametrises() -> None:
    compiled = compile_action_log(LOG, initial_url="http://site.test/",
                                  params={"user": "alice", "password": "wonderland"})
    assert compiled.steps == [
        {"goto": "http://site.test/"},
        {"click": "#username"},
        {"fill": {"selector": "#username", "value": "<< input.user >>"}},
        {"fill": {"selector": "#password", "value": "<< input.password >>", "secret": True}},
        {"select": {"selector": "#region", "value": "eu"}},
        {"click": "#sign-in"},
        {"goto": "http://site.test/orders"},
        {"click": "#export"},
    ]
    assert compiled.input == {"password": {"type": "string", "required": True, "secret": True},
                              "user": {"type": "string", "required": True}}
    assert compiled.dropped == 3
    # Deterministic, and a loadable workspace document.
    again = compile_action_log(LOG, initial_url="http://site.test/",
                               params={"password": "wonderland", "user": "alice"})
    assert workspace_yaml("login", again) == workspace_yaml("login", compiled)
    doc = yaml.safe_load(workspace_yaml("login", compiled))
    assert doc["tasks"]["login"]["flow"]["run"]["input"] == {
        "password": "<< input.password >>", "user": "<< input.user >>"}


def test_bad_logs_name_the_line() -> None:
    with pytest.raises(ValidationFailed) as caught:
        compile_action_log('{"action": "click", "selector": "#a"}\n{"action": "hover"}',
                           initial_url="http://x.test/")
    assert "line 2" in caught.value.issues[0].message
    with pytest.raises(ValidationFailed):
        compile_action_log('{"action": "click", "selector": "#a"}', initial_url=None)
