"""Git log of .orch-state: path-limited, batched commits in real repos, and every way git can say "not now"."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration.errors import Busy
from orchestration.gitlog import RECOVER_LINE
from orchestration.service import Orchestrator
from tests.conftest import GIT_ID, git

BOT = "Orch Test <orch@test>"  # commit_author of the shared config fixture


def repo_of(orch: Orchestrator, name: str = "demo") -> Path:
    return orch.registry.get(name).path


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def messages(repo: Path) -> str:
    return git(repo, "log", "--format=%B")


def user_view(repo: Path) -> tuple[str, str, str]:
    """What a developer sees of their own work: status, staged diff, unstaged diff."""
    return git(repo, "status", "--porcelain"), git(repo, "diff", "--cached"), git(repo, "diff")


def paths_committed_since(repo: Path, base: str) -> set[str]:
    return {p for p in git(repo, "log", "--format=", "--name-only", f"{base}..HEAD").split() if p}


def committed(orch: Orchestrator, repo: Path):
    """A predicate: the last try committed and nothing waits (lines being committed are not "waiting")."""
    return lambda: orch.git.last_outcome.get(repo) == "committed" and orch.git.pending_lines(repo) == 0


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
def fast(orch: Orchestrator) -> Orchestrator:
    """The shared orchestrator with short waits, so "held forever" and retries take a test-friendly time."""
    orch.git.retry_s = 0.1
    orch.git.lock_backoff_s = (0.01, 0.02, 0.04)
    return orch


# -- only .orch-state, never the user's files ----------------------------------------------------------------
async def test_commits_hold_only_state_and_leave_the_users_work_exactly_as_it_was(orch, project):
    repo = repo_of(orch)
    base = head(repo)
    (repo / "README.md").write_text("# demo\nmodified, not staged\n")
    (repo / "feature.py").write_text("print('staged, new')\n")
    git(repo, "add", "feature.py")
    (repo / "notes.txt").write_text("untracked\n")
    before = user_view(repo)

    await orch.create_epic(project, "Login", by="alice")
    await orch.add_story(project, "E-1", "Sign in", by="alice")
    await orch.flush()

    assert orch.git.last_outcome[repo] == "committed"
    assert user_view(repo) == before
    committed = paths_committed_since(repo, base)
    assert committed and all(p.startswith(".orch-state/") for p in committed)
    assert "feature.py" not in git(repo, "ls-tree", "-r", "--name-only", "HEAD")


async def test_a_user_edit_inside_orch_state_staged_or_not_is_committed_with_the_next_change(orch, project):
    """Decision: the bot owns .orch-state; its working tree (what the bot reads) is what gets committed."""
    repo = repo_of(orch)
    arch = repo / ".orch-state" / "architecture.md"
    arch.write_text(arch.read_text() + "\nHand note: use PostgreSQL.\n")
    git(repo, "add", ".orch-state/architecture.md")

    await orch.create_epic(project, "Storage", by="alice")
    await orch.flush()

    assert "Hand note: use PostgreSQL." in git(repo, "show", "HEAD:.orch-state/architecture.md")
    assert git(repo, "status", "--porcelain") == ""


async def test_unborn_branch_first_commit_holds_only_state_even_with_staged_user_files(orch, make_repo):
    repo = make_repo("fresh", commit=False)
    (repo / "notes.txt").write_text("staged before any commit\n")
    git(repo, "add", "notes.txt")
    (repo / "draft.txt").write_text("untracked\n")
    before = git(repo, "status", "--porcelain")

    await orch.register_project(str(repo), by="admin")
    await orch.flush()

    assert orch.git.last_outcome[repo] == "committed"
    tracked = git(repo, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert tracked and all(p.startswith(".orch-state/") for p in tracked)
    assert git(repo, "status", "--porcelain") == before  # notes.txt still staged, draft.txt still untracked
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "1"


# -- messages and identity -------------------------------------------------------------------------------
async def test_one_change_one_commit_whose_message_is_the_line_by_the_bot(orch, project):
    repo = repo_of(orch)
    await orch.create_epic(project, "New feature", by="alice")
    await orch.flush()
    assert git(repo, "log", "-1", "--format=%B").strip() == 'orch(E-1): create epic "New feature" (/epic create by alice)'
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip() == f"{BOT}|{BOT}"


async def test_changes_within_the_batch_window_make_one_commit_listing_each(config, project, make_repo):
    config.orchestrator.commit_batch_ms = 500
    slow = Orchestrator(config)
    try:
        repo = repo_of(slow)
        commits_before = git(repo, "rev-list", "--count", "HEAD")
        await slow.create_epic(project, "One", by="alice")
        await slow.create_epic(project, "Two", by="bob")
        await slow.add_story(project, "E-2", "Three", by="carol")
        # The replies came back before git: nothing is committed yet, and the files are already on disk.
        assert git(repo, "rev-list", "--count", "HEAD") == commits_before
        assert len(json.loads((repo / ".orch-state" / "backlog.json").read_text())["epics"]) == 2
        await wait_for(committed(slow, repo))
        assert int(git(repo, "rev-list", "--count", "HEAD")) == int(commits_before) + 1
        assert git(repo, "log", "-1", "--format=%B").strip() == (
            'orch(E-1, E-2, S-1): create epic "One"; create epic "Two"; add story "Three" [medium]\n\n'
            '- orch(E-1): create epic "One" (/epic create by alice)\n'
            '- orch(E-2): create epic "Two" (/epic create by bob)\n'
            '- orch(S-1, E-2): add story "Three" [medium] (/backlog add_story by carol)'
        )
    finally:
        await slow.close()


async def test_no_hook_runs_and_no_signing_even_when_the_users_config_asks(orch, project, tmp_path):
    repo = repo_of(orch)
    marker = tmp_path / "ran"
    failing = f"#!/bin/sh\necho \"$0\" >> {marker}\nexit 1\n"
    hooks = tmp_path / "user-hooks"
    hooks.mkdir()
    for folder in (repo / ".git" / "hooks", hooks):
        for name in ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "post-index-change"):
            (folder / name).write_text(failing)
            (folder / name).chmod(0o755)
    gpg = tmp_path / "gpg"
    gpg.write_text(f"#!/bin/sh\necho gpg >> {marker}\nexit 1\n")
    gpg.chmod(0o755)
    git(repo, "config", "core.hooksPath", str(hooks))
    git(repo, "config", "commit.gpgsign", "true")
    git(repo, "config", "gpg.program", str(gpg))

    await orch.create_epic(project, "Hooked", by="alice")
    await orch.flush()

    assert orch.git.last_outcome[repo] == "committed"
    assert "E-1" in git(repo, "log", "-1", "--format=%s")
    assert not marker.exists()
    assert git(repo, "log", "-1", "--format=%G?").strip() == "N"  # not signed


# -- index.lock --------------------------------------------------------------------------------------------
async def test_index_lock_released_soon_commit_lands_after_backing_off(orch, project):
    repo = repo_of(orch)
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    asyncio.get_running_loop().call_later(0.3, lock.unlink)
    started = time.monotonic()

    await orch.create_epic(project, "Locked out", by="alice")
    await orch.flush()

    assert orch.git.last_outcome[repo] == "committed"
    assert time.monotonic() - started >= 0.3
    assert "E-1" in git(repo, "log", "-1", "--format=%s")


async def test_index_lock_held_forever_defers_keeps_the_line_and_commits_on_a_later_flush(fast, project):
    repo = repo_of(fast)
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    before = head(repo)

    await fast.create_epic(project, "Waiting", by="alice")
    fast.git.retry_s = 60  # only an explicit flush retries in this test
    await fast.flush()

    assert fast.git.last_outcome[repo] == "deferred: another git process holds index.lock"
    assert fast.git.pending_lines(repo) == 1 and head(repo) == before
    assert "E-1" in (repo / ".orch-state" / "backlog.json").read_text()  # safe on disk meanwhile
    lock.unlink()
    await fast.flush()
    assert fast.git.last_outcome[repo] == "committed" and fast.git.pending_lines(repo) == 0
    assert git(repo, "log", "-1", "--format=%B").strip() == 'orch(E-1): create epic "Waiting" (/epic create by alice)'


async def test_a_deferred_commit_is_retried_by_the_timer_without_a_new_command(fast, project):
    repo = repo_of(fast)
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    await fast.create_epic(project, "Retried", by="alice")
    await wait_for(lambda: fast.git.last_outcome.get(repo, "").startswith("deferred"))
    lock.unlink()
    await wait_for(committed(fast, repo))  # no flush, no command: the retry timer did it
    assert fast.git.last_outcome[repo] == "committed"
    assert "E-1" in git(repo, "log", "-1", "--format=%s")


# -- the user's own git operations ---------------------------------------------------------------------------
async def test_merge_in_progress_defers_and_commits_once_the_user_finishes_it(fast, project):
    repo = repo_of(fast)
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "README.md").write_text("# other\n")
    git(repo, "commit", "-q", "-am", "other side")
    git(repo, "checkout", "-q", "main")
    (repo / "README.md").write_text("# main\n")
    git(repo, "commit", "-q", "-am", "main side")
    merge = subprocess.run(["git", *GIT_ID, "merge", "other"], cwd=repo, capture_output=True, text=True)
    assert merge.returncode != 0 and (repo / ".git" / "MERGE_HEAD").exists()
    before = head(repo)
    fast.git.retry_s = 60

    await fast.create_epic(project, "During merge", by="alice")  # a merge leaves our files alone: allowed
    await fast.flush()
    assert fast.git.last_outcome[repo] == "deferred: a merge is in progress"
    assert head(repo) == before and fast.git.pending_lines(repo) == 1

    (repo / "README.md").write_text("# merged\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "--no-edit")  # the user's merge commit: our unstaged change is not in it
    assert git(repo, "diff", "--name-only", "HEAD^1", "HEAD").split() == ["README.md"]
    await fast.flush()
    assert fast.git.last_outcome[repo] == "committed"
    assert "E-1" in git(repo, "log", "-1", "--format=%s")
    assert git(repo, "status", "--porcelain") == ""


async def test_rebase_in_progress_refuses_changes_and_they_work_again_once_it_ends(fast, project):
    """During a rebase a deferred change would block `rebase --continue` (unstaged changes) and be wiped by
    `rebase --abort`, so the change is refused up front and nothing is written."""
    repo = repo_of(fast)
    (repo / "README.md").write_text("# second\n")
    git(repo, "commit", "-q", "-am", "second")
    env = {**os.environ, "GIT_SEQUENCE_EDITOR": "sed -i 1s/^pick/edit/", "GIT_EDITOR": "true"}
    subprocess.run(["git", *GIT_ID, "rebase", "-q", "-i", "HEAD~1"], cwd=repo, env=env, check=True,
                   capture_output=True)
    assert (repo / ".git" / "rebase-merge").exists()
    backlog = (repo / ".orch-state" / "backlog.json").read_bytes()

    with pytest.raises(Busy) as refused:
        await fast.create_epic(project, "During rebase", by="alice")
    assert "rebase" in str(refused.value)
    assert (repo / ".orch-state" / "backlog.json").read_bytes() == backlog

    subprocess.run(["git", *GIT_ID, "rebase", "--continue"], cwd=repo, env=env, check=True, capture_output=True)
    await fast.create_epic(project, "After rebase", by="alice")
    await fast.flush()
    assert fast.git.last_outcome[repo] == "committed"
    assert git(repo, "log", "-1", "--format=%s", "main").strip().startswith("orch(E-1)")


async def test_detached_head_defers_and_the_commit_lands_on_the_branch_checked_out_later(fast, project):
    repo = repo_of(fast)
    git(repo, "checkout", "-q", "--detach")
    detached_at = head(repo)

    await fast.create_epic(project, "While detached", by="alice")
    await wait_for(lambda: fast.git.last_outcome.get(repo, "").startswith("deferred: HEAD is detached"))
    assert head(repo) == detached_at

    git(repo, "checkout", "-q", "main")  # carries the unstaged .orch-state change over
    await wait_for(committed(fast, repo))  # the retry timer commits it, no command needed
    assert "E-1" in git(repo, "log", "-1", "--format=%s", "main")
    assert git(repo, "status", "--porcelain") == ""


# -- failures and recovery -----------------------------------------------------------------------------------
async def test_a_git_failure_is_logged_without_the_command_line_and_the_lines_are_kept(fast, project, caplog):
    repo = repo_of(fast)
    index = repo / ".git" / "index"
    index.write_bytes(b"this is not an index")
    caplog.set_level(logging.ERROR, logger="orchestration.gitlog")

    await fast.create_epic(project, "Broken index", by="alice")
    await wait_for(lambda: fast.git.last_outcome.get(repo, "").startswith("failed"))
    assert fast.git.pending_lines(repo) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "exited with 128" in errors[0]  # logged once, not at every retry
    assert "core.hooksPath" not in caplog.text and "Broken index" not in caplog.text

    await fast.add_story(project, "E-1", "Still works", by="bob")  # the loop and the commands go on
    index.unlink()
    git(repo, "reset", "-q")  # the user repairs the index
    await wait_for(committed(fast, repo))
    log = messages(repo)
    assert "E-1" in log and "S-1" in log


CRASH = """
import asyncio, os, sys
from orchestration.config import Config
from orchestration.service import Orchestrator

async def main():
    orch = Orchestrator(Config.model_validate_json(sys.argv[1]))
    await orch.create_epic("demo", "Written just before a crash", by="carol")
    os._exit(0)  # dies inside the batch window: the file is on disk, the commit never happened

asyncio.run(main())
"""


async def test_start_commits_what_a_crash_left_uncommitted(config, orch, project):
    repo = repo_of(orch)
    crashing = config.model_copy(deep=True)
    crashing.orchestrator.commit_batch_ms = 60_000
    subprocess.run([sys.executable, "-c", CRASH, crashing.model_dump_json()], check=True, timeout=60)
    assert "E-1" in (repo / ".orch-state" / "backlog.json").read_text()
    assert git(repo, "status", "--porcelain") == " M .orch-state/backlog.json\n M .orch-state/status.json\n"

    restarted = Orchestrator(config)
    try:
        assert await restarted.start() == {"demo": "committed"}
        assert git(repo, "status", "--porcelain") == ""
        # The crashed command's own message survived in the queue: the audit trail says who did what.
        assert git(repo, "log", "-1", "--format=%s").strip() == \
            'orch(E-1): create epic "Written just before a crash" (/epic create by carol)'
        assert "Written just before a crash" in git(repo, "show", "HEAD:.orch-state/backlog.json")
        assert await restarted.start() == {"demo": "nothing"}
    finally:
        await restarted.close()


async def test_start_commits_a_hand_edit_with_a_line_that_says_so(config, orch, project):
    repo = repo_of(orch)
    notes = repo / ".orch-state" / "architecture.md"
    notes.write_text(notes.read_text() + "- Edited by hand.\n")
    restarted = Orchestrator(config)
    try:
        assert await restarted.start() == {"demo": "committed"}
        assert git(repo, "log", "-1", "--format=%s").strip() == RECOVER_LINE
        assert git(repo, "status", "--porcelain") == ""
    finally:
        await restarted.close()


async def test_a_commit_by_another_process_carries_this_ones_lines_too(config, orch, project):
    """The bot and the CLI share the queue: whichever commits first names every change it holds."""
    repo = repo_of(orch)
    slow_config = config.model_copy(deep=True)
    slow_config.orchestrator.commit_batch_ms = 60_000  # the "bot": its commit would come much later
    bot = Orchestrator(slow_config)
    try:
        await bot.create_epic(project, "From the bot", by="alice")
        await orch.create_epic(project, "From the CLI", by="bob")
        await orch.flush()  # the "CLI" commits first
        subject_and_body = git(repo, "log", "-1", "--format=%B")
        assert '"From the bot" (/epic create by alice)' in subject_and_body
        assert '"From the CLI" (/epic create by bob)' in subject_and_body
        assert git(repo, "status", "--porcelain") == "" and bot.git.pending_lines(repo) == 0
    finally:
        await bot.close()
    assert git(repo, "log", "-1", "--format=%B") == subject_and_body  # the bot found nothing left to commit


# -- a long run ---------------------------------------------------------------------------------------------
def child_processes() -> list[str]:
    """Names of this process's live (or zombie) children."""
    names = []
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                names.append(Path(f"/proc/{pid}/comm").read_text().strip())
            except FileNotFoundError:
                pass
    return names


async def test_no_git_processes_pile_up_over_200_commands(orch, project):
    repo = repo_of(orch)
    await orch.create_epic(project, "Long run", by="alice")
    for i in range(200):
        await orch.add_story(project, "E-1", f"Story {i}", by="alice")
    await orch.flush()

    assert [n for n in child_processes() if n.startswith("git")] == []
    assert orch.git.last_outcome[repo] == "committed"
    log = messages(repo)
    assert all(f"S-{i}," in log for i in range(1, 201))
    commits = int(git(repo, "rev-list", "--count", "HEAD"))
    assert 2 < commits < 200  # batched, yet not all in one


# -- a queue git cannot take as it is --------------------------------------------------------------------------
async def test_a_queued_line_git_cannot_take_is_escaped_and_odd_lines_never_block(orch, project):
    """A NUL, a lone surrogate or an escape in a line (queued by an older version, or by hand) is written out
    as text; a torn line, a line that is not a string and bytes that are not UTF-8 are passed over."""
    repo = repo_of(orch)
    orch.git.record(repo, ['orch(E-9): create epic "a\x00b\ud800c\x1b]52;;x\x07" (/epic create by mallory)'])
    with open(repo / ".orch-state" / ".commit-queue", "ab") as fh:
        fh.write(b'"torn by a cra\n{"not": "a string"}\n\xff\xfe not utf-8\n')

    await orch.create_epic(project, "After the odd lines", by="alice")
    await orch.flush()

    assert orch.git.last_outcome[repo] == "committed" and orch.git.pending_lines(repo) == 0
    message = messages(repo)
    assert 'create epic "a\\x00b\\ud800c\\x1b]52;;x\\x07" (/epic create by mallory)' in message
    assert 'create epic "After the odd lines"' in message
    assert git(repo, "status", "--porcelain") == ""
