"""The cloud API under `/v1` (docs/cloud-api.md): one module per noun over `engine.cloud`."""

from __future__ import annotations

from server.openapi import Endpoint
from server.v1 import (
    credentials,
    deployments,
    jobs,
    logs,
    recordings,
    schedules,
    sessions,
    webhooks,
    workflows,
)

ENDPOINTS: tuple[Endpoint, ...] = (
    *jobs.ENDPOINTS, *logs.ENDPOINTS, *deployments.ENDPOINTS, *workflows.ENDPOINTS,
    *schedules.ENDPOINTS, *credentials.ENDPOINTS, *webhooks.ENDPOINTS,
    *recordings.ENDPOINTS, *sessions.ENDPOINTS,
)
