"""Planning an epic (agents/planning.py) through the real orchestrator: real planner processes
(fixtures/planner.py), real git, real files and commits."""
from __future__ import annotations

import json

import pytest

from orchestration.agents import planning
from orchestration.config import Config
from orchestration.errors import InvalidInput, OrchError
from orchestration.service import Orchestrator
from tests.conftest import backlog_json, git
from tests.orchestration.agents.conftest import PLANNER


@pytest.fixture
def config(tmp_path, projects_root) -> Config:
    return Config.model_validate({
        "orchestrator": {"data_dir": str(tmp_path / "data"), "allowed_roots": [str(projects_root)],
                         "commit_author": "Orch Test <orch@test>", "commit_batch_ms": 20},
        "agents": {"planner_command": [*PLANNER, "plan"], "timeout_s": 5},
    })


def planner_does(config: Config, *mode: str) -> None:
    config.agents.planner_command = [*PLANNER, *mode]


def state_file(orch: Orchestrator, rel: str):
    path = orch.registry.get("demo").path / ".orch-state" / rel
    if rel == "backlog.json":
        return backlog_json(path.parent)
    return json.loads(path.read_text()) if rel.endswith(".json") else path.read_text()


async def planned(orch: Orchestrator, epic: str = "E-1", feedback: str = ""):
    if feedback:
        await orch.request_plan_changes("demo", epic, feedback, by="alice")
    else:
        await orch.plan_epic("demo", epic, by="alice")
    return await orch.wait_plan("demo", epic)


async def test_a_plan_is_proposed_written_as_markdown_and_committed(orch, project):
    await orch.create_epic("demo", "Shop", "Sell things", by="alice")
    view = await planned(orch)
    assert view.plan.summary == ""
    assert view.plan.status.value == "proposed" and [p.key for p in view.plan.proposals] == ["P-1", "P-2", "P-3"]
    assert view.plan.proposals[2].depends_on == ["P-2"]
    md = state_file(orch, "plans/E-1.md")
    assert md.startswith("# Plan for E-1: Shop") and "### Phase 2: buy" in md and "- [ ] adds" in md
    assert "Plan for Shop. Feedback: -." in md
    saved = state_file(orch, "plans/E-1.json")
    assert saved["versions"][0]["proposals"][0]["status"] == "proposed"
    await orch.flush()
    repo = orch.registry.get("demo").path
    assert git(repo, "status", "--porcelain") == ""  # both files committed
    assert "planner proposes 3 stories" in git(repo, "log", "-3", "--format=%B")
    assert (await orch.state("demo")).stories_by_status["todo"] == 0  # nothing in the backlog yet


async def test_approving_all_makes_stories_with_their_dependencies_and_a_second_approve_says_who(orch, project):
    await orch.create_epic("demo", "Shop", by="alice")
    await orch.add_story("demo", "E-1", "Already here", by="alice")  # S-1: new stories are numbered after it
    await planned(orch)
    approved = await orch.approve_plan("demo", "E-1", "all", by="bob")
    assert approved.created == {"P-1": "S-2", "P-2": "S-3", "P-3": "S-4"} and approved.dropped == []
    backlog = state_file(orch, "backlog.json")
    stories = {s["id"]: s for s in backlog["stories"]}
    assert stories["S-3"]["depends_on"] == ["S-2"] and stories["S-4"]["depends_on"] == ["S-3"]
    assert stories["S-3"]["acceptance_criteria"] == ["adds", "removes"] and stories["S-2"]["priority"] == "high"
    assert stories["S-4"]["epic"] == "E-1" and stories["S-4"]["points"] == 8
    assert "approved" in state_file(orch, "plans/E-1.md").splitlines()[2]
    with pytest.raises(InvalidInput) as again:
        await orch.approve_plan("demo", "E-1", "all", by="carol")
    assert "approved already, by bob on" in again.value.message
    assert len(state_file(orch, "backlog.json")["stories"]) == 4  # nothing changed


async def test_approving_some_rejects_the_rest_drops_their_dependencies_and_readies_the_backlog(orch, project):
    await orch.create_epic("demo", "Shop", by="alice")
    await planned(orch)
    approved = await orch.approve_plan("demo", None, ["P-1", "p-3"], by="bob")  # None: the latest proposed plan
    assert approved.created == {"P-1": "S-1", "P-3": "S-2"} and approved.dropped == ["P-3 -> P-2"]
    assert approved.state.value == "BACKLOG_READY"
    assert {p.key: p.status.value for p in approved.plan.proposals} == {
        "P-1": "approved", "P-2": "rejected", "P-3": "approved"}
    assert state_file(orch, "backlog.json")["stories"][1]["depends_on"] == []


async def test_unknown_keys_and_rejecting_change_nothing_or_only_the_plan(orch, project):
    await orch.create_epic("demo", "Shop", by="alice")
    await planned(orch)
    with pytest.raises(InvalidInput, match="P-9 is not a proposal"):
        await orch.approve_plan("demo", "E-1", ["P-1", "P-9"], by="bob")
    rejected = await orch.reject_plan("demo", "E-1", by="bob")
    assert rejected.plan.status.value == "rejected" and state_file(orch, "backlog.json")["stories"] == []
    with pytest.raises(InvalidInput, match="rejected already, by bob"):
        await orch.approve_plan("demo", "E-1", "all", by="bob")


async def test_request_changes_plans_again_with_the_feedback_and_supersedes_the_old(orch, project):
    await orch.create_epic("demo", "Shop", by="alice")
    await planned(orch)
    view = await planned(orch, feedback="Use PayPal")
    assert view.plan.version == 2 and view.plan.status.value == "proposed"
    assert view.plan.proposals[2].title == "Checkout with PayPal"
    assert "Revised plan for Shop. Feedback: Use PayPal." in view.plan.plan
    old = state_file(orch, "plans/E-1.json")["versions"][0]
    assert old["status"] == "superseded" and {p["status"] for p in old["proposals"]} == {"superseded"}
    with pytest.raises(InvalidInput, match="feedback"):
        await orch.request_plan_changes("demo", "E-1", "  ", by="alice")


async def test_a_planners_question_opens_a_ticket_on_the_epic_and_the_answer_resumes_planning(orch, project, config):
    planner_does(config, "ask")
    await orch.create_epic("demo", "Shop", by="alice")
    view = await planned(orch)
    assert view.plan.status.value == "waiting" and view.plan.tickets == ["TK-1"]
    [ticket] = state_file(orch, "tickets.json")["tickets"]
    assert ticket["epic"] == "E-1" and ticket["story"] is None and ticket["options"] == ["Stripe", "PayPal"]
    assert not await orch.read("demo", planning.claimable)  # not before the answer
    await orch.resolve_ticket("demo", "TK-1", "Stripe, we have an account", by="alice")
    await orch.planner.round()  # what the agent scheduler does each round
    view = await orch.wait_plan("demo", "E-1")
    assert view.plan.status.value == "proposed" and "Answers: Stripe, we have an account." in view.plan.plan
    assert view.plan.runs == 2


async def test_a_planner_that_writes_files_is_refused_and_the_repository_is_left_alone(orch, project, config):
    planner_does(config, "write")
    await orch.create_epic("demo", "Shop", by="alice")
    view = await planned(orch)
    assert view.plan.status.value == "failed" and "policy: it changed files in its read-only checkout (PLAN.md)" \
        in view.plan.summary
    assert view.plan.proposals == []
    data = config.orchestrator.data_dir
    assert not any(p.name.startswith(".plan-") for p in (data / "worktrees" / "demo").iterdir())
    repo = orch.registry.get("demo").path
    assert "orch/" not in git(repo, "branch", "--all")  # no branch made, none left
    planner_does(config, "plan")
    assert (await planned(orch)).plan.version == 2  # a failed plan may be asked for again


async def test_a_planner_that_moves_the_users_branch_is_refused_and_the_branch_put_back(orch, project, config):
    repo = orch.registry.get("demo").path
    planner_does(config, "commit")
    await orch.create_epic("demo", "Shop", by="alice")
    await orch.flush()
    view = await planned(orch)
    assert view.plan.status.value == "failed" and "it moved main (put back where it was)" in view.plan.summary
    await orch.flush()
    assert "my plan" not in git(repo, "log", "--format=%s", "main")  # main is where it was (plus our commits)
    assert not (repo / "PLAN.md").exists()


async def test_planning_needs_a_planner_and_one_run_at_a_time(orch, project, config):
    await orch.create_epic("demo", "Shop", by="alice")
    await orch.plan_epic("demo", "E-1", by="alice", run=False)  # left for the process that runs agents
    with pytest.raises(InvalidInput, match="being planned already"):
        await orch.plan_epic("demo", "E-1", by="alice")
    await orch.planner.round()
    assert (await orch.wait_plan("demo", "E-1")).plan.status.value == "proposed"
    config.agents.planner_command = []
    with pytest.raises(OrchError, match="No planner is configured"):
        await orch.plan_epic("demo", "E-1", by="alice")
