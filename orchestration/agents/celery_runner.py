"""CeleryRunner: attempts run on worker machines (`orch worker`, worker.py), sent through a Celery broker (Redis).

The bot's side of the queue. submit() sends the AttemptSpec as JSON (task ID: a function of the attempt ID,
so a resend is recognisable) and watches its result off the event loop (the result backend is polled in
worker threads); the outcome goes to `on_outcome` once. cancel() revokes the task with terminate=True: the
worker stops the agent's process group. While the broker is down, sending and watching go on trying, so
queued work goes on when it is back; `check()` answers at once ("the agent queue is unreachable at ...").

The Celery app is set for long tasks (see the "Celery on Redis" traps in shared/GUIDE.md): acks_late with
reject_on_worker_lost (the attempt of a worker that dies runs again), prefetch 1, time limits from timeout_s
and a broker visibility timeout above them (or a running attempt would be handed to a second worker).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeout

from ..config import AgentSettings, without_password
from ..errors import OrchError
from ..wording import plural
from .runner import AttemptOutcome, AttemptSpec, Outcome, OutcomeHandler, RunnerBase, RunningAttempt
from .worktree import bot_env, run_git

log = logging.getLogger(__name__)

TASK = "orch.run_attempt"
PLAN_TASK = "orch.run_plan"  # a planner run in the worker's clone (worker.plan_here)
CLARITY_TASK = "orch.run_clarity"  # a clarity scorer's process (it needs no checkout)
GIT_SLACK_S = 120  # clone, fetch and push around an attempt, on the worker
POLL_S = 0.5  # how often the result of a running attempt is looked at
RETRY_S = 2.0  # between tries while the broker is down
STATUS_TIMEOUT_S = 1.0  # how long health waits for the workers' answers
RUNNING = "RUNNING"  # the task state a worker reports with {"phase": ...}
UNREACHABLE = (OSError, OperationalError, RedisConnectionError, RedisTimeout)  # the broker or backend is down


class AgentQueueUnreachable(OrchError):
    def __init__(self, url: str, why: object = "") -> None:
        super().__init__(f"The agent queue is unreachable at {without_password(url)}" + (f" ({why})." if why else "."),
                         "Start the broker (redis-server) or fix [agents] broker_url; commands that do not need "
                         "agents keep working.")


def time_limits(timeout_s: float) -> tuple[float, float]:
    """Celery's soft and hard time limits of one attempt: its agent and its test run may take timeout_s each;
    run_attempt enforces those itself, these are the backstop."""
    soft = 2 * timeout_s + GIT_SLACK_S
    return soft, soft + 30


def task_id(attempt_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"orch-attempt:{attempt_id}"))


def make_app(agents: AgentSettings) -> Celery:
    """The Celery app of the bot and of the workers: the same settings on both sides."""
    longest = max([agents.timeout_s, *(o.timeout_s for o in agents.projects.values() if o.timeout_s)])
    visibility = agents.visibility_timeout_s or int(time_limits(longest)[1]) + 60
    transport = {"visibility_timeout": visibility, "socket_connect_timeout": 5,
                 # how soon the attempt of a worker that vanished is handed out again, once visibility is over
                 "unacked_restore_interval": max(1, min(60, visibility // 4)), "unacked_restore_throttle": 1}
    app = Celery("orch-agents", broker=agents.broker_url, backend=agents.result_backend or agents.broker_url,
                 set_as_current=False)
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_default_queue=agents.queue, task_track_started=True, broker_transport_options=transport,
        task_serializer="json", result_serializer="json", accept_content=["json"], result_expires=7 * 86_400,
        redis_socket_connect_timeout=5, broker_connection_retry_on_startup=True)
    return app


@dataclass
class _InFlight:
    status: RunningAttempt
    task_id: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


class CeleryRunner(RunnerBase):
    _running: dict[str, _InFlight]

    def __init__(self, agents: AgentSettings, on_outcome: OutcomeHandler | None = None,
                 on_phase: Callable[[RunningAttempt], None] | None = None) -> None:
        super().__init__(agents.max_parallel, on_outcome, on_phase)
        self.agents = agents
        self.app = make_app(agents)
        self._url = agents.broker_url

    # -- the Runner interface ------------------------------------------------------------------------------------
    def submit(self, spec: AttemptSpec) -> asyncio.Task[AttemptOutcome]:
        entry = _InFlight(self._status(spec), task_id(spec.attempt_id))
        self._running[spec.attempt_id] = entry
        entry.task = asyncio.get_running_loop().create_task(self._run(spec, entry), name=f"attempt {spec.attempt_id}")
        return entry.task

    async def cancel(self, attempt_id: str) -> bool:
        """Revoke the attempt (a running one is terminated on its worker); its outcome is "cancelled"."""
        entry = self._running.get(attempt_id)
        if entry is None or entry.task is None:
            return False
        entry.stop.set()
        try:
            await asyncio.to_thread(self._revoke, entry.task_id)
        except Exception as exc:  # the broker is down: the worker cannot be told; the outcome is ignored later
            log.warning("attempt %s could not be revoked: %s", attempt_id, exc)
        await asyncio.wait([entry.task])
        return True

    def running(self, project: str | None = None) -> list[RunningAttempt]:
        return [e.status for e in self._running.values() if project in (None, e.status.project)]

    async def status(self) -> str:
        """The broker, the workers online with their queues and running attempts (asked at once, with a short
        time-out, in worker threads), and the places in use here."""
        ask = lambda what: asyncio.to_thread(self._connect_and, lambda conn: getattr(  # noqa: E731
            self.app.control.inspect(timeout=STATUS_TIMEOUT_S, connection=conn), what)() or {})
        try:
            queues, active = await asyncio.gather(ask("active_queues"), ask("active"))
        except Exception as exc:
            return f"celery: {AgentQueueUnreachable(self._url, _why(exc)).message}"
        online = "; ".join(f"{name} [{', '.join(q['name'] for q in queues.get(name, []))}] running "
                           f"{len(active.get(name, []))}" for name in sorted({*queues, *active}))
        return (f"celery at {without_password(self._url)}: {plural(len({*queues, *active}), 'worker')} online"
                f"{': ' if online else ''}{online}; {len(self._running)}/{self.max_parallel} attempts in flight")

    async def check(self) -> None:
        """Raise AgentQueueUnreachable unless the broker answers (a short try, in a worker thread)."""
        try:
            await asyncio.to_thread(self._connect_and, lambda conn: None)
        except Exception as exc:
            raise AgentQueueUnreachable(self._url, _why(exc)) from None

    # -- one attempt ---------------------------------------------------------------------------------------------
    async def _run(self, spec: AttemptSpec, entry: _InFlight) -> AttemptOutcome:
        try:
            await asyncio.to_thread(_free_branch, spec)
            sent = await self._until(entry, lambda: self._send(spec, entry.task_id), "sending")
            outcome = await self._watch(spec, entry) if sent else None
        except Exception as exc:  # ours, never the agent's: reported as an outcome
            log.exception("attempt %s: the Celery runner failed", spec.attempt_id)
            outcome = outcome_for(spec, Outcome.crashed, f"the agent queue failed: {_why(exc)}")
        finally:
            self._running.pop(spec.attempt_id, None)
        if outcome is None or entry.stop.is_set():
            outcome = outcome_for(spec, Outcome.cancelled, "stopped by the orchestrator")
        await self._deliver(outcome)
        return outcome

    async def _until(self, entry: _InFlight, call: Callable, what: str):
        """`call` in a worker thread until it works, every RETRY_S while the broker is down; None once stopped."""
        warned = False
        while not entry.stop.is_set():
            try:
                return await asyncio.to_thread(call)
            except UNREACHABLE as exc:
                if not warned:
                    log.warning("attempt %s: %s waits for the agent queue: %s", entry.status.attempt_id, what,
                                AgentQueueUnreachable(self._url, _why(exc)).message)
                    warned = True
            try:
                await asyncio.wait_for(entry.stop.wait(), RETRY_S)
            except asyncio.TimeoutError:
                pass
        return None

    def _send(self, spec: AttemptSpec, ident: str) -> bool:
        soft, hard = time_limits(spec.timeout_s)
        repo_url = self.repo_url(spec.project, spec.repo)

        def send(conn) -> None:
            self.app.AsyncResult(ident).forget()  # a result left by an earlier run of this ID is not this one's
            self.app.send_task(TASK, args=[spec.model_dump(mode="json"), repo_url], task_id=ident,
                               queue=self.agents.queue, soft_time_limit=soft, time_limit=hard, connection=conn,
                               retry=False)
        self._connect_and(send)
        return True

    async def _watch(self, spec: AttemptSpec, entry: _InFlight) -> AttemptOutcome | None:
        while True:
            meta = await self._until(entry, lambda: self.app.backend.get_task_meta(entry.task_id), "watching")
            if meta is None:
                return None  # stopped
            state, result = meta.get("status"), meta.get("result")
            if state == "SUCCESS":
                return AttemptOutcome.model_validate(result)
            if state == "FAILURE":
                kind = Outcome.timeout if "TimeLimitExceeded" in type(result).__name__ else Outcome.crashed
                return outcome_for(spec, kind, f"the worker failed: {_why(result)}")
            if state == "REVOKED":
                return None
            if state == RUNNING and isinstance(result, dict) and result.get("phase") != entry.status.phase:
                self._set_phase(entry.status, str(result.get("phase")))
            try:
                await asyncio.wait_for(entry.stop.wait(), POLL_S)
                return None
            except asyncio.TimeoutError:
                pass

    # -- other runs: planners and clarity scorers --------------------------------------------------------------
    def repo_url(self, project: str, repo: Path) -> str:
        """Where workers fetch the project from: [agents.projects.<name>] repo_url, else its path."""
        override = self.agents.projects.get(project)
        return override.repo_url if override and override.repo_url else str(repo)

    async def call(self, name: str, args: list, *, time_limit_s: float, cancel: asyncio.Event | None = None,
                   wait_s: float | None = None) -> dict | None:
        """The result of one task run by a worker, watched off the event loop; None once `cancel` is set or
        `wait_s` has passed (the task is revoked then). Raises AgentQueueUnreachable when it cannot be sent
        and OrchError when the worker failed; while the backend is down, watching goes on."""
        ident = str(uuid.uuid4())
        send = lambda conn: self.app.send_task(  # noqa: E731
            name, args=args, task_id=ident, queue=self.agents.queue, soft_time_limit=time_limit_s,
            time_limit=time_limit_s + 30, connection=conn, retry=False)
        try:
            await asyncio.to_thread(self._connect_and, send)
        except UNREACHABLE as exc:
            raise AgentQueueUnreachable(self._url, _why(exc)) from None
        stop, deadline = cancel or asyncio.Event(), None if wait_s is None else time.monotonic() + wait_s
        try:
            while deadline is None or time.monotonic() < deadline:
                try:
                    meta = await asyncio.to_thread(self.app.backend.get_task_meta, ident)
                except UNREACHABLE:
                    meta = {}
                if meta.get("status") == "SUCCESS":
                    await asyncio.to_thread(self._try, self.app.AsyncResult(ident).forget)  # read once, kept nowhere
                    return meta["result"]
                if meta.get("status") in ("FAILURE", "REVOKED"):
                    raise OrchError(f"The worker failed: {_why(meta.get('result'))}.")
                try:
                    await asyncio.wait_for(stop.wait(), POLL_S)
                    break
                except asyncio.TimeoutError:
                    pass
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self._try, self._revoke, ident))
            raise
        await asyncio.to_thread(self._try, self._revoke, ident)
        return None

    @staticmethod
    def _try(call: Callable, *args) -> None:
        try:
            call(*args)
        except Exception as exc:  # the broker is down: the task is dropped by no one, its result read by no one
            log.warning("%s failed: %s", getattr(call, "__name__", call), _why(exc))

    def _revoke(self, ident: str) -> None:
        self._connect_and(lambda conn: self.app.control.revoke(ident, terminate=True, signal="SIGTERM",
                                                               connection=conn))

    def _connect_and(self, fn: Callable):
        """fn(connection) on a connection made with one short try: never kombu's endless retry."""
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
            return fn(conn)


def _free_branch(spec: AttemptSpec) -> None:
    """The worker pushes the story's branch back into the project's repository, which git refuses while a
    worktree has it checked out: the bot keeps no worktree of a story that runs elsewhere (the branch stays)."""
    env = bot_env(spec.author_name, spec.author_email)
    run_git(spec.repo, "worktree", "remove", "--force", "--force", str(spec.workdir), env=env, check=False)
    run_git(spec.repo, "worktree", "prune", env=env, check=False)


def outcome_for(spec: AttemptSpec, kind: Outcome, summary: str) -> AttemptOutcome:
    return AttemptOutcome(attempt_id=spec.attempt_id, project=spec.project, story=spec.story,
                          attempt=spec.input.attempt, outcome=kind, summary=summary, branch=spec.branch)


def _why(exc: object) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
