"""A restore is refused while an agent works on one of the project's stories, in this process or another."""
from __future__ import annotations

import asyncio

import pytest

from orchestration.errors import Busy
from tests.conftest import git

from orchestration.service import Orchestrator

from .test_sprint_run import agent_config


@pytest.fixture
async def make_orch(tmp_path, projects_root):
    made: list[Orchestrator] = []

    def make(*mode: str, **agents) -> Orchestrator:
        made.append(Orchestrator(agent_config(tmp_path, projects_root, list(mode), **agents)))
        return made[-1]

    yield make
    for o in made:
        await o.close()


async def started(pid_file) -> None:
    """Wait until the fixture agent in "wait" mode runs (it writes its pid, then waits for SIGTERM)."""
    while not (pid_file.exists() and pid_file.read_text()):
        await asyncio.sleep(0.05)


async def test_restore_waits_for_the_agents_to_be_stopped(make_orch, make_repo, tmp_path):
    pids = tmp_path / "pids.txt"
    first = make_orch("wait", str(pids), timeout_s=30)
    repo = make_repo("shop")
    name = (await first.register_project(str(repo), by="ada")).project
    await first.create_epic(name, "Shop", by="ada")
    await first.add_story(name, "E-1", "Cart", by="ada")
    await first.flush()
    planned = git(repo, "rev-parse", "HEAD").strip()  # before the sprint
    await first.plan_sprint(name, by="ada")
    await first.start_sprint(name, by="ada")
    await first.agents.start()
    await started(pids)
    with pytest.raises(Busy, match="an agent is working on S-1"):
        await first.restore_project(name, planned, by="ada")

    # The process dies mid-attempt: the record says the attempt still runs, and another process refuses too.
    first.agents.runner.on_outcome = None
    await first.agents.close()
    second = make_orch("done")
    with pytest.raises(Busy, match="an agent is working on S-1.*Pause the sprint"):
        await second.restore_project(name, planned, by="ada")
    assert "restore" not in git(repo, "log", "--format=%s")

    third = make_orch("wait", str(tmp_path / "again.txt"), timeout_s=30)  # a bot that runs the agents again
    await third.agents.start()
    await started(tmp_path / "again.txt")
    await third.pause_sprint(name, by="ada")  # stops them: now it may go back
    restored = await third.restore_project(name, planned, by="ada")
    assert [s.value for s in restored.state_change] == ["SPRINT_PAUSED", "BACKLOG_READY"]
    assert restored.sprint == ("sprint-001", None) and restored.stories_changed == ["S-1"]
