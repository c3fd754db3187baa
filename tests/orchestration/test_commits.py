"""How a commit is made (orchestration/gitlog.py): outside the file lock, in a private index, moved onto the branch
with a compare-and-swap; the user's index kept consistent; hand edits committed first, on their own; batched
subjects that say what happened. Real repositories, real git, real processes."""
from __future__ import annotations

import asyncio
import json
import logging

from orchestration.cli import main
from orchestration.gitlog import HAND_EDIT_LINE, GitLog, commit_message
from orchestration.service import Orchestrator
from tests.conftest import git
from tests.orchestration.test_gitlog import committed, head, paths_committed_since, repo_of, wait_for

STATE = {".orch-state/backlog.json", ".orch-state/status.json"}


def index_entry(repo, path: str) -> str:
    """The object ID the user's index holds for `path`."""
    return git(repo, "ls-files", "-s", "--", path).split()[1]


async def test_after_a_commit_the_users_index_agrees_with_it_and_their_own_work_stays_as_it_was(orch, project):
    repo = repo_of(orch)
    (repo / "feature.py").write_text("print('staged')\n")
    git(repo, "add", "feature.py")
    (repo / "feature.py").write_text("print('staged, then changed')\n")
    (repo / "notes.txt").write_text("untracked\n")
    staged_before = git(repo, "diff", "--cached")

    await orch.create_epic(project, "Index", by="alice")
    await orch.flush()

    assert orch.git.last_outcome[repo] == "committed"
    # No .orch-state change shows: the index holds what HEAD holds, the working tree too.
    assert git(repo, "status", "--porcelain", "--", ".orch-state") == ""
    assert index_entry(repo, ".orch-state/backlog.json") == git(repo, "rev-parse", "HEAD:.orch-state/backlog.json").strip()
    # The user's staged change is still staged (and only it), the rest as it was.
    assert git(repo, "diff", "--cached") == staged_before
    assert git(repo, "status", "--porcelain") == "AM feature.py\n?? notes.txt\n"
    assert git(repo, "show", "--stat", "--format=", "HEAD").count("|") == 2  # backlog.json and status.json


async def test_unborn_branch_our_commit_starts_it_and_the_staged_user_file_stays_staged(orch, make_repo):
    repo = make_repo("fresh", commit=False)
    (repo / "app.py").write_text("print(1)\n")
    git(repo, "add", "app.py")
    await orch.register_project(str(repo), by="admin")
    await orch.flush()

    assert git(repo, "rev-list", "--count", "HEAD").strip() == "1"
    assert "app.py" not in git(repo, "ls-tree", "-r", "--name-only", "HEAD")
    assert git(repo, "status", "--porcelain") == "A  app.py\n"
    assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/main"


async def test_a_user_commit_between_reading_head_and_moving_it_is_kept_and_ours_goes_on_top(orch, project,
                                                                                          monkeypatch, caplog):
    """The compare-and-swap: the user commits a file of their own while our commit is being built; the branch
    keeps their commit, ours is built again on top of it, and neither loses anything."""
    repo = repo_of(orch)
    base = head(repo)
    (repo / "mine.txt").write_text("my work\n")
    git(repo, "add", "mine.txt")
    read_head = GitLog._head
    raced = []

    def head_then_user_commits(self, root):
        seen = read_head(self, root)
        if not raced:  # once: right after our first read of HEAD, the user's `git commit` lands
            raced.append(seen)
            git(root, "commit", "-q", "-m", "the user's own commit")
        return seen

    monkeypatch.setattr(GitLog, "_head", head_then_user_commits)
    caplog.set_level(logging.INFO, logger="orchestration.gitlog")
    await orch.create_epic(project, "Raced", by="alice")
    await orch.flush()

    assert orch.git.last_outcome[repo] == "committed" and raced == [base]
    assert git(repo, "log", "--format=%s", f"{base}..HEAD").splitlines() == [
        'orch(E-1): create epic "Raced" (/epic create by alice)', "the user's own commit"]
    assert paths_committed_since(repo, base) == STATE | {"mine.txt"}
    assert git(repo, "status", "--porcelain") == ""
    assert "moved while committing" in caplog.text


async def test_a_hand_edit_then_a_command_gives_two_commits_the_hand_edit_first_on_its_own(orch, project):
    repo = repo_of(orch)
    base = head(repo)
    notes = repo / ".orch-state" / "architecture.md"
    notes.write_text(notes.read_text() + "- Edited by hand.\n")

    await orch.create_epic(project, "After the edit", by="alice")
    await orch.flush()

    subjects = git(repo, "log", "--format=%s", f"{base}..HEAD").splitlines()
    assert subjects == ['orch(E-1): create epic "After the edit" (/epic create by alice)', HAND_EDIT_LINE]
    assert git(repo, "show", "--name-only", "--format=", "HEAD~1").split() == [".orch-state/architecture.md"]
    assert ".orch-state/architecture.md" in git(repo, "log", "-1", "--format=%b", "HEAD~1")
    assert set(git(repo, "show", "--name-only", "--format=", "HEAD").split()) == STATE
    assert git(repo, "log", "-1", "--format=%an <%ae>", "HEAD~1").strip() == "Orch Test <orch@test>"
    assert git(repo, "status", "--porcelain") == ""


async def test_a_staged_hand_edit_is_committed_on_its_own_too(orch, project):
    repo = repo_of(orch)
    notes = repo / ".orch-state" / "architecture.md"
    notes.write_text(notes.read_text() + "Hand note: use PostgreSQL.\n")
    git(repo, "add", ".orch-state/architecture.md")

    await orch.create_epic(project, "Storage", by="alice")
    await orch.flush()

    assert git(repo, "log", "-1", "--format=%s", "HEAD~1").strip() == HAND_EDIT_LINE
    assert "Hand note" in git(repo, "show", "HEAD~1:.orch-state/architecture.md")
    assert git(repo, "status", "--porcelain") == ""


async def test_a_file_edited_by_hand_after_the_bot_wrote_it_is_committed_as_it_is_and_the_message_says_so(
        config, project):
    config.orchestrator.commit_batch_ms = 60_000  # the commit comes after the hand edit
    slow = Orchestrator(config)
    try:
        repo = repo_of(slow)
        await slow.create_epic(project, "Typo heer", by="alice")
        backlog = repo / ".orch-state" / "backlog.json"
        data = json.loads(backlog.read_text())
        data["epics"][0]["title"] = "Typo here"
        backlog.write_text(json.dumps(data, indent=2) + "\n")
        assert [w for p in (await slow.health()).projects for w in p.warnings]  # named while it waits
        await slow.flush()
        message = git(repo, "log", "-1", "--format=%B")
        assert message.startswith('orch(E-1): create epic "Typo heer" (/epic create by alice)')
        assert "Edited outside the bot after this change was written" in message and ".orch-state/backlog.json" in message
        assert "Typo here" in git(repo, "show", "HEAD:.orch-state/backlog.json")
    finally:
        await slow.close()


async def test_health_names_uncommitted_hand_edits_and_stops_once_they_are_committed(orch, project, cfg, capsys):
    repo = repo_of(orch)
    notes = repo / ".orch-state" / "architecture.md"
    notes.write_text(notes.read_text() + "- Edited by hand.\n")
    (repo / ".orch-state" / "extra.md").write_text("a new file, by hand\n")

    health = (await orch.health()).projects[0]
    assert health.ok and len(health.warnings) == 1
    assert ".orch-state/architecture.md, .orch-state/extra.md" in health.warnings[0]
    assert await asyncio.to_thread(main, ["--config", str(cfg), "health"]) == 0  # a warning, not a failure
    out = capsys.readouterr().out
    assert out.startswith("WARN demo") and "uncommitted hand edits: .orch-state/architecture.md" in out

    await orch.create_epic(project, "Commits them", by="alice")
    await orch.flush()
    assert (await orch.health()).projects[0].warnings == []


async def test_a_change_the_bot_wrote_and_has_not_committed_yet_is_no_hand_edit(config, project):
    config.orchestrator.commit_batch_ms = 60_000
    slow = Orchestrator(config)
    try:
        await slow.create_epic(project, "Waiting for its commit", by="alice")
        health = (await slow.health()).projects[0]
        assert health.warnings == [] and health.pending_commit_lines == 1
    finally:
        await slow.close()


async def test_back_to_back_commands_are_committed_in_batches_while_they_run(orch, project):
    """No starvation: while commands follow each other without a pause, commits keep landing (one per batch
    window, each holding what was queued), instead of waiting for a gap between commands."""
    repo = repo_of(orch)
    await orch.create_epic(project, "Load", by="alice")
    await orch.flush()
    base, made = head(repo), orch.git.commits_made
    n = 0
    while orch.git.commits_made - made < 3:  # the commands never pause: the commits must come anyway
        await orch.add_story(project, "E-1", f"Story {n}", by="alice")
        n += 1
        assert n < 5000, "no commit landed while commands ran"
    await wait_for(committed(orch, repo))
    assert orch.git.commits_made - made < n  # batched: fewer commits than commands
    assert len(orch.git.lag_samples) >= n
    assert git(repo, "status", "--porcelain") == "" and head(repo) != base


def test_batched_subject_says_what_happened_and_one_line_stays_the_line():
    lines = ["orch(S-4): status in_progress -> done (/story update by alice)",
             "orch(sprint-002): review sprint-002 (/sprint review by bob)"]
    assert commit_message(lines).splitlines()[0] == "orch(S-4, sprint-002): S-4 done; review sprint-002"
    assert commit_message(lines[:1]) == lines[0]
    many = [f'orch(E-{i}): create epic "A title long enough to fill {i}" (/epic create by alice)' for i in range(1, 9)]
    subject = commit_message(many).splitlines()[0]
    assert subject.startswith('orch(E-1, E-2, E-3, E-4, E-5, E-6, E-7, E-8): create epic "A title long enough')
    assert subject.endswith("more") and len(subject) <= 110
    assert commit_message(["orch(S-2): priority medium -> high (orch prioritize by root)", lines[1]]).startswith(
        "orch(S-2, sprint-002): S-2 priority high; review sprint-002\n\n- orch(S-2)")
