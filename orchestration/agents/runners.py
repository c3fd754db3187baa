"""Where agents run: [agents] runner = "local" (default: this machine) or "celery" (worker machines) decides
for the attempts, the planner runs and the clarity scorer's runs alike."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..config import Config
from ..errors import OrchError
from . import policy
from .attempt import ProcessResult, run_process
from .local import LocalRunner
from .runner import Outcome, OutcomeHandler, Runner, RunningAttempt
from .worktree import Worktrees

if TYPE_CHECKING:
    from .planner import PlanSpec
    from .planning import PlanOutcome

CALL_SLACK_S = 30  # a clarity scorer's run on a worker: how long past its time-out the bot waits for a worker


def make_runner(config: Config, on_outcome: OutcomeHandler, on_phase: Callable[[RunningAttempt], None]) -> Runner:
    agents = config.agents
    if agents.runner == "celery":
        from .celery_runner import CeleryRunner  # Celery is imported only by those who use it
        return CeleryRunner(agents, on_outcome=on_outcome, on_phase=on_phase)
    return LocalRunner(agents.max_parallel, on_outcome=on_outcome, on_phase=on_phase)


async def run_plan(runner: Runner, config: Config, spec: PlanSpec, cancel: asyncio.Event | None) -> PlanOutcome:
    """A planner run: here, or on a worker at the commit checked out here (a worker that fails: "crashed")."""
    from .planner import run_plan as run_here  # planner.py imports this module
    from .planning import PlanOutcome
    if config.agents.runner != "celery":
        return await run_here(spec, cancel)
    from .celery_runner import GIT_SLACK_S, PLAN_TASK
    base = dict(run_id=spec.run_id, project=spec.project, epic=spec.epic)
    try:
        trees = Worktrees(spec.repo, spec.data_dir, spec.project, spec.author_name, spec.author_email)
        commit = await asyncio.to_thread(trees.tip, "HEAD")
        result = await runner.call(PLAN_TASK, [spec.model_dump(mode="json"), runner.repo_url(spec.project, spec.repo),
                                               commit], time_limit_s=spec.timeout_s + GIT_SLACK_S, cancel=cancel)
    except OrchError as exc:
        return PlanOutcome(**base, outcome=Outcome.crashed, summary=exc.message)
    if result is None:
        return PlanOutcome(**base, outcome=Outcome.cancelled, summary="stopped by the orchestrator")
    return PlanOutcome.model_validate(result)


async def run_clarity(runner: Runner, config: Config, argv: list[str], stdin: bytes, env_names: list[str],
                      task_vars: dict[str, str], timeout_s: float, grace_s: float) -> ProcessResult:
    """A clarity scorer's process, here (cwd: the data folder) or on a worker; what keeps it from answering
    is its result's `error` (the caller's rule scorer decides then)."""
    if config.agents.runner != "celery":
        return await clarity_here(config.orchestrator.data_dir, argv, stdin, env_names, task_vars, timeout_s, grace_s)
    from .celery_runner import CLARITY_TASK
    try:
        result = await runner.call(CLARITY_TASK, [argv, stdin.decode(), env_names, task_vars, timeout_s, grace_s],
                                   time_limit_s=timeout_s + grace_s + 5, wait_s=timeout_s + CALL_SLACK_S)
    except OrchError as exc:
        return ProcessResult(None, "", "", error=exc.message)
    return ProcessResult(**result) if result else ProcessResult(
        None, "", "", error=f"no worker ran it within {timeout_s + CALL_SLACK_S:g} s")


async def clarity_here(cwd: Path, argv: list[str], stdin: bytes, env_names: list[str], task_vars: dict[str, str],
                       timeout_s: float, grace_s: float) -> ProcessResult:
    """A clarity scorer's process on this machine (the bot's, or a worker's): this machine's allowlisted
    environment, its output scrubbed of this machine's secrets, nothing logged."""
    return await run_process(argv, cwd=cwd, env=policy.agent_env(env_names, task_vars), stdin=stdin,
                             timeout_s=timeout_s, grace_s=grace_s, secrets=policy.secret_values(), log_to=None)
