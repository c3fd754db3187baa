"""Running planners: one process per run of an epic's plan (`run_plan`), and the runs of this process (`Planner`).

A run is one planner process with the same rules as a story's attempt (attempt.run_process: no shell, a session
of its own, the environment allowlist, secrets scrubbed, `timeout_s`, the log under data_dir/logs), in a detached
read-only checkout of the commit the user has checked out (worktree.prepare_plan); with the Celery runner it
runs on a worker, in its clone (runners.run_plan, worker.plan_here). A run that changes a file or
a ref is refused as a policy breach (policy.check_read_only). The rules of what a run's outcome does to the plan
are planning.py's; this module never writes .orch-state/ itself (it goes through `Orchestrator.change`).
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from pathlib import Path

from pydantic import BaseModel, Field

from ..events import Event
from . import policy, protocol, runners
from .attempt import AttemptLog, _tail, run_process
from .planning import PlanOutcome, PlanView, apply_outcome, claim, claimable, release_interrupted
from .runner import Outcome, attempt_log_path
from .sprint_work import context_of
from .worktree import Worktrees, bot_env

PLAN_READY = "plan"  # the kind of the event told when a run's outcome is applied (detail: its PlanView)
BY = "orchestrator"
log = logging.getLogger(__name__)


class PlanSpec(BaseModel):
    run_id: str
    project: str
    epic: str
    command: list[str] = Field(min_length=1)
    input: protocol.PlanInput
    repo: Path
    data_dir: Path
    timeout_s: float = Field(gt=0)
    env: list[str] = Field(default_factory=list)
    log_path: Path
    author_name: str
    author_email: str
    grace_s: float = 5.0
    commit: str | None = None  # what is checked out for the planner; None: the repository's HEAD


async def run_plan(spec: PlanSpec, cancel: asyncio.Event | None = None) -> PlanOutcome:
    """One planner run, end to end; never raises for what the planner does (an error of ours is "crashed")."""
    started = time.monotonic()
    secrets = policy.secret_values()
    log_to = None
    base = dict(run_id=spec.run_id, project=spec.project, epic=spec.epic)
    try:
        log_to = await asyncio.to_thread(AttemptLog, spec.log_path, policy.Scrubber(secrets))
        fields = await _run(spec, secrets, log_to, cancel)
    except Exception as exc:  # git failing, the disk full: the run failed, the orchestrator goes on
        fields = dict(outcome=Outcome.crashed, summary=f"the orchestrator could not run the planner: {exc}")
    fields["summary"] = policy.Scrubber(secrets).scrub(fields.get("summary", ""))
    outcome = PlanOutcome(**base, **fields, duration_s=round(time.monotonic() - started, 3))
    if log_to is not None:
        await asyncio.to_thread(log_to.note, f"outcome {outcome.outcome.value}: {outcome.summary}")
        await asyncio.to_thread(log_to.close)
    return outcome


async def _run(spec: PlanSpec, secrets: list[str], log_to: AttemptLog, cancel: asyncio.Event | None) -> dict:
    trees = Worktrees(spec.repo, spec.data_dir, spec.project, spec.author_name, spec.author_email)
    git_env = bot_env(spec.author_name, spec.author_email)
    before = await asyncio.to_thread(policy.snapshot, spec.repo, git_env)
    workdir, head = await asyncio.to_thread(trees.prepare_plan, spec.epic, spec.commit)
    try:
        task = spec.input.model_copy(update={"workdir": str(workdir)})
        env = policy.agent_env(spec.env, policy.task_vars(task))
        done = await run_process(spec.command, cwd=workdir, env=env, stdin=task.to_stdin(), timeout_s=spec.timeout_s,
                                 grace_s=spec.grace_s, secrets=secrets, log_to=log_to, cancel=cancel)
        fields: dict = dict(output=_tail(done))
        if done.error:
            fields.update(outcome=Outcome.crashed, summary=done.error)
        elif done.cancelled:
            fields.update(outcome=Outcome.cancelled, summary="stopped by the orchestrator")
        elif done.timed_out:
            fields.update(outcome=Outcome.timeout, summary=f"the planner ran longer than {spec.timeout_s:g} s")
        elif done.returncode != 0:
            fields.update(outcome=Outcome.crashed, summary=f"the planner exited with status {done.returncode}")
        else:
            try:
                reply = protocol.parse_reply(done.stdout)
            except protocol.NotProtocol as exc:
                fields.update(outcome=Outcome.not_protocol, summary=exc.reason)
            else:
                fields.update(outcome=Outcome(reply.status), summary=reply.summary, plan=reply.plan,
                              stories=reply.stories, question=reply.question, options=reply.options)
        breach = await asyncio.to_thread(policy.check_read_only, spec.repo, before, workdir=workdir, head=head,
                                         env=git_env)
        if breach:
            fields.update(outcome=Outcome.policy, summary=breach)
        return fields
    finally:
        await asyncio.to_thread(trees.remove_plan, spec.epic)


class Planner:
    """Runs planners from this process: `launch` claims an epic's requested plan (under the project lock, so
    one process runs it), runs it and applies its outcome; `round` launches every claimable plan (the agent
    scheduler calls it each round, so a plan whose question was answered goes on)."""

    def __init__(self, orchestrator) -> None:
        self.orch = orchestrator
        self._runs: dict[tuple[str, str], tuple[asyncio.Task, asyncio.Event]] = {}

    def command(self, project: str) -> list[str]:
        settings = self.orch.config.agents.for_project(project)
        return settings.planner_command or settings.command

    def task(self, project: str, epic: str) -> asyncio.Task | None:
        run = self._runs.get((project, epic))
        return run[0] if run else None

    def launch(self, project: str, epic: str) -> asyncio.Task | None:
        """Run the epic's requested plan here (its task; the one already running, if any). The task claims the
        plan first and ends with None when it is not claimable (another process took it)."""
        key = (project, epic)
        if key not in self._runs and self.command(project):
            cancel = asyncio.Event()
            # The run belongs to the orchestrator, not to the command that asked for it: a context of its own.
            run = contextvars.Context().run(asyncio.get_running_loop().create_task,
                                            self._run(project, epic, cancel), name=f"plan {project}/{epic}")
            self._runs[key] = (run, cancel)
            run.add_done_callback(lambda _: self._runs.pop(key, None))
        return self.task(project, epic)

    async def _run(self, project: str, epic: str, cancel: asyncio.Event) -> PlanView | None:
        try:
            claimed = await self.orch.change(project, "planner", BY, lambda c: claim(c, epic, context_of))
            if claimed is None:
                return None
            ident, task = claimed
            entry = await self.orch.entry(project)
            o, settings = self.orch.config.orchestrator, self.orch.config.agents.for_project(project)
            spec = PlanSpec(run_id=ident, project=project, epic=epic, command=self.command(project), input=task,
                            repo=entry.path, data_dir=o.data_dir, timeout_s=settings.timeout_s, env=settings.env,
                            log_path=attempt_log_path(o.data_dir, project, epic, ident), author_name=o.author_name,
                            author_email=o.author_email)
            outcome = await runners.run_plan(self.orch.agents.runner, self.orch.config, spec, cancel)
            if outcome.outcome is Outcome.cancelled:  # stopped with the process: it runs again at the next start
                return None
            result = await self.orch.change(project, "planner", BY, lambda c: apply_outcome(c, outcome))
        except Exception:  # logged; the plan stays as it was recorded (a restart runs a "planning" one again)
            log.exception("project=%s epic=%s: the planner run failed", project, epic)
            return None
        log.info("project=%s epic=%s run=%s outcome=%s (%.1f s)", project, epic, ident, outcome.outcome.value,
                 outcome.duration_s)
        if result is not None:
            self.orch.events.publish(Event(project=project, kind=PLAN_READY, text=f"{epic}: {result.action}",
                                           detail=result))
        return result

    async def round(self) -> None:
        for entry in await self.orch.project_entries():
            if not self.command(entry.name):
                continue
            try:
                for epic in await self.orch.read(entry.name, claimable):
                    self.launch(entry.name, epic)
            except Exception as exc:  # one project's trouble is its own
                log.warning("project=%s plans skipped: %s", entry.name, exc)

    async def recover(self, project: str) -> None:
        """At start, by the process that runs agents: plans a stopped process was running are requested again."""
        if self.command(project):
            await self.orch.change(project, "planner", BY, release_interrupted)

    async def close(self) -> None:
        runs = list(self._runs.values())
        for _, cancel in runs:
            cancel.set()
        await asyncio.gather(*(task for task, _ in runs), return_exceptions=True)


