"""The worker side of the Celery runner: `orch worker` executes the attempts a CeleryRunner sends.

One attempt on a worker (`run_here`):
1. The project's repository is cloned once into this worker's folder (`<data_dir>/worker/<node>/repos/`) from
   the task's repo URL ([agents.projects.<name>] repo_url, else the repository's path on shared storage), and
   the sprint and story branches are fetched from it (the bot has made them).
2. A worktree of the story branch is made there (worktree.Worktrees), and the spec is rewritten for this
   machine (repo, workdir, log); run_attempt runs it as the local runner would: same protocol, policy and
   environment allowlist (the allowlisted variables come from this worker's environment).
3. The story branch is pushed back to the project's repository (--force-with-lease: never over a push made
   since this attempt fetched it), so that the bot merges it; the AttemptOutcome goes back as JSON.

Planner runs and clarity scorer runs come here too (runners.run_plan, runners.run_clarity): a plan runs in a
detached read-only checkout of the commit the bot names, fetched into the same clone (`plan_here`: planner.run_plan
with its read-only check); a clarity scorer runs in the data folder and needs no checkout.

A revoke (pause) sends SIGTERM to the pool process running the task: it stops the agent's process group
(run_attempt's `cancel`) and answers "cancelled". Nothing here writes .orch-state/: the bot applies outcomes.

Each worker machine needs: this package, git, the agent command at the path the bot's config names (and what
the agent needs: its CLI, the variables named in [agents] env), the project's test tools, git access to each
project's repo_url with the right to push orch/* branches, and the broker URL (ORCH_BROKER_URL).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import signal
import threading
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from filelock import FileLock

from ..config import Config
from ..errors import ConfigError, OrchError
from .attempt import run_attempt
from .celery_runner import CLARITY_TASK, PLAN_TASK, RUNNING, TASK, make_app, outcome_for
from .planner import PlanSpec, run_plan
from .planning import PlanOutcome
from .records import record_id
from .runner import AttemptOutcome, AttemptSpec, Outcome, attempt_log_path
from .runners import clarity_here
from .worktree import Worktrees, bot_env, run_git

log = logging.getLogger(__name__)

T = TypeVar("T")
WORKER_DIR = "worker"  # under data_dir: one folder per worker node (two workers may share a machine)


def worker_app(config: Config) -> Celery:
    """The Celery app with the attempt, plan and clarity tasks, run by `orch worker`."""
    if not config.agents.broker_url:
        raise ConfigError("orch worker needs the broker: set [agents] broker_url or ORCH_BROKER_URL.")
    app = make_app(config.agents)
    data_dir = config.orchestrator.data_dir

    @app.task(name=TASK, bind=True)
    def run(task, spec: dict, repo_url: str) -> dict:
        ident = task.request.id  # the request is thread-local, and run_attempt tells phases from its own thread
        phase = lambda p: task.update_state(ident, state=RUNNING, meta={"phase": p})  # noqa: E731
        outcome = run_here(AttemptSpec.model_validate(spec), repo_url, _home(data_dir, task), phase)
        return outcome.model_dump(mode="json")

    @app.task(name=PLAN_TASK, bind=True)
    def plan(task, spec: dict, repo_url: str, commit: str) -> dict:
        return plan_here(PlanSpec.model_validate(spec), repo_url, commit, _home(data_dir, task)).model_dump(mode="json")

    @app.task(name=CLARITY_TASK)
    def clarity(argv: list[str], stdin: str, env_names: list[str], task_vars: dict, timeout_s: float,
                grace_s: float) -> dict:
        """A clarity scorer's run here: this worker's allowlisted environment and secrets, cwd its data folder."""
        data_dir.mkdir(parents=True, exist_ok=True)
        done = asyncio.run(clarity_here(data_dir, argv, stdin.encode(), env_names, task_vars, timeout_s, grace_s))
        return dataclasses.asdict(done)

    return app


def _home(data_dir: Path, task) -> Path:
    return data_dir / WORKER_DIR / re.sub(r"[^A-Za-z0-9@._-]", "_", task.request.hostname or "worker")


def plan_here(spec: PlanSpec, repo_url: str, commit: str, home: Path) -> PlanOutcome:
    """One planner run on this machine: the commit the bot named is fetched into this worker's clone, and
    run_plan runs there as on the bot (a detached read-only checkout of it, the read-only check on this clone)."""
    env = bot_env(spec.author_name, spec.author_email)
    try:
        clone = _clone(spec.project, repo_url, home, env)
        with FileLock(str(clone.parent / f"{spec.project}.lock")):
            run_git(clone, "fetch", "--quiet", "origin", commit, env=env)
    except (OrchError, OSError) as exc:
        return PlanOutcome(run_id=spec.run_id, project=spec.project, epic=spec.epic, outcome=Outcome.crashed,
                           summary=f"the worker could not check out {commit[:12]}: {exc}")
    local = spec.model_copy(update={"repo": clone, "data_dir": home, "commit": commit, "log_path": attempt_log_path(
        home, spec.project, spec.epic, spec.run_id)})
    return _run_stoppable(lambda cancel: run_plan(local, cancel), f"plan {spec.run_id}")


def run_here(spec: AttemptSpec, repo_url: str, home: Path, on_phase: Callable[[str], None]) -> AttemptOutcome:
    """One attempt on this machine, as the module docstring says; never raises for the attempt's trouble."""
    env = bot_env(spec.author_name, spec.author_email)
    try:
        local, lease = _checkout(spec, repo_url, home, env)
    except (OrchError, OSError) as exc:
        return outcome_for(spec, Outcome.crashed, f"the worker could not check out {spec.branch}: {exc}")
    outcome = _run_stoppable(lambda cancel: run_attempt(local, cancel=cancel, on_phase=on_phase),
                             f"attempt {spec.attempt_id}")
    trees = Worktrees(local.repo, home, spec.project, spec.author_name, spec.author_email)
    try:
        if outcome.commit and outcome.commit != lease:
            run_git(local.repo, "push", "--quiet", f"--force-with-lease=refs/heads/{spec.branch}:{lease}", "origin",
                    f"refs/heads/{spec.branch}:refs/heads/{spec.branch}", env=env)
    except OrchError as exc:
        if outcome.outcome is Outcome.done:
            outcome = outcome.model_copy(update={"outcome": Outcome.crashed,
                                                 "summary": f"the story branch could not be pushed back: {exc}"})
        else:
            log.warning("attempt %s: the story branch was not pushed back: %s", spec.attempt_id, exc)
    finally:
        trees.remove_story(spec.story)
    return outcome


def _checkout(spec: AttemptSpec, repo_url: str, home: Path, env: dict[str, str]) -> tuple[AttemptSpec, str]:
    """This worker's clone, up to date with the sprint and story branches, and a worktree of the story;
    returns the spec for this machine and the story branch's tip as fetched."""
    clone = _clone(spec.project, repo_url, home, env)
    with FileLock(str(clone.parent / f"{spec.project}.lock")):  # the pool's processes share the clone
        trees = Worktrees(clone, home, spec.project, spec.author_name, spec.author_email)
        trees.remove_story(spec.story)  # a branch checked out in a worktree cannot be fetched into
        run_git(clone, "fetch", "--quiet", "origin", f"+refs/heads/{spec.base}:refs/heads/{spec.base}",
                f"+refs/heads/{spec.branch}:refs/heads/{spec.branch}", env=env)
        lease = trees.tip(spec.branch)
        workdir = trees.prepare_story(spec.story, spec.base)
    log_path = attempt_log_path(home, spec.project, spec.story, record_id(spec.attempt_id))
    return spec.model_copy(update={"repo": clone, "workdir": workdir, "log_path": log_path,
                                   "input": spec.input.model_copy(update={"workdir": str(workdir)})}), lease


def _clone(project: str, repo_url: str, home: Path, env: dict[str, str]) -> Path:
    """This worker's clone of the project, made once, its origin the task's repo URL."""
    repos = home / "repos"
    repos.mkdir(parents=True, exist_ok=True)
    clone = repos / project
    with FileLock(str(repos / f"{project}.lock")):
        if not (clone / ".git").is_dir():
            run_git(repos, "clone", "--quiet", repo_url, str(clone), env=env)
        run_git(clone, "remote", "set-url", "origin", repo_url, env=env)
    return clone


def _run_stoppable(run: Callable[[asyncio.Event], Awaitable[T]], name: str) -> T:
    """run(cancel) on an event loop of its own, in a thread, while this (main) thread takes the signals: SIGTERM
    (a revoke with terminate) and Celery's soft time limit set its `cancel`."""
    box: dict = {}
    ready = threading.Event()

    async def running() -> T:
        box["loop"], box["cancel"] = asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        return await run(box["cancel"])

    def stop(*_: object) -> None:
        if ready.wait(5):
            box["loop"].call_soon_threadsafe(box["cancel"].set)

    thread = threading.Thread(target=lambda: box.update(outcome=asyncio.run(running())), name=name)
    main = threading.current_thread() is threading.main_thread()  # signals reach only the main thread
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        thread.start()
        while thread.is_alive():
            try:
                thread.join()
            except SoftTimeLimitExceeded:
                stop()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    return box["outcome"]


def run_worker(config: Config, concurrency: int | None, queues: list[str], name: str | None,
               verbose: bool) -> None:
    """Run a Celery worker for agent attempts until it is stopped (SIGTERM or Ctrl-C: warm shutdown)."""
    app = worker_app(config)
    argv = ["worker", f"--queues={','.join(queues or [config.agents.queue])}",
            f"--loglevel={'DEBUG' if verbose else 'INFO'}"]
    argv += [f"--concurrency={concurrency}"] if concurrency else []
    argv += [f"--hostname={name}"] if name else []
    app.worker_main(argv)
