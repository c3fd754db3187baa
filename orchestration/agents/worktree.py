"""Git branches and worktrees for agent work, outside the user's working tree.

Layout (one project):
- `orch/sprint-NNN`: the sprint branch, made from the commit checked out when the sprint starts.
- `orch/S-<n>`: one branch per story, made from the sprint branch; its worktree is
  `<data_dir>/worktrees/<project>/S-<n>`, never inside the user's working tree.
- Accepted stories are merged into the sprint branch with `git merge --no-ff` in a merge worktree of its own
  (`.../<project>/.merge`, removed after each merge); a conflict is aborted there and reported.

The user's checked-out branch, working tree and index are never touched: everything here runs either in our
own worktrees or as ref-only commands (`git branch`, `git worktree add/remove/prune`) in the repository.
Every git call runs with the bot's identity, without hooks or signing (gitlog.GIT_OPTIONS) and without any
GIT_* variable of the caller's environment (a GIT_INDEX_FILE or GIT_DIR would point git at the user's files).

Everything here blocks (git subprocesses): call it from a worker thread (`asyncio.to_thread`). Merges of
one project are serialised by a file lock; preparing two different stories at once is fine.

Seam for the orchestrator: `Worktrees(repo, data_dir, project, author_name, author_email)`, then
`prune()` at start, `make_sprint_branch()` at /sprint start, `prepare_story()` before each attempt,
`merge_story()` when a story is accepted, `remove_story()` once it is done.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection

from filelock import FileLock

from ..errors import OrchError, UnsafePath
from ..gitlog import GIT_OPTIONS, GIT_TIMEOUT_S

WORKTREES = "worktrees"  # under data_dir
MERGE_DIR = ".merge"
MERGE_LOCK_TIMEOUT_S = 120.0


class WorktreeError(OrchError):
    """A git step of agent work failed; the message names the step and git's own words."""


def bot_env(author_name: str, author_email: str) -> dict[str, str]:
    """The environment of our git calls: the caller's minus every GIT_* variable, plus the bot's identity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME=author_name, GIT_AUTHOR_EMAIL=author_email, GIT_COMMITTER_NAME=author_name,
               GIT_COMMITTER_EMAIL=author_email, GIT_TERMINAL_PROMPT="0",
               GIT_OPTIONAL_LOCKS="0")  # a `git status` of ours never rewrites an index
    return env


def run_git(cwd: Path, *args: str, env: dict[str, str], check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """One git command in `cwd` with GIT_OPTIONS; raises WorktreeError (git's message, no command line)."""
    try:
        done = subprocess.run(["git", *GIT_OPTIONS, *args], cwd=cwd, env=env, input=stdin, capture_output=True,
                              text=True, encoding="utf-8", errors="replace", timeout=GIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise WorktreeError(f"git {args[0]} did not finish within {GIT_TIMEOUT_S} s in {cwd}") from None
    if check and done.returncode != 0:
        raise WorktreeError(f"git {args[0]} failed in {cwd}: {done.stderr.strip()[:300]}")
    return done


def story_branch(story_id: str) -> str:
    return f"orch/{story_id}"


def sprint_branch(sprint_id: str) -> str:
    return f"orch/{sprint_id}"


# Bytecode a test run leaves behind is never part of a story's commit.
_LEFTOVER_PATHS = ("--", ".", ":(exclude,glob)**/__pycache__/**", ":(exclude,glob)**/*.pyc")


def commit_leftovers(workdir: Path, message: str, env: dict[str, str]) -> bool:
    """Commit everything left uncommitted in a story's worktree on its branch (the agent's "done" work), with
    `message`; False when there was nothing to commit."""
    run_git(workdir, "add", "--all", *_LEFTOVER_PATHS, env=env)
    if run_git(workdir, "diff", "--cached", "--quiet", env=env, check=False).returncode == 0:
        return False
    run_git(workdir, "commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message, env=env)
    return True


def sprint_log(repo: Path, sprint_id: str, base: str, limit: int = 50) -> tuple[str | None, list[str]]:
    """The sprint branch (None if there is none) and its commits since `base`, newest first: "sha subject"."""
    branch = sprint_branch(sprint_id)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = run_git(repo, "log", f"--max-count={limit}", "--format=%h %s", f"{base}..refs/heads/{branch}", "--",
                   env=env, check=False)
    return (branch, done.stdout.splitlines()) if done.returncode == 0 else (None, [])


@dataclass
class MergeResult:
    merged: bool
    commit: str | None = None  # the sprint branch's tip after the merge
    conflicts: list[str] = field(default_factory=list)  # paths in conflict (then nothing was merged)


class Worktrees:
    """The agent branches and worktrees of one project repository."""

    def __init__(self, repo: Path, data_dir: Path, project: str, author_name: str, author_email: str) -> None:
        self.repo = repo.resolve()
        self.root = (data_dir / WORKTREES / project).resolve()
        if self.root.is_relative_to(self.repo):
            raise UnsafePath(f"The worktrees folder {self.root} would be inside the repository {self.repo}.",
                             "Set [orchestrator] data_dir to a folder outside every project repository.")
        self.env = bot_env(author_name, author_email)

    def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_git(cwd or self.repo, *args, env=self.env, check=check)

    def story_path(self, story_id: str) -> Path:
        return self.root / story_id

    def branch_exists(self, branch: str) -> bool:
        return self.git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False).returncode == 0

    def tip(self, ref: str) -> str:
        return self.git("rev-parse", "--verify", f"{ref}^{{commit}}").stdout.strip()

    # -- sprint ----------------------------------------------------------------------------------------------
    def make_sprint_branch(self, sprint_id: str, commit: str = "HEAD") -> str:
        """Make `orch/<sprint_id>` at `commit` (default: what the user has checked out) and return its name.
        An existing sprint branch is kept as it is: after a restart it holds the merges made so far."""
        branch = sprint_branch(sprint_id)
        if not self.branch_exists(branch):
            self.git("branch", "--no-track", branch, self.tip(commit))
        return branch

    # -- stories ---------------------------------------------------------------------------------------------
    def prepare_story(self, story_id: str, sprint: str, *, fresh: bool = False) -> Path:
        """The worktree of a story, on `orch/<story_id>`, ready for an attempt; returns its path.

        The first attempt makes the branch from the sprint branch `sprint`. A later attempt continues where
        the previous one left the worktree (its commits, and files it left uncommitted). `fresh=True` starts
        over on top of the current sprint branch, discarding the story's earlier work: use it after a merge
        conflict or a policy breach."""
        branch, path = story_branch(story_id), self.story_path(story_id)
        if self._is_worktree_on(path, branch):
            if fresh:
                self.git("reset", "--quiet", "--hard", self.tip(sprint), cwd=path)
                self.git("clean", "-ffdqx", cwd=path)
            return path
        self._discard(path)
        self.root.mkdir(parents=True, exist_ok=True)
        if fresh or not self.branch_exists(branch):
            self.git("worktree", "add", "--quiet", "--no-track", "-B", branch, str(path), self.tip(sprint))
        else:
            self.git("worktree", "add", "--quiet", str(path), branch)
        return path

    def remove_story(self, story_id: str) -> None:
        """Remove a finished story's worktree (whatever it holds); its branch stays."""
        self._discard(self.story_path(story_id))

    def merge_story(self, story_id: str, sprint: str, message: str) -> MergeResult:
        """Merge `orch/<story_id>` into the sprint branch `sprint` with --no-ff, in a merge worktree of its own.
        A conflict is aborted (the sprint branch stays where it was) and its paths returned."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / ".merge.lock"), timeout=MERGE_LOCK_TIMEOUT_S):
            path = self.root / MERGE_DIR
            self._discard(path)
            add = self.git("worktree", "add", "--quiet", str(path), sprint, check=False)
            if add.returncode != 0:
                raise WorktreeError(f"Cannot check out {sprint} to merge {story_id}: {add.stderr.strip()[:300]}",
                                    "A branch checked out elsewhere (by a person?) cannot be merged into here.")
            try:
                merge = self.git("merge", "--no-ff", "--no-edit", "--no-verify", "-m", message,
                                 story_branch(story_id), cwd=path, check=False)
                if merge.returncode == 0:
                    return MergeResult(True, self.tip(sprint))
                conflicts = self.git("diff", "--name-only", "--diff-filter=U", cwd=path).stdout.split("\n")
                conflicts = [c for c in conflicts if c]
                self.git("merge", "--abort", cwd=path, check=False)
                if not conflicts:
                    raise WorktreeError(f"git merge of {story_id} into {sprint} failed: "
                                        f"{(merge.stderr or merge.stdout).strip()[:300]}")
                return MergeResult(False, self.tip(sprint), conflicts)
            finally:
                self._discard(path)

    # -- plans -----------------------------------------------------------------------------------------------
    def prepare_plan(self, epic_id: str, commit: str | None = None) -> tuple[Path, str]:
        """A detached, read-only checkout of `commit` (default: what the user has checked out, HEAD), for a
        planner of the epic; returns (path, commit). Nothing of it is ever committed or merged: `remove_plan`
        drops it."""
        path = self.root / f".plan-{epic_id}"
        self._discard(path)
        self.root.mkdir(parents=True, exist_ok=True)
        head = self.tip(commit or "HEAD")
        self.git("worktree", "add", "--quiet", "--detach", str(path), head)
        return path, head

    def remove_plan(self, epic_id: str) -> None:
        self._discard(self.root / f".plan-{epic_id}")

    # -- clean-up --------------------------------------------------------------------------------------------
    def prune(self, keep: Collection[str] | None = None) -> list[str]:
        """At start: forget worktrees whose folder is gone (`git worktree prune`), remove folders under our
        root that git does not know (a crash mid-way), and any merge worktree. With `keep` (the stories still
        in progress), story worktrees not in it are removed too. Returns the names removed."""
        self.git("worktree", "prune")
        if not self.root.is_dir():
            return []
        known = self._registered()
        removed = []
        for child in sorted(self.root.iterdir()):
            if not child.is_dir():
                continue
            stale = (child not in known or child.name == MERGE_DIR
                     or (keep is not None and child.name not in keep))
            if stale:
                self._discard(child)
                removed.append(child.name)
        return removed

    def _registered(self) -> set[Path]:
        out = self.git("worktree", "list", "--porcelain").stdout
        return {Path(line.removeprefix("worktree ")).resolve() for line in out.splitlines()
                if line.startswith("worktree ")}

    def _is_worktree_on(self, path: Path, branch: str) -> bool:
        if not (path / ".git").is_file() or path not in self._registered():
            return False
        head = self.git("symbolic-ref", "--quiet", "HEAD", cwd=path, check=False).stdout.strip()
        return head == f"refs/heads/{branch}"

    def _discard(self, path: Path) -> None:
        """Remove a worktree of ours, registered or not, and its folder."""
        if path.exists() and path in self._registered():
            self.git("worktree", "remove", "--force", "--force", str(path), check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        self.git("worktree", "prune")
