"""Sprint and story branches, story worktrees under data_dir, --no-ff merges with conflict detection, clean-up;
and through all of it the user's checked-out branch, working tree and index stay exactly as they were."""
from __future__ import annotations

import shutil

import pytest

from orchestration.agents.worktree import Worktrees, commit_leftovers
from orchestration.errors import UnsafePath
from tests.conftest import git
from tests.orchestration.agents.conftest import user_view


def commit_in(tree, name: str, text: str, message: str = "work") -> None:
    (tree / name).write_text(text)
    git(tree, "add", name)
    git(tree, "commit", "-qm", message)


def test_story_worktrees_live_under_data_dir_and_leave_the_user_alone(repo, trees, data_dir):
    before = user_view(repo)
    head = git(repo, "rev-parse", "HEAD").strip()
    sprint = trees.make_sprint_branch("sprint-001")
    assert sprint == "orch/sprint-001" and git(repo, "rev-parse", sprint).strip() == head
    path = trees.prepare_story("S-3", sprint)
    assert path == (data_dir / "worktrees" / "shop" / "S-3").resolve()
    assert not path.is_relative_to(repo)
    assert git(path, "symbolic-ref", "HEAD").strip() == "refs/heads/orch/S-3"
    assert (path / "app.py").read_text() == "print('v1')\n"  # the committed file, not the user's edit
    assert not (path / "notes.txt").exists() and not (path / "staged.txt").exists()
    commit_in(path, "feature.py", "x = 1\n")
    trees.remove_story("S-3")
    assert not path.exists()
    assert git(repo, "rev-parse", "--verify", "orch/S-3")  # the branch stays
    assert user_view(repo) == before


def test_an_existing_sprint_branch_is_kept(repo, trees):
    sprint = trees.make_sprint_branch("sprint-001")
    story = trees.prepare_story("S-1", sprint)
    commit_in(story, "a.py", "a\n")
    assert trees.merge_story("S-1", sprint, "merge S-1").merged
    tip = git(repo, "rev-parse", sprint)
    assert trees.make_sprint_branch("sprint-001") == sprint  # after a restart
    assert git(repo, "rev-parse", sprint) == tip


def test_a_later_attempt_continues_and_a_fresh_one_starts_over_on_the_current_sprint(repo, trees):
    sprint = trees.make_sprint_branch("sprint-001")
    path = trees.prepare_story("S-1", sprint)
    commit_in(path, "first.py", "1\n")
    (path / "scratch.txt").write_text("left behind\n")
    assert trees.prepare_story("S-1", sprint) == path
    assert (path / "first.py").exists() and (path / "scratch.txt").exists()
    other = trees.prepare_story("S-2", sprint)
    commit_in(other, "second.py", "2\n")
    assert trees.merge_story("S-2", sprint, "merge S-2").merged
    trees.prepare_story("S-1", sprint, fresh=True)
    assert git(path, "rev-parse", "HEAD") == git(repo, "rev-parse", sprint)
    assert (path / "second.py").exists() and not (path / "first.py").exists()
    assert not (path / "scratch.txt").exists()
    # a worktree whose folder vanished (a crash, a person) is made again
    trees.remove_story("S-2")
    assert trees.prepare_story("S-2", sprint).joinpath("second.py").exists()


def test_merges_are_no_ff_and_a_conflict_is_aborted_and_reported(repo, trees):
    before = user_view(repo)
    sprint = trees.make_sprint_branch("sprint-001")
    one, two = trees.prepare_story("S-1", sprint), trees.prepare_story("S-2", sprint)
    commit_in(one, "shared.py", "one\n")
    commit_in(two, "shared.py", "two\n")
    start = git(repo, "rev-parse", sprint).strip()
    first = trees.merge_story("S-1", sprint, "orch(S-1): merge")
    assert first.merged and first.conflicts == []
    assert first.commit == git(repo, "rev-parse", sprint).strip() != start
    parents = git(repo, "log", "-1", "--format=%P", sprint).split()
    assert len(parents) == 2 and parents[0] == start  # a merge commit, even where a fast-forward would do
    assert git(repo, "log", "-1", "--format=%an <%ae>|%s", sprint).strip() == "Orch Test <orch@test>|orch(S-1): merge"
    second = trees.merge_story("S-2", sprint, "orch(S-2): merge")
    assert not second.merged and second.conflicts == ["shared.py"]
    assert git(repo, "rev-parse", sprint).strip() == first.commit  # nothing half-merged
    assert not (trees.root / ".merge").exists()
    assert "/.merge" not in git(repo, "worktree", "list")
    # the story goes again on top of the current sprint branch, and then merges
    again = trees.prepare_story("S-2", sprint, fresh=True)
    commit_in(again, "shared.py", "one\ntwo\n")
    assert trees.merge_story("S-2", sprint, "orch(S-2): merge").merged
    assert user_view(repo) == before


def test_a_sprint_branch_checked_out_by_a_person_is_not_merged_into(repo, trees, tmp_path):
    sprint = trees.make_sprint_branch("sprint-001")
    commit_in(trees.prepare_story("S-1", sprint), "a.py", "a\n")
    git(repo, "worktree", "add", "-q", str(tmp_path / "mine"), sprint)
    with pytest.raises(Exception, match="Cannot check out orch/sprint-001 to merge S-1"):
        trees.merge_story("S-1", sprint, "merge")


def test_commit_leftovers_commits_everything_but_bytecode(trees, sprint):
    path = trees.prepare_story("S-1", sprint)
    assert not commit_leftovers(path, "nothing yet", trees.env)
    (path / "pkg" / "__pycache__").mkdir(parents=True)
    (path / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    (path / "pkg" / "m.py").write_text("x = 1\n")
    (path / "app.py").unlink()
    assert commit_leftovers(path, "S-1: add m\n\nand drop app", trees.env)
    assert git(path, "log", "-1", "--format=%an|%B").strip() == "Orch Test|S-1: add m\n\nand drop app"
    assert git(path, "show", "--name-status", "--format=", "HEAD").split("\n")[:2] == ["D\tapp.py", "A\tpkg/m.py"]


def test_prune_removes_what_a_crash_left(repo, trees, data_dir):
    sprint = trees.make_sprint_branch("sprint-001")
    keep = trees.prepare_story("S-1", sprint)
    gone = trees.prepare_story("S-2", sprint)
    (trees.root / "S-9").mkdir()  # a folder git never heard of (a crash mid-way)
    (trees.root / "S-9" / "half.txt").write_text("x")
    git(repo, "worktree", "add", "-q", str(trees.root / ".merge"), "--detach", sprint)  # an interrupted merge
    shutil.rmtree(gone)  # a worktree whose folder vanished: git still lists it until pruned
    assert trees.prune() == [".merge", "S-9"]
    assert keep.exists() and not (trees.root / "S-9").exists()
    listed = git(repo, "worktree", "list", "--porcelain")
    assert str(keep) in listed and "S-2" not in listed and ".merge" not in listed
    assert trees.prune(keep={"S-7"}) == ["S-1"]  # S-1 is no longer in progress
    assert not keep.exists() and git(repo, "rev-parse", "--verify", "orch/S-1")  # its branch stays


def test_worktrees_inside_the_repository_are_refused(repo):
    with pytest.raises(UnsafePath, match="inside the repository"):
        Worktrees(repo, repo / "data", "shop", "Orch", "orch@test")


def test_the_callers_git_variables_never_reach_our_git(repo, trees, monkeypatch, tmp_path):
    """A GIT_INDEX_FILE or GIT_DIR in the bot's environment (say, started from a git hook) would point our
    git at the user's files; they are dropped."""
    before = user_view(repo)
    monkeypatch.setenv("GIT_INDEX_FILE", str(repo / ".git" / "index"))
    monkeypatch.setenv("GIT_DIR", str(tmp_path))
    trees = Worktrees(repo, trees.root.parents[1], "shop", "Orch Test", "orch@test")
    sprint = trees.make_sprint_branch("sprint-001")
    path = trees.prepare_story("S-1", sprint)
    (path / "b.py").write_text("b\n")
    assert commit_leftovers(path, "b", trees.env)
    monkeypatch.delenv("GIT_INDEX_FILE")
    monkeypatch.delenv("GIT_DIR")
    assert user_view(repo) == before
