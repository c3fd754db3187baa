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

A revoke (pause) sends SIGTERM to the pool process running the task: it stops the agent's process group
(run_attempt's `cancel`) and answers "cancelled". Nothing here writes .orch-state/: the bot applies outcomes.

Each worker machine needs: this package, git, the agent command at the path the bot's config names (and what
the agent needs: its CLI, the variables named in [agents] env), the project's test tools, git access to each
project's repo_url with the right to push orch/* branches, and the broker URL (ORCH_BROKER_URL).
"""
from __future__ import annotations

import asyncio
import logging
import re
import signal
import threading
from pathlib import Path
from typing import Callable

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from filelock import FileLock

from ..config import Config
from ..errors import ConfigError, OrchError
from .attempt import run_attempt
from .celery_runner import RUNNING, TASK, make_app
from .runner import AttemptOutcome, AttemptSpec, Outcome, attempt_log_path
from .worktree import Worktrees, bot_env, run_git

log = logging.getLogger(__name__)

WORKER_DIR = "worker"  # under data_dir: one folder per worker node (two workers may share a machine)


def worker_app(config: Config) -> Celery:
    """The Celery app with the attempt task, run by `orch worker`."""
    if not config.agents.broker_url:
        raise ConfigError("orch worker needs the broker: set [agents] broker_url or ORCH_BROKER_URL.")
    app = make_app(config.agents)
    data_dir = config.orchestrator.data_dir

    @app.task(name=TASK, bind=True)
    def run(task, spec: dict, repo_url: str) -> dict:
        node = re.sub(r"[^A-Za-z0-9@._-]", "_", task.request.hostname or "worker")
        ident = task.request.id  # the request is thread-local, and run_attempt tells phases from its own thread
        phase = lambda p: task.update_state(ident, state=RUNNING, meta={"phase": p})  # noqa: E731
        outcome = run_here(AttemptSpec.model_validate(spec), repo_url, data_dir / WORKER_DIR / node, phase)
        return outcome.model_dump(mode="json")

    return app


def run_here(spec: AttemptSpec, repo_url: str, home: Path, on_phase: Callable[[str], None]) -> AttemptOutcome:
    """One attempt on this machine, as the module docstring says; never raises for the attempt's trouble."""
    env = bot_env(spec.author_name, spec.author_email)
    try:
        local, lease = _checkout(spec, repo_url, home, env)
    except (OrchError, OSError) as exc:
        return AttemptOutcome(attempt_id=spec.attempt_id, project=spec.project, story=spec.story,
                              attempt=spec.input.attempt, outcome=Outcome.crashed, branch=spec.branch,
                              summary=f"the worker could not check out {spec.branch}: {exc}")
    outcome = _run_stoppable(local, on_phase)
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
    repos = home / "repos"
    repos.mkdir(parents=True, exist_ok=True)
    clone = repos / spec.project
    with FileLock(str(repos / f"{spec.project}.lock")):  # the pool's processes share the clone
        if not (clone / ".git").is_dir():
            run_git(repos, "clone", "--quiet", repo_url, str(clone), env=env)
        run_git(clone, "remote", "set-url", "origin", repo_url, env=env)
        trees = Worktrees(clone, home, spec.project, spec.author_name, spec.author_email)
        trees.remove_story(spec.story)  # a branch checked out in a worktree cannot be fetched into
        run_git(clone, "fetch", "--quiet", "origin", f"+refs/heads/{spec.base}:refs/heads/{spec.base}",
                f"+refs/heads/{spec.branch}:refs/heads/{spec.branch}", env=env)
        lease = trees.tip(spec.branch)
        workdir = trees.prepare_story(spec.story, spec.base)
    log_path = attempt_log_path(home, spec.project, spec.story, spec.attempt_id.rpartition("/")[2])
    return spec.model_copy(update={"repo": clone, "workdir": workdir, "log_path": log_path,
                                   "input": spec.input.model_copy(update={"workdir": str(workdir)})}), lease


def _run_stoppable(spec: AttemptSpec, on_phase: Callable[[str], None]) -> AttemptOutcome:
    """run_attempt on an event loop of its own, in a thread, while this (main) thread takes the signals: SIGTERM
    (a revoke with terminate) and Celery's soft time limit set the attempt's `cancel`."""
    box: dict = {}
    ready = threading.Event()

    async def attempt() -> AttemptOutcome:
        box["loop"], box["cancel"] = asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        return await run_attempt(spec, cancel=box["cancel"], on_phase=on_phase)

    def stop(*_: object) -> None:
        if ready.wait(5):
            box["loop"].call_soon_threadsafe(box["cancel"].set)

    thread = threading.Thread(target=lambda: box.update(outcome=asyncio.run(attempt())),
                              name=f"attempt {spec.attempt_id}")
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
