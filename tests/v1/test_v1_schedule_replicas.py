"""Schedule updates and fires on two `partitur serve` replicas on one PostgreSQL.

The leader fires a schedule every second and records each fire on the schedule; the
`schedules/update` calls go to both replicas in turn. Every update must survive the
fires recorded after it, and the fire record (`last_fire_at`) must never go back: the
writes are made over the version read (`CloudRepository.modify`), not blindly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from harness import ServerProcess
from v1_helpers import call, deploy

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ROUNDS = 8


def _when(stamp: str | None) -> float:
    return 0.0 if stamp is None else datetime.fromisoformat(
        stamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.timeout(240)
def test_updates_and_fires_on_two_replicas_keep_each_others_fields(
        make_server: Callable[..., ServerProcess], pg_url: str) -> None:
    settings = {"db": {"url": pg_url}, "secrets_key": "test-secrets-key"}
    one = make_server(settings=settings)
    with httpx.Client(base_url=one.url, timeout=15) as a:
        deploy(a)
        # Started after the deployment is ready, so it registers it too.
        two = make_server(settings=settings)
        with httpx.Client(base_url=two.url, timeout=15) as b:
            made = call(b, "schedules/create", {"workflow": "greet", "params": {"name": "x"},
                                                "cron_expr": "* * * * * *"})
            sid = made["schedule"]["id"]
            last_fire = 0.0
            for n in range(ROUNDS):
                client = (a, b)[n % 2]
                done = call(client, "schedules/update", {"id": sid, "timeout_seconds": 100 + n,
                                                         "params": {"name": f"n{n}"}})
                updated = _when(done["schedule"]["updated_at"])
                # Wait for a fire recorded after the update, then read on the other side.
                deadline = time.monotonic() + 60
                while True:
                    got: dict[str, Any] = call((b, a)[n % 2], "schedules/get",
                                               {"id": sid})["schedule"]
                    fired = _when(got["last_fire_at"])
                    assert fired >= last_fire, (n, got)  # a fire record is never lost
                    last_fire = fired
                    assert got["timeout_seconds"] == 100 + n, (n, got)
                    assert got["params"] == {"name": f"n{n}"}, (n, got)
                    if fired > updated:
                        break
                    assert time.monotonic() < deadline, f"no fire after update {n}: {got}"
                    time.sleep(0.2)
                assert got["last_job_id"] is not None
            call(a, "schedules/update", {"id": sid, "enabled": False})
            assert call(b, "schedules/get", {"id": sid})["schedule"]["enabled"] is False
