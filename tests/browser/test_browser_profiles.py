"""Browser profiles: encrypted storage, and a signed-in session reused by a later job."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import RunJob, write_workspace

from engine.core.state import JobStatus
from engine.profiles import ProfileError, ProfileStore

KEY = "test-secrets-key-0123456789"
STATE = {"cookies": [{"name": "session", "value": "tok-4f1a9c", "domain": "127.0.0.1",
                      "path": "/"}], "origins": []}


def test_profiles_are_stored_encrypted_and_read_back(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path, KEY)
    store.save("ws", "shop", STATE)

    raw = store.path("ws", "shop").read_bytes()
    assert b"tok-4f1a9c" not in raw and b"session" not in raw
    assert store.load("ws", "shop") == STATE
    assert store.names("ws") == ["shop"] and store.load("ws", "other") is None
    # Another workspace does not see it.
    assert store.load("other-ws", "shop") is None


def test_a_wrong_or_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    ProfileStore(tmp_path, KEY).save("ws", "shop", STATE)

    with pytest.raises(ProfileError, match="cannot be decrypted"):
        ProfileStore(tmp_path, "another key").load("ws", "shop")
    with pytest.raises(ProfileError, match="need 'secrets_key'"):
        ProfileStore(tmp_path, None).load("ws", "shop")
    with pytest.raises(ProfileError, match="need 'secrets_key'"):
        ProfileStore(tmp_path, None).save("ws", "shop", STATE)


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "", "x" * 101])
def test_profile_names_cannot_leave_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ProfileError, match="invalid profile name"):
        ProfileStore(tmp_path, KEY).path("ws", name)


WORKSPACE = """
    tasks:
      sign-in:
        input:
          site_url: { type: string, required: true }
        flow:
          login:
            type: browser
            input: { site_url: "<< input.site_url >>" }
            profile: { name: shop, persist: true }
            steps:
              - goto: "<< input.site_url >>"
              - fill: { selector: "#username", value: alice }
              - fill: { selector: "#password", value: wonderland, secret: true }
              - click: "#sign-in"
              - wait_for: "#welcome"
      orders:
        input:
          site_url: { type: string, required: true }
          profile: { type: string, default: shop }
        flow:
          read:
            type: browser
            input:
              site_url: "<< input.site_url >>"
              profile: "<< input.profile >>"
            profile: { name: "<< input.profile >>" }
            steps:
              - goto: "<< input.site_url >>/orders"
              - extract: { selector: "h1", as: heading }
    """


async def test_a_persisted_profile_signs_in_a_later_job(
        tmp_path: Path, demo_site: str, run_job: RunJob, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITUR_SECRETS_KEY", KEY)
    ws = write_workspace(tmp_path / "ws", WORKSPACE)

    # Without the profile the orders page sends us to the sign-in form.
    missing = await run_job(ws, "orders", {"site_url": demo_site, "profile": "nobody"})
    assert missing.state.status == JobStatus.FAILED
    assert "browser profile 'nobody' does not exist" in (missing.state.steps["read"].error or "")

    first = await run_job(ws, "sign-in", {"site_url": demo_site})
    assert first.state.status == JobStatus.COMPLETED, first.state.steps["login"].error
    assert "profile shop: saved" in first.lines("login")
    stored = tmp_path / "profiles" / "ws" / "shop.profile"
    assert stored.is_file() and b"session" not in stored.read_bytes()

    second = await run_job(ws, "orders", {"site_url": demo_site})
    assert second.state.status == JobStatus.COMPLETED, second.state.steps["read"].error
    assert second.state.steps["read"].output == {"heading": "Welcome, alice"}
    assert "profile shop: loaded" in second.lines("read")


async def test_persisting_without_a_secrets_key_is_refused(
        tmp_path: Path, demo_site: str, run_job: RunJob, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARTITUR_SECRETS_KEY", raising=False)
    ws = write_workspace(tmp_path / "ws", WORKSPACE)

    job = await run_job(ws, "sign-in", {"site_url": demo_site})

    assert job.state.status == JobStatus.FAILED
    assert "need 'secrets_key'" in (job.state.steps["login"].error or "")
    assert not (tmp_path / "profiles").exists()
