"""`/v1/sessions/*` and `telemetry/recordCliEvent`: the handlers of server.browser_v1."""

from __future__ import annotations

from server.browser_v1 import ENDPOINTS as _BROWSER

ENDPOINTS = tuple(e for e in _BROWSER if not e.path.startswith("/v1/recordings/"))
