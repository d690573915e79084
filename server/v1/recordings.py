"""`/v1/recordings/get`: a signed, expiring trace viewer link (server.browser_v1)."""

from __future__ import annotations

from server.browser_v1 import ENDPOINTS as _BROWSER

ENDPOINTS = tuple(e for e in _BROWSER if e.path.startswith("/v1/recordings/"))
