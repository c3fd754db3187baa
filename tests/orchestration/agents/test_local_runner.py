"""LocalRunner: real agent processes, at most max_parallel at once, counts per project, cancel and close."""
from __future__ import annotations

import asyncio
import time

import pytest

from orchestration.agents.local import LocalRunner
from orchestration.agents.runner import Outcome, RunnerFull


async def test_attempts_run_in_parallel_within_the_limit(make_spec):
    outcomes = []

    async def apply(outcome):  # the orchestrator's side: may be async
        outcomes.append(outcome)

    runner = LocalRunner(max_parallel=2, on_outcome=apply)
    first = make_spec("slow", "0.5", story="S-1", tests=None)
    second = make_spec("slow", "0.5", story="S-2", tests=None)
    second.project = "market"
    started = time.monotonic()
    tasks = [runner.submit(first), runner.submit(second)]
    assert runner.free() == 0 and runner.running_count() == 2
    assert runner.running_count("shop") == runner.running_count("market") == 1
    with pytest.raises(RunnerFull):
        runner.submit(make_spec("done", story="S-3"))
    with pytest.raises(ValueError, match="already running"):
        runner.submit(first)
    await asyncio.sleep(0.3)
    status = runner.running("shop")
    assert [(s.story, s.attempt, s.phase) for s in status] == [("S-1", 1, "agent")] and status[0].elapsed_s > 0.2
    done = await asyncio.gather(*tasks)
    assert time.monotonic() - started < 1.5  # side by side, not one after the other
    assert [o.outcome for o in done] == [Outcome.done, Outcome.done]
    assert sorted(o.story for o in outcomes) == ["S-1", "S-2"]
    assert runner.free() == 2 and runner.running() == []


async def test_cancel_and_close_stop_running_attempts(make_spec, tmp_path):
    outcomes = []
    runner = LocalRunner(max_parallel=3, on_outcome=outcomes.append)
    hung = [make_spec("hang", str(tmp_path / f"pids-{n}"), story=f"S-{n}", timeout_s=30) for n in (1, 2, 3)]
    hung[2].project = "market"
    for spec in hung:
        runner.submit(spec)
    while not all((tmp_path / f"pids-{n}").exists() for n in (1, 2, 3)):
        await asyncio.sleep(0.02)
    assert await runner.cancel(hung[0].attempt_id)
    assert not await runner.cancel(hung[0].attempt_id)  # not running any more
    assert await runner.cancel_project("market") == 1
    assert [s.story for s in runner.running()] == ["S-2"]
    await runner.close()
    assert runner.running() == []
    assert sorted((o.story, o.outcome) for o in outcomes) == [(f"S-{n}", Outcome.cancelled) for n in (1, 2, 3)]
