"""The scripted scenario of the issue, end to end on a real repo the user is also working in."""
from __future__ import annotations

import json

from orchestration.models import Sprint, State, Status
from orchestration.service import Orchestrator
from tests.conftest import backlog_of, git


async def test_scrum_cycle_is_committed_and_leaves_user_files_alone(orch: Orchestrator, make_repo):
    repo = make_repo("shop")
    # The user's own work in progress: a staged new file, an unstaged edit, an untracked file.
    (repo / "staged.txt").write_text("mine\n")
    git(repo, "add", "staged.txt")
    (repo / "README.md").write_text("# shop, edited\n")
    (repo / "notes.txt").write_text("scratch\n")
    user_status = git(repo, "status", "--porcelain")
    user_cached = git(repo, "diff", "--cached")

    await orch.register_project(str(repo), by="admin")
    await orch.create_epic("shop", "Checkout", by="alice")
    await orch.create_epic("shop", "Search", by="alice")
    for epic, title, points, prio in [("E-1", "Cart page", 3, "high"), ("E-1", "Pay by card", 5, "critical"),
                                      ("E-2", "Search box", 2, "medium"), ("E-2", "Filters", 3, "low"),
                                      ("E-1", "Receipt email", 1, "medium")]:
        await orch.add_story("shop", epic, title, points=points, priority=prio, by="bob")
    planned = await orch.plan_sprint("shop", goal="Customers can pay", capacity=10, by="alice")
    assert planned.sprint.stories == ["S-2", "S-1", "S-3"]  # critical, high, then medium by age, within 10 points
    await orch.start_sprint("shop", by="alice")
    for story in planned.sprint.stories[:2]:
        await orch.update_story("shop", story, "in_progress", by="carol")
        await orch.update_story("shop", story, "done", by="carol")
    review = await orch.review_sprint("shop", by="alice")
    assert review.state is State.SPRINT_REVIEW and review.done_stories == 2
    closed = await orch.feedback("shop", "Card payments shipped; search slipped.", by="alice")
    assert closed.state is State.IDLE
    await orch.flush()

    log = git(repo, "log", "--format=%an <%ae>|%B", "--", ".orch-state")
    for ident in ["E-1", "E-2", "S-1", "S-2", "S-3", "S-4", "S-5", "sprint-001"]:
        assert ident in log, ident
    assert 'create epic "Checkout" (/epic create by alice)' in log
    assert "Orch Test <orch@test>" in log
    # Only .orch-state was committed; the user's files are exactly as they were.
    for commit in git(repo, "rev-list", "HEAD", "--", ".orch-state").split():
        files = git(repo, "show", "--name-only", "--format=", commit).split()
        assert files and all(f.startswith(".orch-state/") for f in files), files
    assert git(repo, "status", "--porcelain") == user_status
    assert git(repo, "diff", "--cached") == user_cached

    # Every file validates against its model, and the sprint carries its retrospective.
    state = repo / ".orch-state"
    backlog = backlog_of(repo)
    status = Status.model_validate_json((state / "status.json").read_text())
    sprint = Sprint.model_validate_json((state / "sprints" / "sprint-001.json").read_text())
    assert status.state is State.IDLE and status.current_sprint is None
    assert sprint.retrospective and sprint.retrospective.text.startswith("Card payments")
    # The unfinished story went back to the backlog.
    s3 = backlog.story("S-3")
    assert s3 is not None and s3.sprint is None and s3.status.value == "todo"
    assert json.loads((state / "backlog.json").read_text())["schema_version"] == 2


async def test_git_history_restores_an_earlier_state(orch: Orchestrator, project: str):
    repo = orch.project(project).entry.path
    await orch.create_epic(project, "First", by="a")
    await orch.flush()
    good = git(repo, "rev-parse", "HEAD").strip()
    await orch.create_epic(project, "Second", by="a")
    await orch.add_story(project, "E-2", "Oops", by="a")
    await orch.flush()
    # The product's undo (restore, not `checkout <commit> -- .orch-state`, which keeps files added since).
    git(repo, "restore", f"--source={good}", "--staged", "--worktree", "--", ".orch-state")
    page = await orch.view_backlog(project)
    assert [e.id for e in page.epics] == ["E-1"] and page.total == 0
    again = await orch.create_epic(project, "Second again", by="a")
    assert again.epic.id == "E-2"  # counters come from the restored file
