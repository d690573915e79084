"""What an LLM adds to a debug report, when `debug.llm` is configured.

The rule-based report (engine.debugreport) stands on its own. With an OpenAI-compatible
endpoint configured, `DebugNotes.add` sends the report's handoff prompt to it once per
failed job and adds the answer as `llm_notes` (with `llm_model`); the answer is kept
(cloud object `debug_llm`, id = the job id), so later reads do not ask again. If the
endpoint fails, the report still answers: `llm_notes` is null and `llm_error` says why
(the next read tries again). Without `debug.llm` nothing is added and nothing is asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from engine.builds import LlmEndpoint
from engine.errors import Conflict
from engine.store.cloud import CloudObject, CloudRepository

log = logging.getLogger("partitur.debugllm")

KIND = "debug_llm"
MAX_NOTES = 8000
INSTRUCTIONS = ("You are helping to fix a failed browser workflow. Read the report below "
                "and answer in a few sentences: the most likely cause, and the change to "
                "make (selectors, waits, inputs). Do not repeat the report.\n\n")


async def ask(llm: LlmEndpoint, prompt: str, *, timeout: float = 30.0) -> str:
    """One chat completion: the answer's text."""
    import httpx  # when an LLM is asked, not at every start

    headers = {"authorization": f"Bearer {llm.api_key}"} if llm.api_key else {}
    async with httpx.AsyncClient(timeout=min(llm.timeout, timeout)) as client:
        response = await client.post(
            llm.endpoint.rstrip("/") + "/chat/completions", headers=headers,
            json={"model": llm.model, "temperature": 0,
                  "messages": [{"role": "user", "content": INSTRUCTIONS + prompt}]})
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"]).strip()


class DebugNotes:
    """Adds the LLM's notes to debug reports of failed jobs; see the module docstring."""

    def __init__(self, repo: CloudRepository, llm: LlmEndpoint | None, *,
                 now: Callable[[], float] = time.time) -> None:
        self.repo = repo
        self.llm = llm
        self._now = now
        self._locks: dict[str, asyncio.Lock] = {}

    async def add(self, report: dict[str, Any], tenant: str) -> dict[str, Any]:
        """`report` with `llm_notes`, `llm_model` and `llm_error` when an LLM is configured."""
        if self.llm is None:
            return report
        report.update(llm_notes=None, llm_model=self.llm.model, llm_error=None)
        job_id, prompt = report.get("job_id"), report.get("handoff_prompt")
        if report.get("debug_agent_status") != "completed" or not job_id or not prompt:
            return report
        import httpx

        lock = self._locks.setdefault(str(job_id), asyncio.Lock())
        async with lock:
            try:
                kept = await self.repo.get(KIND, str(job_id))
                if kept is None:
                    notes = (await ask(self.llm, str(prompt)))[:MAX_NOTES]
                    now = self._now()
                    kept = CloudObject(KIND, str(job_id), tenant, now, now,
                                       {"notes": notes, "model": self.llm.model})
                    try:
                        await self.repo.insert(kept)
                    except Conflict:
                        kept = await self.repo.get(KIND, str(job_id)) or kept
            except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
                log.warning("debug.llm: no notes for job %s: %s", job_id, exc)
                report["llm_error"] = f"the LLM did not answer: {exc or type(exc).__name__}"
                return report
            finally:
                self._locks.pop(str(job_id), None)  # a late arrival at worst asks twice
        report["llm_notes"] = kept.data.get("notes")
        report["llm_model"] = kept.data.get("model")
        return report
