"""The agent loop: which story runs next, on which runner, and what its outcome does.

One process runs the agents (the bot, or `orch run`): it holds `data_dir/agents.lock` while they run, so two
processes never work the same story. The loop wakes when a command asks (`kick`: a sprint started or resumed,
a ticket resolved, a story retried) and every POLL_S seconds anyway, so work started from another process (the
CLI beside the bot) is picked up too. Each round:
- a project whose sprint stopped being active (paused from the CLI, say) has its running attempts stopped;
- free places go to ready stories (sprint_work.ready_stories), one project at a time in turn, the project
  with the fewest running attempts first: a project with many stories cannot starve another;
  `max_parallel` in all, `max_parallel_per_project` each.

An attempt: `begin_attempt` records it (the story goes in_progress) and commits that, the story's worktree
is prepared (worktree.py) and the runner starts it. Its outcome comes back as data: a "done" story branch is
merged into the sprint branch first (a conflict turns it into a failed attempt), then `apply_outcome` records
it under the project's lock, and progress events go to the front-ends (`StoryProgress`).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import Busy, OrchError
from ..events import Event
from ..models import State, StoryStatus
from . import sprint_work
from .records import runner_id
from .runner import AttemptOutcome, AttemptSpec, Outcome, Runner, RunningAttempt, attempt_log_path
from .runners import make_runner
from .worktree import Worktrees, sprint_branch

log = logging.getLogger(__name__)

POLL_S = 5.0
BY = "orchestrator"
LOCK_NAME = "agents.lock"
STORY_RUN = "story_run"  # the kind of the progress events


@dataclass(frozen=True)
class StoryProgress:
    """One step of a story's run, as the front-ends show it (one message per story run, edited in place)."""
    story: str
    title: str
    sprint: str
    phase: str  # running, testing, done, retrying, waiting, blocked, stopped, recorded
    attempt: int
    max_attempts: int
    summary: str = ""
    tests_passed: int | None = None
    tests_failed: int | None = None
    branch: str = ""
    duration_s: float | None = None
    sprint_to_review: bool = False  # this step finished the sprint's last story: the sprint is ready for review


@dataclass
class _Launch:
    project: str
    story: str
    title: str = ""
    sprint: str = ""
    attempt: int = 0


class AgentScheduler:
    def __init__(self, orchestrator, runner: Runner | None = None) -> None:
        self.orch = orchestrator
        self.config = orchestrator.config
        self.runner: Runner = runner or make_runner(self.config, self._on_outcome, self._on_phase)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lock: FileLock | None = None
        self._turns = 0
        self._served: dict[str, int] = {}  # project -> the turn it last got a place (fairness among equals)
        self._launches: dict[str, _Launch] = {}  # attempt ID -> what the progress events need
        self._busy: set[tuple[str, str]] = set()  # (project, story) being started or finished right now
        self._quiet_errors: dict[str, str] = {}  # project -> the last error logged for it (logged once)

    @property
    def running_here(self) -> bool:
        return self._task is not None

    # -- life cycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Run the agents from this process: take the lock, close attempts a stopped process left running,
        remove stale worktrees, and start the loop. Busy if another process runs them."""
        if self._task is not None:
            return
        data_dir = self.config.orchestrator.data_dir
        lock = FileLock(str(data_dir / LOCK_NAME), timeout=0, thread_local=False)  # released by another thread
        try:
            await asyncio.to_thread(lambda: (data_dir.mkdir(parents=True, exist_ok=True), lock.acquire()))
        except Timeout:
            raise Busy("Another process (the bot, or `orch run`) runs the agents already.",
                       "Stop it first, or let it do the work.") from None
        self._lock = lock
        for entry in await self.orch.project_entries():
            if self._settings(entry.name).enabled:
                await self._recover(entry.name, entry.path)
            try:
                await self.orch.planner.recover(entry.name)
            except Exception as exc:  # its plans will say so again when they run
                log.warning("project=%s plans could not recover: %s", entry.name, exc)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="agent loop")

    async def close(self) -> None:
        """Stop the loop and every running attempt (their stories go back to todo)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.runner.close()
        if self._lock is not None:
            await asyncio.to_thread(self._lock.release)
            self._lock = None

    def kick(self) -> None:
        """Look for work now (a command made some)."""
        self._wake.set()

    async def stop_project(self, project: str) -> int:
        """Stop the project's running attempts (pause); returns how many. Their outcomes are applied."""
        return await self.runner.cancel_project(project)

    def running(self, project: str | None = None) -> list[RunningAttempt]:
        return self.runner.running(project)

    async def check(self, project: str) -> None:
        """Raise if the project's agents could not run now (the agent queue is down): before a sprint starts."""
        if self._settings(project).enabled:
            await self.runner.check()

    async def until_idle(self, poll_s: float = 0.2) -> None:
        """Return once nothing runs and no story is ready (`orch run --until-idle`; after `start`)."""
        while True:
            self.kick()
            await asyncio.sleep(poll_s)
            if not self.runner.running_count() and not self._busy and not await self._anything_ready():
                return

    # -- the loop ----------------------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._round()
            except Exception:  # never let one bad round end the agents
                log.exception("agent round failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=POLL_S)
            except asyncio.TimeoutError:
                pass

    async def _round(self) -> None:
        await self.orch.planner.round()  # plans requested elsewhere, or whose question was answered
        ready: dict[str, list[str]] = {}
        for entry in await self.orch.project_entries():
            name = entry.name
            if not self._settings(name).enabled:
                continue
            try:
                state, stories = await self.orch.read(name, lambda c: (c.status.state, sprint_work.ready_stories(c)))
            except Exception as exc:  # one project's trouble is its own: logged once, the others go on
                if self._quiet_errors.get(name) != str(exc):
                    log.warning("project=%s agents skip it: %s", name, exc)
                self._quiet_errors[name] = str(exc)
                continue
            self._quiet_errors.pop(name, None)
            if state not in (State.SPRINT_ACTIVE, State.BLOCKED) and self.runner.running_count(name):
                await self.stop_project(name)  # paused (or ended) elsewhere: stop its agents
            ready[name] = [s for s in stories if (name, s) not in self._busy]
        while self.runner.free() > 0:
            waiting = [p for p, stories in ready.items() if stories and self._room(p)]
            if not waiting:
                return
            # Fewest running first; among equals, the one served longest ago.
            project = min(waiting, key=lambda p: (self.runner.running_count(p), self._served.get(p, 0)))
            self._turns += 1
            self._served[project] = self._turns
            await self._launch(project, ready[project].pop(0))

    def _room(self, project: str) -> bool:
        starting = sum(1 for p, _ in self._busy if p == project)
        return self.runner.running_count(project) + starting < self._settings(project).max_parallel_per_project

    async def _anything_ready(self) -> bool:
        for entry in await self.orch.project_entries():
            if self._settings(entry.name).enabled:
                try:
                    if await self.orch.read(entry.name, sprint_work.ready_stories):
                        return True
                except Exception:
                    continue
        return False

    # -- one attempt ---------------------------------------------------------------------------------------
    async def _launch(self, project: str, story: str) -> None:
        key = (project, story)
        self._busy.add(key)
        try:
            begun = await self.orch.change(project, "agent_run", BY, lambda c: sprint_work.begin_attempt(c, story))
            if begun is None:
                return
            runs, record, task = begun
            entry = await self.orch.entry(project)
            settings = self._settings(project)
            launch = _Launch(project, story, task.story.title, record.sprint, record.attempt)
            ident = runner_id(project, record.id)
            self._launches[ident] = launch
            try:
                sprint = await self.orch.read(project, lambda c: c.sprint(record.sprint))
                trees = self._worktrees(project, entry.path)
                base = await asyncio.to_thread(trees.make_sprint_branch, record.sprint,
                                               sprint.base_commit or "HEAD")
                workdir = await asyncio.to_thread(trees.prepare_story, story, base, fresh=runs.fresh)
            except (OrchError, OSError) as exc:
                await self._on_outcome(AttemptOutcome(
                    attempt_id=ident, project=project, story=story, attempt=record.attempt,
                    outcome=Outcome.crashed, summary=f"the story's worktree could not be prepared: {exc}"))
                return
            o = self.config.orchestrator
            spec = AttemptSpec(
                attempt_id=ident, project=project, story=story, command=settings.command,
                input=task.model_copy(update={"workdir": str(workdir), "test_command": settings.test_command}),
                repo=entry.path, workdir=workdir, branch=record.branch, base=base,
                test_command=settings.test_command, timeout_s=settings.timeout_s, env=settings.env,
                log_path=attempt_log_path(o.data_dir, project, story, record.id),
                author_name=o.author_name, author_email=o.author_email)
            self._progress(launch, "running")
            self.runner.submit(spec)
        finally:
            self._busy.discard(key)

    def _on_phase(self, status: RunningAttempt) -> None:
        if status.phase == "testing" and (launch := self._launches.get(status.attempt_id)):
            self._progress(launch, "testing")

    async def _on_outcome(self, outcome: AttemptOutcome) -> None:
        project, story = outcome.project, outcome.story
        key = (project, story)
        self._busy.add(key)
        try:
            settings = self._settings(project)
            entry = await self.orch.entry(project)
            sprint = self._launches.get(outcome.attempt_id, _Launch(project, story)).sprint
            trees = self._worktrees(project, entry.path)
            if outcome.outcome is Outcome.done and sprint:
                outcome = await self._merge(trees, outcome, sprint)
            became, to_review = await self.orch.change(project, "agent_run", BY, lambda c: (
                sprint_work.apply_outcome(c, outcome, settings.max_attempts), c.cascade.sprint_to_review))
            if became is None:
                return  # a duplicate or late delivery: applied once already
            if became == "done":
                await asyncio.to_thread(trees.remove_story, story)
            launch = self._launches.pop(outcome.attempt_id, None) or _Launch(project, story, "", sprint,
                                                                               outcome.attempt)
            self._progress(launch, became, outcome, to_review)
            log.info("project=%s story=%s attempt=%s outcome=%s -> %s (%.1f s)", project, story, outcome.attempt_id,
                     outcome.outcome.value, became, outcome.duration_s)
        finally:
            self._busy.discard(key)
            self.kick()

    async def _merge(self, trees: Worktrees, outcome: AttemptOutcome, sprint: str) -> AttemptOutcome:
        message = f"Merge {outcome.story} into {sprint_branch(sprint)} (agent attempt {outcome.attempt})"
        try:
            merged = await asyncio.to_thread(trees.merge_story, outcome.story, sprint_branch(sprint), message)
        except (OrchError, OSError, Timeout) as exc:
            return outcome.model_copy(update={"outcome": Outcome.crashed, "summary": f"the merge failed: {exc}"})
        if merged.merged:
            return outcome
        return outcome.model_copy(update={
            "outcome": Outcome.conflict,
            "summary": f"{outcome.story} does not merge into {sprint_branch(sprint)}: conflicts in "
                       f"{', '.join(merged.conflicts[:5])}; the next attempt starts on the current sprint branch"})

    async def _recover(self, project: str, repo: Path) -> None:
        try:
            closed = await self.orch.change(project, "agent_run", BY, sprint_work.close_interrupted)
            running = set(await self.orch.read(project, _in_progress))
            await asyncio.to_thread(self._worktrees(project, repo).prune, running)
        except Exception as exc:  # its agents will say so again when they run
            log.warning("project=%s agents could not recover: %s", project, exc)
            return
        if closed:
            log.info("project=%s attempts interrupted by a restart, to run again: %s", project, ", ".join(closed))

    # -- helpers -------------------------------------------------------------------------------------------------
    def _settings(self, project: str):
        return self.config.agents.for_project(project)

    def _worktrees(self, project: str, repo: Path) -> Worktrees:
        o = self.config.orchestrator
        return Worktrees(repo, o.data_dir, project, o.author_name, o.author_email)

    def _progress(self, launch: _Launch, phase: str, outcome: AttemptOutcome | None = None,
                  to_review: bool = False) -> None:
        o = outcome
        self.orch.events.publish(Event(project=launch.project, kind=STORY_RUN, text=f"{launch.story}: {phase}",
                                       detail=StoryProgress(
            story=launch.story, title=launch.title, sprint=launch.sprint, phase=phase, attempt=launch.attempt,
            max_attempts=self._settings(launch.project).max_attempts, summary=o.summary if o else "",
            tests_passed=o.tests_passed if o else None, tests_failed=o.tests_failed if o else None,
            branch=f"orch/{launch.story}", duration_s=o.duration_s if o else None, sprint_to_review=to_review)))


def _in_progress(c) -> list[str]:
    return [s.id for s in c.stories() if s.status is StoryStatus.in_progress]
