"""LocalRunner: attempts as subprocesses of this process, on its event loop, at most `max_parallel` at once.

It only executes: the scheduler decides what runs (and shares the places fairly between projects, using
`free()` and `running_count(project)`), and the orchestrator applies each outcome (`on_outcome`).
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Callable

from ..wording import plural
from .attempt import run_attempt
from .runner import AttemptOutcome, AttemptSpec, OutcomeHandler, RunnerBase, RunnerFull, RunningAttempt

log = logging.getLogger(__name__)


class LocalRunner(RunnerBase):
    def __init__(self, max_parallel: int, on_outcome: OutcomeHandler | None = None,
                 on_phase: Callable[[RunningAttempt], None] | None = None) -> None:
        self.max_parallel = max_parallel
        self.on_outcome = on_outcome
        self.on_phase = on_phase  # told when a running attempt enters a new phase (agent, testing, checking)
        self._running: dict[str, tuple[RunningAttempt, asyncio.Event, asyncio.Task[AttemptOutcome]]] = {}

    def submit(self, spec: AttemptSpec) -> asyncio.Task[AttemptOutcome]:
        """Start the attempt now; returns its task (its result is the outcome, also given to on_outcome)."""
        if spec.attempt_id in self._running:
            raise ValueError(f"attempt {spec.attempt_id} is already running")
        if not self.free():
            raise RunnerFull(f"{plural(self.max_parallel, 'attempt')} running already")
        status = RunningAttempt(attempt_id=spec.attempt_id, project=spec.project, story=spec.story,
                                attempt=spec.input.attempt, started_at=datetime.now(timezone.utc))
        cancel = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._run(spec, status, cancel),
                                                      name=f"attempt {spec.attempt_id}")
        self._running[spec.attempt_id] = (status, cancel, task)
        return task

    async def _run(self, spec: AttemptSpec, status: RunningAttempt, cancel: asyncio.Event) -> AttemptOutcome:
        try:
            outcome = await run_attempt(spec, cancel=cancel, on_phase=lambda phase: self._phase(status, phase))
        finally:
            self._running.pop(spec.attempt_id, None)  # its place is free before the outcome is applied
        await self._deliver(outcome)
        return outcome

    def _phase(self, status: RunningAttempt, phase: str) -> None:
        status.phase = phase
        if self.on_phase is not None:
            try:
                self.on_phase(status)
            except Exception:
                log.exception("the phase listener failed on attempt %s", status.attempt_id)

    async def cancel(self, attempt_id: str) -> bool:
        """Stop a running attempt and wait until its processes are gone; its outcome is "cancelled"."""
        entry = self._running.get(attempt_id)
        if entry is None:
            return False
        _, cancel, task = entry
        cancel.set()
        await asyncio.wait([task])
        return True

    def running(self, project: str | None = None) -> list[RunningAttempt]:
        return [status for status, _, _ in self._running.values() if project in (None, status.project)]

    async def status(self) -> str:
        return f"local: {len(self._running)}/{self.max_parallel} attempts running"

    async def check(self) -> None:
        """Nothing to reach: local attempts can always start."""

    async def close(self) -> None:
        await asyncio.gather(*(self.cancel(i) for i in list(self._running)))
