"""Cloud API rules over HTTP that the other tests leave out: jobs/create defaults and
pairings, nonces per workflow, status mapping (queued, skipped → cancelled), credentials
(only declared names, no injection, a queued job blocks deletion), logs paging and
filters, unsafe uploads failing their build, the upload cap, fresh folders, and how a
workflow name resolves.
"""

from __future__ import annotations

import base64
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ServerProcess
from v1_helpers import WORKFLOWS, call, deploy, tarball, wait_job, workspace

from engine.cloudjobs import cloud_status
from engine.core.projections import JobRow, StepRow
from engine.deployments import TarballTooLarge, TarLimits, unpack_tarball

MORE = WORKFLOWS + """
  one_at_a_time:
    concurrency: 1
    input:
      credentials: {type: object, secret: true, default: {held: null}}
    flow:
      wait:
        type: shell
        script: sleep 30
  skipper:
    concurrency: {limit: 1, policy: skip}
    flow:
      wait:
        type: shell
        script: sleep 30
  picky:
    input:
      credentials: {type: object, secret: true, default: {wanted: null}}
    flow:
      show:
        input:
          names: "<< input.credentials | list | sort | join(',') >>"
          value: "<< input.credentials.wanted >>"
        type: shell
        script: |
          echo 'keys=<< input.names >>'
          echo 'value=<< input.value >>'
  chatty:
    flow:
      talk:
        type: shell
        script: for i in $(seq 1 25); do echo "line $i"; done
"""

UPLOAD = 96 * 1024


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server = ServerProcess(tmp_path_factory.mktemp("rules"), settings={
        "secrets_key": "rules-key", "callbacks": {"allow_private": True},
        "limits": {"upload": UPLOAD}}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=15.0) as client:
            deploy(client, workspace(MORE))
            yield client
    finally:
        server.close()


def _post(c: httpx.Client, route: str, body: dict[str, Any]) -> httpx.Response:
    return c.post(f"/v1/{route}", json={"json": body})


def _paths(r: httpx.Response) -> list[list[Any]]:
    return [i["path"] for i in r.json()["json"]["data"].get("issues", [])]


def test_jobs_create_defaults_and_pairings(srv: httpx.Client) -> None:
    job_id = call(srv, "jobs/create", {"workflow": "greet", "params": {"name": "d"}})["job_id"]
    assert call(srv, "jobs/get", {"id": job_id})["timeout_seconds"] == 1800
    r = _post(srv, "jobs/create", {"workflow": "greet", "params": {"name": "d"},
                                   "callback_secret": "s"})
    assert r.status_code == 400 and ["callback_url"] in _paths(r)
    r = _post(srv, "jobs/create", {"workflow": "greet", "params": {"name": "d"},
                                   "callback_url": "http://127.0.0.1:9/"})
    assert r.status_code == 400 and ["callback_secret"] in _paths(r)
    for bad in (0, 3601, "60"):
        r = _post(srv, "jobs/create", {"workflow": "greet", "params": {"name": "d"},
                                       "timeout_seconds": bad})
        assert r.status_code == 400 and ["timeout_seconds"] in _paths(r)
    at_max = call(srv, "jobs/create", {"workflow": "greet", "params": {"name": "d"},
                                       "timeout_seconds": 3600})["job_id"]
    assert call(srv, "jobs/get", {"id": at_max})["timeout_seconds"] == 3600
    # A nonce is per workflow; a repeat returns the first job even with other params.
    nonce = f"n-{uuid.uuid4()}"
    first = call(srv, "jobs/create", {"workflow": "greet", "params": {"name": "a"},
                                      "nonce": nonce})
    again = call(srv, "jobs/create", {"workflow": "greet", "params": {"name": "b"},
                                      "nonce": nonce})
    assert again["job_id"] == first["job_id"] and nonce in again["message"]
    assert call(srv, "jobs/get", {"id": first["job_id"]})["params"] == {"name": "a"}
    other = call(srv, "jobs/create", {"workflow": "chatty", "params": {}, "nonce": nonce})
    assert other["job_id"] != first["job_id"]


def test_queued_and_skipped_map_to_cloud_statuses(srv: httpx.Client) -> None:
    call(srv, "credentials/upsert", {"name": "held", "value": "held-value"})
    running = call(srv, "jobs/create", {"workflow": "one_at_a_time", "params": {}})["job_id"]
    wait_job(srv, running, until={"running"})
    queued = call(srv, "jobs/create", {"workflow": "one_at_a_time", "params": {}})["job_id"]
    assert call(srv, "jobs/get", {"id": queued})["status"] == "queued"
    assert queued in [j["job_id"] for j in call(srv, "jobs/list",
                                                {"status": "queued"})["jobs"]]
    # The credential is used by a running and a queued job: it cannot be deleted.
    r = _post(srv, "credentials/delete", {"name": "held"})
    assert r.status_code == 409 and r.json()["json"]["code"] == "CONFLICT"
    assert running in r.json()["json"]["message"] and queued in r.json()["json"]["message"]
    call(srv, "jobs/cancel", {"id": running})
    wait_job(srv, running)
    # The server's note of the cancellation is a warning.
    warned = call(srv, "logs/list", {"jobId": running, "level": "warn"})["logs"]
    assert warned and all(e["level"] == "warn" for e in warned)
    assert any("cancel" in e["message"] for e in warned)
    wait_job(srv, queued, until={"running"})
    r = _post(srv, "credentials/delete", {"name": "held"})
    assert r.status_code == 409 and queued in r.json()["json"]["message"]
    assert call(srv, "jobs/cancel", {"id": queued})["success"] is True
    assert wait_job(srv, queued)["status"] == "cancelled"
    assert call(srv, "credentials/delete", {"name": "held"})["success"] is True
    # A job the engine skips (concurrency policy skip) is cancelled for the cloud.
    busy = call(srv, "jobs/create", {"workflow": "skipper", "params": {}})["job_id"]
    wait_job(srv, busy, until={"running"})
    skipped = call(srv, "jobs/create", {"workflow": "skipper", "params": {}})["job_id"]
    assert wait_job(srv, skipped)["status"] == "cancelled"
    assert skipped in [j["job_id"] for j in call(srv, "jobs/list", {"status": "cancelled",
                                                                    "limit": 100})["jobs"]]
    call(srv, "jobs/cancel", {"id": busy})
    wait_job(srv, busy)


def test_starting_browser_while_the_first_browser_step_launches() -> None:
    job = JobRow(**{**{n: None for n in JobRow.__slots__}, "status": "running"})
    step = StepRow(**{**{n: None for n in StepRow.__slots__}, "status": "running",
                      "action_type": "browser", "started_at": 100.0})
    assert cloud_status(job, [step], 101.0) == "starting_browser"
    assert cloud_status(job, [step], 110.0) == "running"  # launched by now
    done = StepRow(**{**step.to_dict(), "status": "completed", "action_type": "shell"})
    assert cloud_status(job, [done, step], 101.0) == "running"
    assert cloud_status(JobRow(**{**job.to_dict(), "status": "pending"}), [], 0) == "queued"


def test_only_declared_credentials_reach_a_job(srv: httpx.Client) -> None:
    call(srv, "credentials/upsert", {"name": "wanted", "value": "wanted-v4lue"})
    call(srv, "credentials/upsert", {"name": "api_token", "value": "unwanted-v4lue"})
    # The caller cannot inject another credential through the `credentials` object.
    job_id = call(srv, "jobs/create", {"workflow": "picky", "params": {
        "credentials": {"api_token": "forged", "wanted": "forged"}}})["job_id"]
    assert wait_job(srv, job_id)["status"] == "completed"
    lines = [e["message"] for e in call(srv, "logs/list", {"jobId": job_id})["logs"]]
    assert "keys=wanted" in lines, lines
    value = next(line for line in lines if line.startswith("value="))
    assert value != "value=" and "wanted-v4lue" not in value  # given, and redacted
    assert not any("unwanted-v4lue" in line or "forged" in line for line in lines)
    # A workflow that declares nothing gets nothing (a secret it did not declare is an
    # unknown input).
    r = _post(srv, "jobs/create", {"workflow": "greet", "params": {
        "name": "x", "credentials": {"api_token": None}}})
    assert r.status_code == 400


def test_logs_page_tokens_and_filters(srv: httpx.Client) -> None:
    job_id = call(srv, "jobs/create", {"workflow": "chatty", "params": {}})["job_id"]
    wait_job(srv, job_id)
    everything = call(srv, "logs/list", {"jobId": job_id, "limit": 1000})
    assert everything["nextPageToken"] is None
    full = [e["message"] for e in everything["logs"]]
    assert [m for m in full if m.startswith("line ")] == [f"line {i}" for i in range(1, 26)]
    paged: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = call(srv, "logs/list", {"jobId": job_id, "limit": 10,
                                       **({"pageToken": token} if token else {})})
        assert len(page["logs"]) <= 10
        assert all(set(e) >= {"jobId", "workflow", "level", "message", "timestamp"}
                   for e in page["logs"])
        paged += [e["message"] for e in page["logs"]]
        pages += 1
        token = page["nextPageToken"]
        if token is None:
            break
    assert paged == full and pages >= 3
    # Filtered by workflow across the tenant's recent jobs.
    other = call(srv, "jobs/create", {"workflow": "greet", "params": {"name": "w"}})["job_id"]
    wait_job(srv, other)
    by_workflow = call(srv, "logs/list", {"workflow": "chatty", "limit": 1000})["logs"]
    assert by_workflow and {e["workflow"] for e in by_workflow} == {"chatty"}
    assert job_id in {e["jobId"] for e in by_workflow}
    recent = call(srv, "logs/list", {"limit": 1000})["logs"]
    assert {job_id, other} <= {e["jobId"] for e in recent}
    assert {e["level"] for e in call(srv, "logs/list", {"jobId": job_id, "level": "info"})
            ["logs"]} == {"info"}
    r = _post(srv, "logs/list", {"level": "debug"})
    assert r.status_code == 400 and ["level"] in _paths(r)
    r = _post(srv, "logs/list", {"pageToken": "not-a-token"})
    assert r.status_code == 400 and ["pageToken"] in _paths(r)


def _member(name: str, kind: bytes, **attrs: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def test_unsafe_uploads_fail_their_build_saying_why(srv: httpx.Client) -> None:
    good = {".workflows/main.yaml": WORKFLOWS}
    cases = {
        "'..'": tarball({**good, "../evil": "x"}, prefix=""),
        "absolute": tarball({**good, "/tmp/evil": "x"}, prefix=""),
        "links": tarball(good, extra=[_member("./l", tarfile.SYMTYPE, linkname="/etc")]),
        "links ": tarball(good, extra=[_member("./h", tarfile.LNKTYPE,
                                               linkname=".workflows/main.yaml")]),
        "special files": tarball(good, extra=[_member("./dev", tarfile.CHRTYPE)]),
        "twice": tarball({**good, "./.workflows/main.yaml": "x"}, prefix=""),
        "deeper": tarball({**good, "/".join(["d"] * 40) + "/f": "x"}),
    }
    for word, source in cases.items():
        dep = deploy(srv, source, expect="failed")
        assert word.strip() in dep["build_error"], (word, dep["build_error"])
        assert dep["workflows"] == [] and dep["built_at"]
        assert not Path(dep["source_path"]).exists()  # nothing is left of a refused upload
    # Base64 larger than limits.upload: 413, in the error envelope, nothing recorded.
    before = len(call(srv, "deployments/list")["deployments"])
    big = base64.b64encode(b"\0" * UPLOAD).decode()
    r = _post(srv, "deployments/create", {"source": big})
    assert r.status_code == 413 and r.json()["json"]["code"] == "PAYLOAD_TOO_LARGE"
    assert len(call(srv, "deployments/list")["deployments"]) == before


def test_decompressed_size_is_capped_while_streaming(tmp_path: Path) -> None:
    # 200 empty files: no member has a size, but the tar stream itself (headers) is
    # larger than the cap, so the streaming counter stops it.
    source = tarball({f"f{i}": "" for i in range(200)})
    dest = tmp_path / "d"
    with pytest.raises(TarballTooLarge):
        unpack_tarball(source, dest, TarLimits(unpacked=20_000))
    assert not dest.exists()
    # A compressed bomb: 5 MB of zeros in a tiny upload.
    bomb = tarball({"zeros": b"\0" * 5_000_000})
    assert len(bomb) < 20_000
    with pytest.raises(TarballTooLarge):
        unpack_tarball(bomb, tmp_path / "b", TarLimits(unpacked=1_000_000))
    assert not (tmp_path / "b").exists()
    # The destination must be new.
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        unpack_tarball(tarball({"a": "1"}), tmp_path / "exists")


def test_each_deployment_is_a_fresh_folder_and_names_resolve(srv: httpx.Client) -> None:
    first = deploy(srv, tarball({".workflows/main.yaml": MORE, "stale.txt": "old"}))
    assert (Path(first["source_path"]) / "stale.txt").exists()
    second = deploy(srv, workspace(MORE))
    assert first["source_path"] != second["source_path"]
    assert not (Path(second["source_path"]) / "stale.txt").exists()
    # Nothing runs `first` any more: its unpacked folder goes (docs/cloud-api.md).
    deadline = time.monotonic() + 30
    while Path(first["source_path"]).exists():
        assert time.monotonic() < deadline, "the superseded folder stayed"
        time.sleep(0.05)
    # A newer failed deployment, or one without the workflow, does not take it over.
    deploy(srv, tarball({".workflows/main.yaml": "tasks: [broken"}), expect="failed")
    only_other = "tasks:\n  lonely:\n    flow:\n      s:\n        type: shell\n" \
                 "        script: echo lonely\n"
    lonely = deploy(srv, workspace(only_other))
    assert lonely["workflows"] == ["lonely"]
    assert call(srv, "workflows/get", {"workflow": "greet"})["deployment_id"] == second["id"]
    assert call(srv, "workflows/get", {"workflow": "lonely"})["deployment_id"] == lonely["id"]
    job = call(srv, "jobs/create", {"workflow": "greet", "params": {"name": "r"}})["job_id"]
    done = wait_job(srv, job)
    assert done["deployment_id"] == second["id"] and done["deployment_version"]
    # The list is newest first.
    ids = [d["id"] for d in call(srv, "deployments/list")["deployments"]]
    assert ids.index(lonely["id"]) < ids.index(second["id"]) < ids.index(first["id"])


def test_schedule_timezone_is_checked(srv: httpx.Client) -> None:
    r = _post(srv, "schedules/create", {"workflow": "greet", "params": {"name": "z"},
                                        "cron_expr": "0 3 * * *", "timezone": "Mars/Base"})
    assert r.status_code == 400 and _paths(r) == [["timezone"]]
    made = call(srv, "schedules/create", {"workflow": "greet", "params": {"name": "z"},
                                          "cron_expr": "0 3 * * *", "enabled": False})
    r = _post(srv, "schedules/update", {"id": made["schedule"]["id"], "timezone": "Nowhere"})
    assert r.status_code == 400 and _paths(r) == [["timezone"]]
    r = _post(srv, "schedules/update", {"id": made["schedule"]["id"], "cron_expr": "61 * * * *"})
    assert r.status_code == 400 and _paths(r) == [["cron_expr"]]
    call(srv, "schedules/delete", {"id": made["schedule"]["id"]})


def test_deployments_are_immutable_revisions(srv: httpx.Client) -> None:
    def version(text: str) -> str:
        return "tasks:\n  versioned:\n    flow:\n      s:\n        type: shell\n" \
               f"        script: echo {text}\n"

    old = deploy(srv, workspace(version("old-code")))
    new = deploy(srv, workspace(version("new-code")))
    assert old["id"] != new["id"]

    def run() -> tuple[str, list[str]]:
        job_id = call(srv, "jobs/create", {"workflow": "versioned", "params": {}})["job_id"]
        job = wait_job(srv, job_id)
        lines = [e["message"] for e in call(srv, "logs/list", {"jobId": job_id})["logs"]]
        return job["deployment_version"], lines

    new_rev, lines = run()
    assert "new-code" in lines
    call(srv, "deployments/rollback", {"workflow": "versioned"})
    old_rev, lines = run()
    assert "old-code" in lines and "new-code" not in lines and old_rev != new_rev
    assert call(srv, "deployments/sync", {"id": old["id"]})["revision"] == old_rev
    call(srv, "deployments/pin", {"workflow": "versioned", "deployment_id": None})
    assert run()[0] == new_rev


def test_credentials_need_a_string_value(srv: httpx.Client) -> None:
    for route in ("credentials/create", "credentials/upsert"):
        for body in ({"name": "valueless"}, {"name": "valueless", "value": 42}):
            r = _post(srv, route, body)
            assert r.status_code == 400 and _paths(r) == [["value"]], (route, r.text)
    r = _post(srv, "credentials/get", {"name": "valueless"})
    assert r.status_code == 404


def test_every_reference_route_is_served_and_documented(srv: httpx.Client) -> None:
    reference = {
        "deployments": {"create", "list", "sync"},
        "workflows": {"list", "get", "delete", "build", "buildStatus"},
        "jobs": {"create", "list", "get", "debugReport", "cancel"},
        "logs": {"list"}, "recordings": {"get"},
        "schedules": {"create", "list", "get", "update", "delete"},
        "credentials": {"create", "list", "get", "update", "delete", "upsert"},
        "webhooks": {"create", "list", "update", "delete"},
        "sessions": {"create", "get", "close"},
    }
    routes = {f"/v1/{noun}/{verb}" for noun, verbs in reference.items() for verb in verbs}
    documented = {p for p, ops in srv.get("/openapi.json").json()["paths"].items()
                  if "post" in ops}
    assert routes <= documented, sorted(routes - documented)
    unrouted = srv.post("/v1/nowhere/nothing", json={"json": {}})
    assert unrouted.status_code == 404
    for route in sorted(routes):  # served: never the router's 404/405
        r = srv.post(route, json={"json": {}})
        assert r.status_code in (200, 400, 404, 409), (route, r.status_code)
        assert r.json()["json"].get("message") != unrouted.json()["json"]["message"], route


SCHEMAS = """
actions:
  report:
    type: shell
    input:
      region: {type: string}
    output:
      count: {type: integer, required: true}
      note: {type: string}
    script: |
      echo 'OUTPUT: {"count": 1}'
tasks:
  shaped:
    description: Every kind of field
    input:
      region: {type: string, options: [eu, us], default: eu, description: Where}
      code: {type: string, pattern: "^[A-Z]{3}$", required: true, min: 3, max: 3}
      replicas: {type: number, min: 1, max: 20}
      tags: {type: array, min: 1, max: 5}
      envs: {type: string, multiple: true, options: [dev, prod]}
      token: {type: string, secret: true}
      when: {type: date}
    flow:
      first:
        type: shell
        script: echo first
      last:
        depends_on: [first]
        action: report
        input: {region: "<< input.region >>"}
"""


def test_input_and_output_schemas_are_json_schema(srv: httpx.Client) -> None:
    deploy(srv, workspace(SCHEMAS))
    wf = call(srv, "workflows/get", {"workflow": "shaped"})
    schema = wf["input_schema"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["code"]
    p = schema["properties"]
    assert p["region"] == {"type": "string", "enum": ["eu", "us"], "default": "eu",
                           "description": "Where"}
    assert p["code"] == {"type": "string", "pattern": "^[A-Z]{3}$", "minLength": 3,
                         "maxLength": 3}
    assert p["replicas"] == {"type": "number", "minimum": 1, "maximum": 20}
    assert p["tags"] == {"type": "array", "minItems": 1, "maxItems": 5}
    assert p["envs"] == {"type": "array", "items": {"type": "string", "enum": ["dev", "prod"]}}
    assert p["token"] == {"type": "string", "writeOnly": True}
    assert p["when"] == {"type": "string", "format": "date"}
    # The output: the leaf steps' outputs, with the action's output schema.
    out = wf["output_schema"]
    assert out["type"] == "object" and list(out["properties"]) == ["last"]
    last = out["properties"]["last"]
    assert last["properties"]["count"] == {"type": "integer"} and last["required"] == ["count"]
    # What the schema refuses, jobs/create refuses, field by field.
    r = _post(srv, "jobs/create", {"workflow": "shaped", "params": {
        "code": "abcd", "region": "mars", "replicas": 50, "tags": [], "envs": ["qa"],
        "extra": 1}})
    assert r.status_code == 400
    assert sorted(_paths(r)) == sorted([["params", n] for n in (
        "code", "region", "replicas", "tags", "envs", "extra")])
    ok = call(srv, "jobs/create", {"workflow": "shaped", "params": {
        "code": "ABC", "tags": ["a"], "envs": ["dev"], "when": "2026-01-02"}})["job_id"]
    job = wait_job(srv, ok)
    assert job["status"] == "completed" and job["result"] == {"last": {"count": 1}}


def test_next_fire_on_the_fall_back_day() -> None:
    from datetime import UTC, datetime

    from engine.cloudschedules import next_fire

    def at(*parts: int) -> float:
        return datetime(*parts, tzinfo=UTC).timestamp()

    # 02:30 happens twice in Berlin on 2025-10-26 (CEST, then CET): it fires once.
    first = next_fire("30 2 * * *", "Europe/Berlin", at(2025, 10, 25, 23))
    assert first == at(2025, 10, 26, 0, 30)
    assert next_fire("30 2 * * *", "Europe/Berlin", first or 0) == at(2025, 10, 27, 1, 30)
    # Hourly keeps firing every real hour through the repeated hour.
    hourly = next_fire("0 * * * *", "Europe/Berlin", at(2025, 10, 26, 0, 30))
    assert hourly == at(2025, 10, 26, 1)
    assert next_fire("0 * * * *", "Europe/Berlin", hourly or 0) == at(2025, 10, 26, 2)


def test_a_500_is_an_envelope_too(tmp_path: Path) -> None:
    # Credentials stored under one secrets_key cannot be read under another: the server
    # answers 500 in the error envelope (the reason is in its log), and lists still work.
    first = ServerProcess(tmp_path, settings={"secrets_key": "first-key"}).start()
    try:
        with httpx.Client(base_url=first.url, timeout=15.0) as c:
            call(c, "credentials/create", {"name": "locked", "value": "v"})
    finally:
        first.close()
    second = ServerProcess(tmp_path, settings={"secrets_key": "another-key"}).start()
    try:
        with httpx.Client(base_url=second.url, timeout=15.0) as c:
            r = _post(c, "credentials/get", {"name": "locked"})
            assert r.status_code == 500
            err = r.json()["json"]
            assert err == {"defined": False, "code": "INTERNAL_SERVER_ERROR", "status": 500,
                           "message": err["message"], "data": {}} and err["message"]
            assert [x["name"] for x in call(c, "credentials/list")["credentials"]] == ["locked"]
        assert "cannot be decrypted" in second.log_path.read_text("utf-8", "replace")
    finally:
        second.close()
