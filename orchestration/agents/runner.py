"""The runner interface: what the orchestrator hands over (AttemptSpec) and gets back (AttemptOutcome).

All agent execution goes through a `Runner`, so a later runner can execute attempts on other machines
(issue 10: Celery). The runner only executes; the orchestrator's scheduler decides what runs next (fairness
between projects is its job; it asks `free()` and `running_count(project)` first), prepares the worktree
(worktree.Worktrees.prepare_story), and applies each AttemptOutcome to .orch-state under the project lock,
idempotently by `attempt_id`. Both are plain pydantic data, so they cross a process or a queue as JSON.

Wiring (sketch):
    runner = LocalRunner(max_parallel=config.agents.max_parallel, on_outcome=orchestrator.apply_outcome)
    runner.submit(AttemptSpec(...))        # returns at once; on_outcome gets the AttemptOutcome later
    await runner.cancel(attempt_id)         # /sprint pause: outcome "cancelled", not a failure
    runner.running()                        # /sprint status: story, attempt, phase, elapsed
"""
from __future__ import annotations

import asyncio
import inspect
import logging

import time
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Awaitable, Callable, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..wording import plural
from .protocol import CodeInput


log = logging.getLogger(__name__)


class Outcome(str, Enum):
    done = "done"  # answered done, and the test command passed (or there is none)
    question = "question"  # asked a question: open a ticket, the story waits for its answer
    failed = "failed"  # answered failed
    tests_failed = "tests_failed"  # answered done, but the test command failed (or timed out)
    timeout = "timeout"  # the agent ran past timeout_s and was killed
    crashed = "crashed"  # exited non-zero, or could not be started
    not_protocol = "not_protocol"  # its stdout does not end with a protocol reply
    policy = "policy"  # broke a rule of policy.py (the summary says which)
    conflict = "conflict"  # done, but its branch does not merge into the sprint branch (set by the scheduler)
    cancelled = "cancelled"  # stopped by the orchestrator (pause): not a failed attempt

    @property
    def counts_as_failure(self) -> bool:
        """Whether this attempt counts towards max_attempts."""
        return self not in (Outcome.done, Outcome.question, Outcome.cancelled)


class AttemptSpec(BaseModel):
    """Everything needed to run one attempt, on this machine or another."""
    model_config = ConfigDict(extra="forbid")
    attempt_id: str  # unique; the orchestrator applies an outcome once per attempt_id
    project: str
    story: str  # the story ID, S-<n>
    command: list[str] = Field(min_length=1)  # the agent command, an argument list (no shell)
    input: CodeInput  # written to the agent's stdin as JSON
    repo: Path  # the project's repository (the user's working tree): checked, never written
    workdir: Path  # the story's worktree, prepared by the orchestrator
    branch: str  # the story's branch, orch/S-<n>
    base: str  # the sprint branch the story's branch was made from, orch/sprint-NNN
    test_command: list[str] = Field(default_factory=list)  # empty: "done" is taken as it is
    timeout_s: float = Field(gt=0)  # for the agent, and again for the test run
    env: list[str] = Field(default_factory=list)  # names of variables passed through to the agent
    log_path: Path  # the attempt's full output (secrets scrubbed) goes here
    author_name: str  # the bot's git identity, for the commit of what the agent left uncommitted
    author_email: str
    grace_s: float = Field(5.0, ge=0)  # between SIGTERM and SIGKILL


class AttemptOutcome(BaseModel):
    """What happened, as plain data; the orchestrator (not the runner) applies it to .orch-state."""
    attempt_id: str
    project: str
    story: str
    attempt: int
    outcome: Outcome
    summary: str = ""  # the agent's summary, or why the attempt failed
    question: str = ""
    options: list[str] = Field(default_factory=list)
    tests_added: list[str] = Field(default_factory=list)
    tests_passed: int | None = None  # from the test output's "N passed, M failed" line, when it has one
    tests_failed: int | None = None
    output: str = ""  # the tail of the output (the test run's when tests ran), secrets scrubbed
    duration_s: float = 0.0
    branch: str = ""
    commit: str | None = None  # the story branch's tip after the attempt
    log_path: Path | None = None


class RunningAttempt(BaseModel):
    attempt_id: str
    project: str
    story: str
    attempt: int
    phase: str = "starting"  # starting, agent, testing, checking
    started_at: datetime
    started: float = Field(default_factory=time.monotonic, exclude=True)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


OutcomeHandler = Callable[[AttemptOutcome], Awaitable[None] | None]
LOGS = "logs"  # under data_dir


def attempt_log_path(data_dir: Path, project: str, story: str, attempt_id: str) -> Path:
    """Where an attempt's full output goes: <data_dir>/logs/<project>/<story>/<attempt_id>.log."""
    return data_dir / LOGS / project / story / f"{attempt_id}.log"


class RunnerFull(Exception):
    """submit() while all places are taken: the scheduler asks free() first."""


class RunnerBase:
    """What every runner shares: its places (`max_parallel`, `_running` by attempt ID), the start of an attempt's
    status, and telling `on_outcome` and `on_phase` (one place for it)."""

    def __init__(self, max_parallel: int, on_outcome: OutcomeHandler | None = None,
                 on_phase: Callable[[RunningAttempt], None] | None = None) -> None:
        self.max_parallel = max_parallel
        self.on_outcome = on_outcome
        self.on_phase = on_phase  # told when a running attempt enters a new phase (agent, testing, checking)
        self._running: dict = {}  # attempt ID -> the runner's own entry for it

    def _status(self, spec: AttemptSpec) -> RunningAttempt:
        """The status of an attempt about to start (raises ValueError if it runs already, RunnerFull if no place
        is free)."""
        if spec.attempt_id in self._running:
            raise ValueError(f"attempt {spec.attempt_id} is already running")
        if not self.free():
            raise RunnerFull(f"{plural(self.max_parallel, 'attempt')} running already")
        return RunningAttempt(attempt_id=spec.attempt_id, project=spec.project, story=spec.story,
                              attempt=spec.input.attempt, started_at=datetime.now(timezone.utc))

    def _set_phase(self, status: RunningAttempt, phase: str) -> None:
        status.phase = phase
        if self.on_phase is not None:
            try:
                self.on_phase(status)
            except Exception:
                log.exception("the phase listener failed on attempt %s", status.attempt_id)

    async def _deliver(self, outcome: AttemptOutcome) -> None:
        """Hand an outcome to `on_outcome` (sync or async); its failure is logged, never raised into the runner."""
        if self.on_outcome is None:
            return
        try:
            result = self.on_outcome(outcome)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("applying the outcome of attempt %s failed", outcome.attempt_id)

    def running(self, project: str | None = None) -> list[RunningAttempt]:
        raise NotImplementedError

    async def cancel(self, attempt_id: str) -> bool:
        raise NotImplementedError

    async def cancel_project(self, project: str) -> int:
        """Stop every running attempt of one project (/sprint pause); returns how many."""
        ids = [a.attempt_id for a in self.running(project)]
        await asyncio.gather(*(self.cancel(i) for i in ids))
        return len(ids)

    def running_count(self, project: str | None = None) -> int:
        return len(self.running(project))

    def free(self) -> int:
        return max(self.max_parallel - self.running_count(), 0)

    async def close(self) -> None:
        await asyncio.gather(*(self.cancel(i) for i in list(self._running)))


class Runner(Protocol):
    def submit(self, spec: AttemptSpec) -> Awaitable[AttemptOutcome]:
        """Start an attempt now (raises RunnerFull, or ValueError for an attempt_id already running).
        Its AttemptOutcome goes to the runner's outcome handler; the returned awaitable gives it too."""

    async def cancel(self, attempt_id: str) -> bool:
        """Stop a running attempt (its outcome is "cancelled"); False if it is not running."""

    async def cancel_project(self, project: str) -> int:
        """Stop every running attempt of one project (/sprint pause); returns how many."""

    def running(self, project: str | None = None) -> list[RunningAttempt]:
        """The attempts running now (of one project, or all)."""

    def running_count(self, project: str | None = None) -> int: ...

    def free(self) -> int:
        """How many more attempts may start now."""

    async def status(self) -> str:
        """One line for health: where attempts run and how that is now."""

    async def check(self) -> None:
        """Raise an OrchError saying why attempts could not start now (a Celery broker that is down)."""

    async def close(self) -> None:
        """Cancel everything still running and wait for it to stop."""
