"""Real job streams for the store tests: events as decisions would append them.

`job_batches` builds the event batches of one job (one batch per decision), and
`record_job` appends them the way the orchestrator does: fold with `engine.core.state`,
project with `engine.core.projections`, and write the rows with each append.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.core import events as ev
from engine.core.plan import Plan, PlanStep
from engine.core.projections import job_row, step_rows
from engine.core.state import JobState, fold
from engine.store.base import AppendResult, EventStore, Projection


def make_plan(task: str = "build", steps: Sequence[str] = ("fetch", "compile", "test")) -> Plan:
    """A linear plan: each step depends on the one before it."""
    plan_steps: dict[str, PlanStep] = {}
    previous: str | None = None
    for name in steps:
        plan_steps[name] = PlanStep(
            name=name, action_name=f"do-{name}", action_type="shell",
            action={"type": "shell", "script": f"echo {name}"},
            input={"name": name}, depends_on=(previous,) if previous else (),
        )
        previous = name
    return Plan(task=task, steps=plan_steps)


def job_batches(
    job_id: str,
    *,
    created_at: float = 1_700_000_000.0,
    workspace: str = "default",
    task: str = "build",
    source_type: str = "api",
    parent: str | None = None,
    steps: Sequence[str] = ("fetch", "compile", "test"),
    finish: str | None = "completed",
    loop: bool = False,
) -> list[list[ev.Event]]:
    """The decisions of one job, in order; `finish=None` leaves it running.

    `finish="failed"` fails the last step and the job; `loop=True` adds a `for_each`-style
    expansion of the last step into two instances.
    """
    t = created_at
    plan = make_plan(task, steps)
    batches: list[list[ev.Event]] = [[
        ev.JobCreated(
            ts=t, job_id=job_id, workspace=workspace, revision="rev-1", task=task,
            input={"who": "world", "n": 3}, plan=plan.to_dict(), source_type=source_type,
            parent=parent,
        )
    ]]
    first = steps[0]
    batches.append([ev.JobStarted(ts=t + 0.1), ev.StepReady(ts=t + 0.1, step=first,
                                                             input={"name": first})])
    names = list(steps)
    for i, name in enumerate(names):
        at = t + 1 + i
        last = i == len(names) - 1
        if last and loop:
            batches.append([ev.LoopExpanded(ts=at, step=name, items=("a", "b"))])
            for index in range(2):
                instance = f"{name}[{index}]"
                batches.append([
                    ev.StepReady(ts=at, step=instance, input={"item": index}),
                    ev.StepStarted(ts=at, step=instance, attempt=1, worker_id="w1"),
                ])
                batches.append([ev.StepCompleted(ts=at + 0.2, step=instance, output=index)])
            if finish is None:
                return batches
            batches.append([ev.StepCompleted(ts=at + 0.3, step=name, output=[0, 1])])
            batches.append([ev.JobCompleted(ts=at + 0.4, output={name: [0, 1]})])
            return batches
        if i > 0:
            batches.append([ev.StepReady(ts=at, step=name, input={"name": name})])
        batches.append([ev.StepStarted(ts=at + 0.1, step=name, attempt=1, worker_id="w1",
                                       pid=4242)])
        if last and finish is None:
            return batches
        if last and finish == "failed":
            batches.append([
                ev.StepFailed(ts=at + 0.5, step=name, error="exit 2", exit_code=2),
                ev.JobFailed(ts=at + 0.6, error=f"step {name} failed"),
            ])
            return batches
        batch: list[ev.Event] = [ev.StepCompleted(ts=at + 0.5, step=name,
                                                  output={"step": name, "ok": True})]
        if last:
            batch.append(ev.JobCompleted(ts=at + 0.6, output={name: {"step": name, "ok": True}}))
        batches.append(batch)
    return batches


def touched(state: JobState, batch: Sequence[ev.Event]) -> set[str]:
    """Names of the step rows a batch changed (loop instances included)."""
    names: set[str] = set()
    for event in batch:
        if isinstance(event, ev.StepEvent):
            names.add(event.step)
        if isinstance(event, ev.LoopExpanded):
            names.update(s.name for s in state.instances(event.step))
    return names


async def record_job(
    store: EventStore,
    job_id: str,
    batches: Sequence[Sequence[ev.Event]],
    *,
    state: JobState | None = None,
    idempotency: tuple[str, str] | None = None,
) -> tuple[JobState, list[AppendResult]]:
    """Append each batch with its projection rows, as the orchestrator would."""
    results: list[AppendResult] = []
    for i, batch in enumerate(batches):
        before = state
        state = fold(batch, state)
        rows = step_rows(state) if before is None else step_rows(state, touched(state, batch))
        results.append(await store.append(
            job_id, before.version if before else 0, batch,
            projection=Projection(job_row(state), rows),
            idempotency=idempotency if i == 0 else None,
        ))
    assert state is not None
    return state, results
