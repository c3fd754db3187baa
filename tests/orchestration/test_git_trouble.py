"""When git cannot commit: health says so (FAIL, the reason, the fix), the project's channel is told once, a stale
index.lock is cleared, registration refuses a repo git will not work in, and one project's trouble (a held lock,
git backing off) never stalls another project's commands."""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestration import service
from orchestration.errors import InvalidInput
from orchestration.gitlog import _Pending
from orchestration.service import Orchestrator
from tests.conftest import git
from tests.orchestration.test_gitlog import head, repo_of, wait_for


@pytest.fixture
def fast(orch: Orchestrator) -> Orchestrator:
    orch.git.retry_s = 0.1
    orch.git.lock_backoff_s = (0.01, 0.02, 0.04)
    return orch


@pytest.fixture
def events(orch: Orchestrator) -> list:
    seen: list = []
    orch.subscribe(seen.append)
    return seen


def other_owner(repo: Path) -> None:
    """The repo (its top folder and .git) owned by another user: git then refuses it ("dubious ownership")."""
    for path in (repo, repo / ".git"):
        os.chown(path, 4242, 4242)


@pytest.fixture
def own_git_config(tmp_path, monkeypatch) -> Path:
    """A global git config of our own, so no safe.directory of the machine's hides the ownership check."""
    cfg = tmp_path / "gitconfig"
    cfg.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    return cfg


# -- health and the one notification -------------------------------------------------------------------------
async def test_a_failing_commit_makes_health_fail_with_the_fix_and_tells_the_channel_once(fast, project, events):
    repo = repo_of(fast)
    (repo / ".git" / "index").write_bytes(b"this is not an index")

    await fast.create_epic(project, "Broken index", by="alice")
    await wait_for(lambda: fast.git.last_outcome.get(repo, "").startswith("failed"))
    await asyncio.sleep(0.4)  # several retries fail the same way

    report = (await fast.health()).projects[0]
    assert not report.ok
    assert any("commits fail" in p and "index file smaller than expected" in p and f"git -C {repo} status" in p
               for p in report.problems), report.problems
    assert [(e.project, e.kind) for e in events] == [("demo", "commits_stuck")]
    assert "index file smaller than expected" in events[0].text

    (repo / ".git" / "index").unlink()
    git(repo, "reset", "-q")  # the user repairs the index
    await wait_for(lambda: len(events) == 2)
    assert [e.kind for e in events] == ["commits_stuck", "commits_resumed"]
    assert (await fast.health()).ok


async def test_changes_waiting_longer_than_the_limit_fail_health_with_the_lock_to_remove(fast, project, events):
    repo = repo_of(fast)
    (repo / ".git" / "index.lock").write_text("")

    await fast.create_epic(project, "Waiting", by="alice")
    await wait_for(lambda: fast.git.last_outcome.get(repo, "").startswith("deferred"))
    assert (await fast.health()).ok  # deferred for a moment: not a problem yet
    assert events == []

    fast.git.stuck_after_s = 0  # as if a minute had passed
    report = (await fast.health()).projects[0]
    assert not report.ok
    assert any("waited" in p and "index.lock" in p and f"rm {repo}/.git/index.lock" in p
               for p in report.problems), report.problems
    await wait_for(lambda: len(events) == 1)
    assert events[0].kind == "commits_stuck" and "index.lock" in events[0].text
    await asyncio.sleep(0.3)
    assert len(events) == 1


# -- a stale index.lock ---------------------------------------------------------------------------------------
def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_an_index_lock_older_than_stale_lock_s_is_removed_and_logged(config, make_repo, caplog):
    config.orchestrator.stale_lock_s = 600
    orch = Orchestrator(config)
    try:
        repo = make_repo("demo")
        await orch.register_project(str(repo), by="admin")
        await orch.flush()
        lock = repo / ".git" / "index.lock"
        lock.write_text("")
        age(lock, 700)
        caplog.set_level(logging.WARNING, logger="orchestration.gitlog")

        started = time.monotonic()
        await orch.create_epic("demo", "After a killed git", by="alice")
        await orch.flush()

        assert orch.git.last_outcome[repo] == "committed" and time.monotonic() - started < 2
        assert not lock.exists()
        assert any("index.lock" in r.getMessage() and "removed" in r.getMessage() for r in caplog.records)
    finally:
        await orch.close()


async def test_an_old_index_lock_stays_while_a_git_process_runs_in_the_repo(fast, project):
    repo = repo_of(fast)
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    age(lock, 7200)
    fast.git.retry_s = 60
    running = subprocess.Popen(["git", "cat-file", "--batch"], cwd=repo, stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL)
    try:
        await fast.create_epic(project, "Not while git runs", by="alice")
        await fast.flush()
        assert fast.git.last_outcome[repo].startswith("deferred") and lock.exists()
    finally:
        running.kill()
        running.wait()
    await fast.flush()
    assert fast.git.last_outcome[repo] == "committed" and not lock.exists()


# -- repos git refuses ---------------------------------------------------------------------------------------
async def test_registration_refuses_a_repo_git_refuses_with_gits_reason(orch, make_repo, own_git_config):
    repo = make_repo("theirs")
    other_owner(repo)

    with pytest.raises(InvalidInput) as refused:
        await orch.register_project(str(repo), by="admin")
    assert "dubious ownership" in refused.value.message
    assert f"safe.directory {repo}" in refused.value.hint
    assert not (repo / ".orch-state").exists() and orch.registry.all() == []

    git(repo, "config", "--global", "--add", "safe.directory", str(repo))  # the fix the hint gives
    await orch.register_project(str(repo), by="admin")
    await orch.flush()
    assert orch.git.last_outcome[repo] == "committed"


async def test_health_fails_at_once_for_a_registered_repo_git_now_refuses(orch, project, own_git_config):
    repo = repo_of(orch)
    other_owner(repo)
    report = (await orch.health()).projects[0]
    assert not report.ok
    assert any("dubious ownership" in p and "safe.directory" in p for p in report.problems), report.problems


async def test_a_fifo_gitignore_does_not_hang_registration(orch, make_repo, monkeypatch):
    monkeypatch.setattr(service, "REGISTER_GIT_TIMEOUT_S", 1)
    repo = make_repo("piped")
    os.mkfifo(repo / ".gitignore")

    started = time.monotonic()
    with pytest.raises(InvalidInput) as refused:
        await orch.register_project(str(repo), by="admin")
    assert time.monotonic() - started < 5
    assert "did not answer" in refused.value.message
    assert not (repo / ".orch-state").exists()


# -- the user's staged rename across the .orch-state boundary -------------------------------------------------
@pytest.mark.parametrize("rename", [("README.md", ".orch-state/readme.md"),
                                    (".orch-state/architecture.md", "architecture.md")])
async def test_a_staged_rename_across_orch_state_defers_and_stays_staged(fast, project, rename):
    """Decision: our commit would take one half of the user's rename; it waits, with the reason, until the user
    commits (or undoes) it."""
    repo = repo_of(fast)
    fast.git.retry_s = 60
    git(repo, "mv", *rename)
    staged_before = git(repo, "diff", "--cached", "--name-status", "-M")
    before = head(repo)

    await fast.create_epic(project, "Beside a rename", by="alice")
    await fast.flush()

    assert fast.git.last_outcome[repo] == (f"deferred: a staged rename of {rename[0]} to {rename[1]} crosses "
                                           ".orch-state (commit or undo it first)")
    assert head(repo) == before
    assert git(repo, "diff", "--cached", "--name-status", "-M") == staged_before
    git(repo, "commit", "-q", "-m", "the user's rename")
    await fast.flush()
    assert fast.git.last_outcome[repo] == "committed"
    assert "E-1" in git(repo, "log", "-1", "--format=%s")


# -- recover racing another process --------------------------------------------------------------------------
async def test_recover_when_another_process_commits_between_its_two_steps(config, orch, project):
    repo = repo_of(orch)
    notes = repo / ".orch-state" / "architecture.md"
    notes.write_text(notes.read_text() + "- Edited by hand.\n")
    restarted = Orchestrator(config)
    try:
        gate = restarted.git._pending.setdefault(repo, _Pending()).lock
        await gate.acquire()  # holds recover between "something waits" and its commit
        recovering = asyncio.create_task(restarted.git.recover(repo))
        await wait_for(lambda: restarted.git.pending_lines(repo) == 1)
        await orch.git.flush(repo)  # meanwhile another process commits it
        assert orch.git.last_outcome[repo] == "committed"
        gate.release()
        assert await recovering == "nothing"
    finally:
        await restarted.close()


# -- one project's trouble never stalls another --------------------------------------------------------------
HOLD = """
import sys
from filelock import FileLock
locks = [FileLock(p) for p in sys.argv[1:]]
for lock in locks:
    lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
async def three(orch, make_repo):
    """Projects demo, b and c in a process whose shared thread pool is small (as on a 2-core machine)."""
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
    for name in ("demo", "b", "c"):
        await orch.register_project(str(make_repo(name)), by="admin")
    await orch.flush()
    return orch


async def test_a_held_state_lock_in_other_projects_does_not_stall_this_ones_commands(three):
    orch = three
    locks = [str(repo_of(orch, n) / ".orch-state" / ".lock") for n in ("b", "c")]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, *locks], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        waiting = [asyncio.create_task(orch.create_epic(n, "Waits for the lock", by="bob")) for n in ("b", "c")]
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await asyncio.wait_for(orch.create_epic("demo", "Not held up", by="alice"), 5)
        assert time.monotonic() - started < 2  # not the 10 s a lock wait in each shared thread took
    finally:
        holder.kill()
        holder.wait()
    for done in await asyncio.gather(*waiting):
        assert done.epic.id == "E-1"


async def test_git_backing_off_in_other_projects_does_not_stall_this_ones_commands_or_commit(three):
    orch = three
    orch.git.lock_backoff_s = (2.0, 2.0, 2.0)
    orch.git.retry_s = 60
    for name in ("b", "c"):
        (repo_of(orch, name) / ".git" / "index.lock").write_text("")
        await orch.create_epic(name, "Backs off", by="bob")
    backing_off = [asyncio.create_task(orch.git.flush(repo_of(orch, n))) for n in ("b", "c")]
    await asyncio.sleep(0.2)

    started = time.monotonic()
    await orch.create_epic("demo", "Not held up", by="alice")
    await orch.git.flush(repo_of(orch))
    assert time.monotonic() - started < 1.5  # not the 2 s sleeps of b's and c's back-off in the shared threads
    assert orch.git.last_outcome[repo_of(orch)] == "committed"
    for name in ("b", "c"):
        (repo_of(orch, name) / ".git" / "index.lock").unlink()
    await asyncio.gather(*backing_off)


async def test_stuck_commits_count_as_resumed_once_another_process_committed_the_changes(config, fast, project,
                                                                                         events):
    repo = repo_of(fast)
    fast.git.stuck_after_s = 0
    (repo / ".git" / "index.lock").write_text("")
    await fast.create_epic(project, "Stuck here", by="alice")
    await wait_for(lambda: [e.kind for e in events] == ["commits_stuck"])

    (repo / ".git" / "index.lock").unlink()
    other = Orchestrator(config)  # the CLI, say, commits the change
    try:
        await other.git.flush(repo)
        assert other.git.last_outcome[repo] == "committed"
    finally:
        await other.close()
    await wait_for(lambda: [e.kind for e in events] == ["commits_stuck", "commits_resumed"])
    assert fast.git.last_outcome[repo] == "nothing" and (await fast.health()).ok


async def test_commits_waiting_for_a_state_lock_held_elsewhere_leave_gits_threads_to_other_projects(three):
    """A commit waits for the project's file lock on the event loop: commits of projects whose lock another
    process holds never take git's two threads from this project's commit."""
    orch = three
    for name in ("b", "c"):
        await orch.create_epic(name, "Queued before the lock was taken", by="bob")
    locks = [str(repo_of(orch, n) / ".orch-state" / ".lock") for n in ("b", "c")]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, *locks], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        waiting = [asyncio.create_task(orch.git.flush(repo_of(orch, n))) for n in ("b", "c")]
        await asyncio.sleep(0.2)
        await orch.create_epic("demo", "Not held up", by="alice")
        await asyncio.wait_for(orch.git.flush(repo_of(orch)), 5)  # not the 10 s of a lock wait in each thread
        assert orch.git.last_outcome[repo_of(orch)] == "committed"
    finally:
        holder.kill()
        holder.wait()
    await asyncio.gather(*waiting)
    assert all(orch.git.last_outcome[repo_of(orch, n)] == "committed" for n in ("b", "c"))
