"""The `extract` entries of an action log: output names, attributes, `all`, and refusals."""

from __future__ import annotations

import pytest

from engine.actionlog import compile_action_log
from engine.errors import ValidationFailed


def test_extract_becomes_an_extract_step_with_its_options() -> None:
    log = [{"action": "click", "selector": "#go"},
           {"action": "extract", "selector": ".id", "as": "ids", "all": True},
           {"action": "extract", "selector": ".total", "value": "cents",
            "attribute": "data-cents"}]
    compiled = compile_action_log(log, initial_url="http://x/")
    assert compiled.steps[2:] == [
        {"extract": {"selector": ".id", "as": "ids", "all": True}},
        {"extract": {"selector": ".total", "as": "cents", "attribute": "data-cents"}}]


@pytest.mark.parametrize("entry", [{"action": "extract", "as": "x"},
                                   {"action": "extract", "selector": ".a", "as": "not a name"}])
def test_bad_extract_entries_are_refused(entry: dict[str, object]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        compile_action_log([entry], initial_url="http://x/")
    assert "action_log line 1" in caught.value.issues[0].message
