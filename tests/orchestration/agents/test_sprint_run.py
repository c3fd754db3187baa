"""Agents run a sprint through the real orchestrator: real agent processes, real git, the real state machine."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from orchestration.config import Config
from orchestration.service import Orchestrator
from tests.conftest import git

from .conftest import AGENT, TESTS, TOKEN, alive


def agent_config(tmp_path: Path, projects_root: Path, mode: list[str], **agents) -> Config:
    return Config.model_validate({
        "orchestrator": {"data_dir": str(tmp_path / "data"), "allowed_roots": [str(projects_root)],
                         "commit_author": "Orch Test <orch@test>", "commit_batch_ms": 20},
        "agents": {"command": [*AGENT, *mode], "test_command": TESTS, "timeout_s": 5, "max_attempts": 3,
                   **agents},
    })


@pytest.fixture
async def make_orch(tmp_path, projects_root):
    made: list[Orchestrator] = []

    def make(*mode: str, **agents) -> Orchestrator:
        o = Orchestrator(agent_config(tmp_path, projects_root, list(mode), **agents))
        made.append(o)
        return o

    yield make
    for o in made:
        await o.close()


async def sprint_of(o: Orchestrator, repo: Path, titles: list[str], deps: dict[int, list[int]] | None = None) -> str:
    """Register `repo`, add one epic and a story per title (deps: story index -> indices it depends on), plan
    them all and start the sprint. Returns the project name."""
    name = repo.name
    await o.register_project(str(repo), by="ada")
    await o.create_epic(name, "Shop", by="ada")
    for i, title in enumerate(titles, 1):
        await o.add_story(name, "E-1", title, acceptance_criteria=[f"{title} works"],
                          depends_on=[f"S-{d}" for d in (deps or {}).get(i, [])], by="ada")
    await o.plan_sprint(name, by="ada")
    await o.start_sprint(name, by="ada")
    return name


def runs(repo: Path, story: str) -> dict:
    return json.loads((repo / ".orch-state" / "runs" / f"{story}.json").read_text())


def user_view(repo: Path) -> tuple:
    """The user's checkout apart from .orch-state (which the orchestrator commits on the user's branch): the
    branch checked out, its files, what is staged and what is changed, and who made its commits."""
    outside = ("--", ".", ":(exclude).orch-state")
    files = [line for line in git(repo, "ls-tree", "-r", "HEAD").splitlines() if "\t.orch-state/" not in line]
    return (git(repo, "symbolic-ref", "HEAD"), files, git(repo, "diff", "--cached", *outside),
            git(repo, "status", "--porcelain", "--untracked-files=all", *outside), git(repo, "diff", *outside),
            set(git(repo, "log", "--format=%an", "HEAD").split("\n")) - {"Orch Test", ""})


async def hung_agent(pids: Path) -> tuple[int, int]:
    """Wait until the fixture agent in "hang" mode runs; returns its pid and its child's."""
    for _ in range(100):
        if pids.exists() and pids.read_text():
            break
        await asyncio.sleep(0.05)
    agent, child = map(int, pids.read_text().split())
    return agent, child


def with_user_work(repo: Path) -> Path:
    """The user's own work in progress, which agent work must leave exactly as it is."""
    (repo / "README.md").write_text("# edited, not committed\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "notes.txt").write_text("untracked\n")
    return repo


async def test_a_sprint_with_a_dependency_runs_to_review_on_its_sprint_branch(make_orch, make_repo):
    o = make_orch("done")
    repo = make_repo("shop")
    name = await sprint_of(o, repo, ["Cart", "Checkout", "Receipt", "Refund"], deps={2: [1]})
    await o.flush()
    with_user_work(repo)
    before = user_view(repo)
    await o.agents.start()
    await o.agents.until_idle()
    await o.flush()

    assert (await o.state(name)).state.value == "SPRINT_REVIEW"
    merges = git(repo, "log", "--merges", "--format=%s", "orch/sprint-001").splitlines()
    assert sorted(m.split()[1] for m in merges) == ["S-1", "S-2", "S-3", "S-4"]
    # S-2 waited for S-1: its merge comes after S-1's
    assert merges.index(next(m for m in merges if "S-2" in m)) < merges.index(next(m for m in merges if "S-1" in m))
    files = git(repo, "ls-tree", "-r", "--name-only", "orch/sprint-001").split()
    assert {"s_1.py", "tests/test_s_1.py", "s_4.py", "tests/test_s_4.py"} <= set(files)
    assert not any(f.startswith(".orch-state/runs") for f in files)  # agent work never holds our state
    for story in ("S-1", "S-2", "S-3", "S-4"):
        record = runs(repo, story)["attempts"][-1]
        assert record["outcome"] == "done" and record["tests_passed"] >= 1 and record["tests_failed"] == 0
    assert user_view(repo) == before  # the user's branch, working tree and index are exactly as they were
    log = git(repo, "log", "--format=%B", "main")
    assert "agent attempt 1: done; tests 1 passed, 0 failed" in log and "every story is done" in log
    assert "agent attempt 1 at S-4 started (agent by orchestrator)" in log
    view = await o.sprint_status(name)
    assert view.branch == "orch/sprint-001" and len([c for c in view.commits if "Merge" in c]) == 4
    data = Path(o.config.orchestrator.data_dir)
    assert not (data / "worktrees" / name / "S-1").exists()  # done stories leave no worktree; branches stay
    assert "orch/S-1" in git(repo, "branch", "--list", "orch/S-1")


async def test_failing_tests_go_into_the_next_attempt_until_they_pass(make_orch, make_repo):
    o = make_orch("flaky", "2")
    repo = make_repo("shop")
    name = await sprint_of(o, repo, ["Cart"])
    await o.agents.start()
    await o.agents.until_idle()

    attempts = runs(repo, "S-1")["attempts"]
    assert [a["outcome"] for a in attempts] == ["tests_failed", "tests_failed", "done"]
    assert attempts[0]["tests_failed"] == 1 and "AssertionError" in attempts[0]["output"]
    assert (await o.state(name)).state.value == "SPRINT_REVIEW"


@pytest.mark.parametrize("mode", [["crash"], ["garbage"], ["hang", "pids.txt"]])
async def test_a_failing_agent_is_retried_then_blocked_with_a_ticket_carrying_the_error(make_orch, make_repo, mode):
    o = make_orch(*mode, timeout_s=1, max_attempts=2)
    repo = make_repo("shop")
    name = await sprint_of(o, repo, ["Cart", "Other"])
    await o.agents.start()
    await o.agents.until_idle()

    attempts = runs(repo, "S-1")["attempts"]
    assert len(attempts) == 2 and all(a["counted"] for a in attempts)
    tickets = (await o.list_tickets(name)).tickets
    ticket = next(t for t in tickets if t.story == "S-1")
    assert "failed 2 agent attempts" in ticket.question
    expected = {"crash": "exited with status 3", "garbage": "not JSON", "hang": "longer than 1 s"}[mode[0]]
    assert expected in ticket.context
    assert (await o.state(name)).state.value == "BLOCKED"  # both stories blocked: the sprint waits for people


async def test_a_question_becomes_a_ticket_and_the_answer_finishes_the_story(make_orch, make_repo):
    o = make_orch("question")
    repo = make_repo("shop")
    name = await sprint_of(o, repo, ["Cart"])
    await o.agents.start()
    await o.agents.until_idle()
    ticket = (await o.list_tickets(name)).tickets[0]
    assert ticket.question == "Should the title be upper case?" and ticket.options == ["yes", "no"]
    assert ticket.created_by == "agent" and (await o.state(name)).state.value == "BLOCKED"

    await o.resolve_ticket(name, ticket.id, "No: keep the title as it is typed.", by="alice")
    await o.agents.until_idle()
    attempts = runs(repo, "S-1")["attempts"]
    assert [a["outcome"] for a in attempts] == ["question", "done"]
    assert not attempts[0]["counted"]
    assert (await o.state(name)).state.value == "SPRINT_REVIEW"


async def test_a_merge_conflict_sends_the_story_back_to_start_over_on_the_sprint_branch(make_orch, make_repo):
    o = make_orch("shared", max_parallel=2)
    repo = make_repo("shop")
    name = await sprint_of(o, repo, ["Cart", "Checkout"])
    await o.agents.start()
    await o.agents.until_idle()

    outcomes = {s: [a["outcome"] for a in runs(repo, s)["attempts"]] for s in ("S-1", "S-2")}
    assert sorted(outcomes.values()) == [["conflict", "done"], ["done"]]
    loser = next(s for s, o_ in outcomes.items() if o_[0] == "conflict")
    assert "conflicts in shared.txt" in runs(repo, loser)["attempts"][0]["summary"]
    assert (await o.state(name)).state.value == "SPRINT_REVIEW"
    assert git(repo, "show", "orch/sprint-001:shared.txt").strip() == loser  # merged last, on top of the other


async def test_pause_stops_the_running_agent_and_resume_finishes_the_sprint(make_orch, make_repo, tmp_path):
    pids = tmp_path / "pids.txt"
    o = make_orch("hang", str(pids), timeout_s=30)
    repo = make_repo("shop")
    name = await sprint_of(o, repo, ["Cart"])
    await o.agents.start()
    agent_pid, child_pid = await hung_agent(pids)
    await o.pause_sprint(name, by="alice")
    assert not alive(agent_pid) and not alive(child_pid)  # pause returns once the agents are gone
    attempt = runs(repo, "S-1")["attempts"][0]
    assert attempt["outcome"] == "cancelled" and not attempt["counted"]
    assert (await o.view_backlog(name)).stories[0].status.value == "todo"

    o.config.agents.command = [*AGENT, "done"]  # the agent got better while the sprint was paused
    await o.resume_sprint(name, by="alice")
    await o.agents.until_idle()
    assert (await o.state(name)).state.value == "SPRINT_REVIEW"


async def test_a_restart_mid_run_redoes_the_attempt_without_losing_or_doubling(make_orch, make_repo, tmp_path):
    pids = tmp_path / "pids.txt"
    first = make_orch("hang", str(pids), timeout_s=30)
    repo = make_repo("shop")
    name = await sprint_of(first, repo, ["Cart"])
    await first.agents.start()
    await hung_agent(pids)
    await first.flush()
    # The process dies: its agents die with it, and nothing of theirs is applied; the attempt stays "running"
    first.agents.runner.on_outcome = None
    await first.agents.close()
    assert runs(repo, "S-1")["attempts"][0]["outcome"] is None

    second = make_orch("done")
    await second.agents.start()
    await second.agents.until_idle()
    attempts = runs(repo, "S-1")["attempts"]
    assert [a["outcome"] for a in attempts][-1] == "done" and len(attempts) == 2
    assert (await second.state(name)).state.value == "SPRINT_REVIEW"
    merges = git(repo, "log", "--merges", "--format=%s", "orch/sprint-001").splitlines()
    assert len(merges) == 1


async def test_two_projects_share_the_places_fairly(make_orch, make_repo):
    o = make_orch("slow", "0.3", max_parallel=2, max_parallel_per_project=2)
    busy = await sprint_of(o, make_repo("busy"), [f"Story {i}" for i in range(6)])
    quiet = await sprint_of(o, make_repo("quiet"), ["One"])
    seen: list[tuple[int, int]] = []
    o.subscribe(lambda e: seen.append((o.agents.runner.running_count(busy), o.agents.runner.running_count(quiet)))
                if e.kind == "story_run" else None)
    await o.agents.start()
    await o.agents.until_idle()
    assert all(b + q <= 2 for b, q in seen)  # max_parallel across projects
    assert any(q == 1 for _, q in seen[:4])  # the quiet project got a place among the first ones
    assert (await o.state(quiet)).state.value == "SPRINT_REVIEW"
    assert (await o.state(busy)).state.value == "SPRINT_REVIEW"


@pytest.mark.parametrize("mode", [["orch_state"], ["move_branch"], ["print_token"]])
async def test_policy_breaches_are_refused_and_the_token_appears_nowhere(make_orch, make_repo, monkeypatch, mode):
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    o = make_orch(*mode, TOKEN, max_attempts=1)
    repo = make_repo("shop")
    name = await sprint_of(o, repo, ["Cart"])
    await o.agents.start()
    await o.agents.until_idle()
    await o.flush()

    record = runs(repo, "S-1")["attempts"][0]
    assert record["outcome"] == ("done" if mode[0] == "print_token" else "policy")
    if mode[0] != "print_token":  # refused: the story is blocked with a ticket, nothing reached the sprint branch
        assert "policy" in (await o.list_tickets(name)).tickets[0].context
        base = json.loads((repo / ".orch-state" / "sprints" / "sprint-001.json").read_text())["base_commit"]
        assert git(repo, "rev-parse", "orch/sprint-001").strip() == base
        assert "Agent" not in git(repo, "log", "--format=%an", "main")  # the user's branch holds none of its work
    everything = [git(repo, "log", "--all", "-p"), *(p.read_text(errors="replace") for p in
                  Path(o.config.orchestrator.data_dir).rglob("*") if p.is_file())]
    assert not any(TOKEN in text for text in everything)

