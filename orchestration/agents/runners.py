"""Which runner executes the attempts: [agents] runner = "local" (default) or "celery" (worker machines)."""
from __future__ import annotations

from typing import Callable

from ..config import Config
from .local import LocalRunner
from .runner import OutcomeHandler, Runner, RunningAttempt


def make_runner(config: Config, on_outcome: OutcomeHandler, on_phase: Callable[[RunningAttempt], None]) -> Runner:
    agents = config.agents
    if agents.runner == "celery":
        from .celery_runner import CeleryRunner  # Celery is imported only by those who use it
        return CeleryRunner(agents, on_outcome=on_outcome, on_phase=on_phase)
    return LocalRunner(agents.max_parallel, on_outcome=on_outcome, on_phase=on_phase)
