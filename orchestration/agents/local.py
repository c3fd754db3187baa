"""LocalRunner: attempts as subprocesses of this process, on its event loop, at most `max_parallel` at once.

It only executes: the scheduler decides what runs (and shares the places fairly between projects, using
`free()` and `running_count(project)`), and the orchestrator applies each outcome (`on_outcome`).
"""
from __future__ import annotations

import asyncio

from .attempt import run_attempt
from .runner import AttemptOutcome, AttemptSpec, RunnerBase, RunningAttempt


class LocalRunner(RunnerBase):
    _running: dict[str, tuple[RunningAttempt, asyncio.Event, asyncio.Task[AttemptOutcome]]]

    def submit(self, spec: AttemptSpec) -> asyncio.Task[AttemptOutcome]:
        """Start the attempt now; returns its task (its result is the outcome, also given to on_outcome)."""
        status = self._status(spec)
        cancel = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._run(spec, status, cancel),
                                                      name=f"attempt {spec.attempt_id}")
        self._running[spec.attempt_id] = (status, cancel, task)
        return task

    async def _run(self, spec: AttemptSpec, status: RunningAttempt, cancel: asyncio.Event) -> AttemptOutcome:
        try:
            outcome = await run_attempt(spec, cancel=cancel, on_phase=lambda phase: self._set_phase(status, phase))
        finally:
            self._running.pop(spec.attempt_id, None)  # its place is free before the outcome is applied
        await self._deliver(outcome)
        return outcome

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
