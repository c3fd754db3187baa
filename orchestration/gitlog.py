"""Commits .orch-state/ changes to the project repo: batched, path-limited, never touching the user's files.

How a change reaches git:
- A command writes its files durably and, still holding the project's file lock, calls `record(root, lines)`,
  which appends its message lines to `.orch-state/.commit-queue` (fsynced; never committed itself); it replies
  without waiting for git. A commit reads the queue under that same lock and empties it once committed, so a
  commit's message always names exactly the changes it holds, whichever process (bot or CLI) makes it, and
  the lines of a change whose process died before its commit are still there for the next start.
- Lines recorded for one repo within `batch_ms` go into one commit. One line: the message is that line
  (`orch(E-3): create epic "X" (/epic by alice)`); several: a subject with the IDs, then one bullet per line.
- `commit_now` stages and commits .orch-state only (`git add --all -- .orch-state`, then
  `git commit --only -- .orch-state`), so the user's files elsewhere stay exactly as they were: staged stays
  staged, modified stays modified, untracked stays untracked. This also holds on an unborn branch (the first
  commit then holds .orch-state alone).
- The bot owns .orch-state: a hand edit there, staged or not, is committed as it is in the working tree with
  the next change (the working tree is what the bot reads and acts on).
- Every git call runs with the bot's identity as author and committer, with no hooks (`core.hooksPath=/dev/null`
  plus `--no-verify`) and no signing, whatever the user's git config says; a hung git is killed after a minute.
- While it stages and commits, it holds the project's file lock (the one commands hold), so a commit never
  captures half of a command's writes and two processes (bot and CLI) never commit at once.

When git cannot commit now, the outcome says why ("deferred: ..." or "failed: ..."), the lines stay queued, and
the commit is retried every `retry_s` seconds while anything is waiting (and on every `flush()`). Meanwhile
nothing is lost: the files and the queue are on disk, and if the process stops, `recover` commits them at the
next start, with their own messages.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import git

from .errors import Busy
from .store import STATE_DIR, ProjectStore, atomic_write

log = logging.getLogger(__name__)

# index.lock held by another git: wait this long before each new try (about 5 s in all), then defer.
LOCK_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 1.6)
RETRY_S = 5.0  # while a commit is deferred or failed, try again this often
GIT_TIMEOUT_S = 60  # a git process that hangs longer is killed
COMMIT_LOCK_TIMEOUT_S = 10.0
GIT_OPTIONS = ("-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", "-c", "core.quotepath=off")
DONE = ("committed", "nothing")
RECOVER_LINE = "orch: commit .orch-state changes made outside the bot (or before an interrupted run recorded them)"
QUEUE = ".commit-queue"  # in .orch-state: message lines waiting for their commit, one JSON string a line
_STATE_PATHS = ("--", STATE_DIR)  # .orch-state/.gitignore (from the templates) keeps .lock, *.tmp and the queue out
_IDS = re.compile(r"^orch\(([^)]*)\)")
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")


class _IndexLocked(Exception):
    """Another git process holds index.lock."""


@dataclass
class _Pending:
    timer: asyncio.TimerHandle | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _queue_path(repo_root: Path) -> Path:
    return repo_root / STATE_DIR / QUEUE


def queued_lines(repo_root: Path) -> list[str]:
    """The message lines waiting for a commit in this repo (from every process)."""
    try:
        text = _queue_path(repo_root).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = []
    for raw in text.splitlines():
        try:
            lines.append(str(json.loads(raw)))
        except ValueError:  # a line torn by a crash mid-append: skip it, the change itself is in the files
            continue
    return lines


def _append_queue(repo_root: Path, lines: list[str]) -> None:
    with open(_queue_path(repo_root), "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(line) + "\n" for line in lines))
        fh.flush()
        os.fsync(fh.fileno())


def _drop_queued(repo_root: Path, count: int) -> None:
    """Remove the first `count` lines (those just committed); later ones stay for the next commit."""
    rest = queued_lines(repo_root)[count:]
    if rest:
        atomic_write(_queue_path(repo_root), "".join(json.dumps(line) + "\n" for line in rest).encode())
    else:
        _queue_path(repo_root).unlink(missing_ok=True)


def quote(text: str, limit: int = 72) -> str:
    """User text inside a commit line: one line, cut to `limit`, in double quotes (inner ones made single)."""
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return '"' + text.replace('"', "'") + '"'


def commit_message(lines: list[str]) -> str:
    """One line: used as is. Several: a subject with the IDs they touch, then each line."""
    if len(lines) == 1:
        return lines[0]
    ids: list[str] = []
    for line in lines:
        m = _IDS.match(line)
        if m:
            ids.extend(i.strip() for i in m.group(1).split(",") if i.strip() and i.strip() not in ids)
    head = f"orch({', '.join(ids[:8])}{', ...' if len(ids) > 8 else ''})" if ids else "orch"
    return f"{head}: {len(lines)} changes\n\n" + "\n".join(f"- {line}" for line in lines)


class GitLog:
    def __init__(self, author_name: str, author_email: str, batch_ms: int = 250, *, retry_s: float = RETRY_S,
                 lock_backoff_s: tuple[float, ...] = LOCK_BACKOFF_S) -> None:
        self._env = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
            "GIT_TERMINAL_PROMPT": "0",
        }
        self.batch_s = batch_ms / 1000
        self.retry_s = retry_s
        self.lock_backoff_s = lock_backoff_s
        self._pending: dict[Path, _Pending] = {}  # event loop only
        self._tasks: set[asyncio.Task] = set()
        self.last_outcome: dict[Path, str] = {}

    # -- queueing --------------------------------------------------------------------------------------------
    def record(self, repo_root: Path, lines: list[str]) -> None:
        """Queue message lines for the next commit of this repo. The caller holds the project's file lock
        (commands do, in their worker thread, right after writing; a commit reads the queue under the same lock,
        so its message always matches its content), and calls `commit_soon` on the event loop afterwards."""
        if lines:
            _append_queue(repo_root, lines)

    def commit_soon(self, repo_root: Path) -> None:
        """Commit what is queued for this repo once the batch window ends (event loop only)."""
        self._schedule(repo_root, self.batch_s)

    def pending_lines(self, repo_root: Path) -> int:
        return len(queued_lines(repo_root))

    def _schedule(self, root: Path, delay: float) -> None:
        pending = self._pending.setdefault(root, _Pending())
        if pending.timer is None:
            pending.timer = asyncio.get_running_loop().call_later(delay, self._flush_in_background, root)

    def _flush_in_background(self, root: Path) -> None:
        task = asyncio.get_running_loop().create_task(self.flush(root))
        self._tasks.add(task)  # keep a reference until it ends (the loop only holds weak ones)
        task.add_done_callback(self._tasks.discard)

    async def flush(self, repo_root: Path | None = None) -> None:
        """Try to commit what is queued now (for one repo, or all). Never raises for a git problem."""
        for root in [repo_root] if repo_root is not None else list(self._pending):
            await self._flush_one(root)

    async def _flush_one(self, root: Path) -> None:
        pending = self._pending.setdefault(root, _Pending())
        async with pending.lock:  # one commit at a time per repo
            if pending.timer is not None:  # this flush does what the timer was waiting to do
                pending.timer.cancel()
                pending.timer = None
            if not await asyncio.to_thread(self.pending_lines, root):
                return
            try:
                outcome = await asyncio.to_thread(self.commit_now, root)
            except Exception as exc:  # logged below; the lines are kept and retried
                outcome = f"failed: {_describe(exc)}"
            await self._note(root, outcome)
            if outcome not in DONE:
                self._schedule(root, self.retry_s)

    async def _note(self, root: Path, outcome: str) -> None:
        """Keep the outcome; log it when it changes (a stale index.lock would otherwise log every few seconds)."""
        previous = self.last_outcome.get(root)
        self.last_outcome[root] = outcome
        if outcome == previous:
            return
        waiting = await asyncio.to_thread(self.pending_lines, root)
        if outcome.startswith("failed"):
            log.error("commit of %d change(s) in %s %s; kept for a retry in %.0f s", waiting, root, outcome,
                      self.retry_s)
        elif outcome.startswith("deferred"):
            log.warning("commit of %d change(s) in %s %s; retrying every %.0f s", waiting, root, outcome,
                        self.retry_s)
        elif previous and previous not in DONE:
            log.info("commits in %s resumed after: %s", root, previous)

    async def close(self) -> None:
        """Commit what can be committed; what cannot stays on disk for `recover` at the next start."""
        self._cancel_timers()  # no new background flush while the running ones end
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()
        self._cancel_timers()  # the retries a deferred commit scheduled
        for root in self._pending:
            if waiting := await asyncio.to_thread(self.pending_lines, root):
                log.warning("%d change(s) in %s left uncommitted (%s); the next start commits them",
                            waiting, root, self.last_outcome.get(root))

    def _cancel_timers(self) -> None:
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
                pending.timer = None

    async def recover(self, repo_root: Path) -> str:
        """At start-up: commit what a stopped process left uncommitted, with the messages it queued (retried
        like any other commit)."""
        if not await asyncio.to_thread(self._queue_leftovers, repo_root):
            return "nothing"
        await self.flush(repo_root)
        return self.last_outcome[repo_root]

    # -- git work (worker thread) ----------------------------------------------------------------------------
    def commit_now(self, repo_root: Path) -> str:
        """Commit .orch-state of one repo with the lines queued for it. Returns what happened: "committed",
        "nothing" (no change left: another process committed it, with its own message) or "deferred: <why>"
        (the lines stay queued). Raises for anything unexpected (the lines stay queued too)."""
        repo = git.Repo(repo_root)
        try:
            why = why_commit_waits(repo)
            if why:
                return f"deferred: {why}"
            for delay in (*self.lock_backoff_s, None):
                try:
                    with ProjectStore(repo_root).locked(timeout=COMMIT_LOCK_TIMEOUT_S):
                        lines = queued_lines(repo_root)  # under the file lock: exactly the changes on disk
                        outcome = self._commit(repo.git, lines)
                        _drop_queued(repo_root, len(lines))  # only now: a failure above keeps them queued
                        return outcome
                except _IndexLocked:
                    if delay is None:
                        return "deferred: another git process holds index.lock"
                    time.sleep(delay)  # outside the file lock, so commands go on meanwhile
                except Busy:
                    return "deferred: the state files stayed locked by another process"
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            repo.close()  # ends GitPython's persistent cat-file processes, if any were started

    def _commit(self, g: git.Git, lines: list[str]) -> str:
        if not lines:
            return "nothing"  # an earlier try took them; a hand edit alone waits for the next change
        self._git(g, "add", "--all", *_STATE_PATHS)
        status, _, _ = self._git(g, "diff", "--cached", "--quiet", *_STATE_PATHS, check=False)
        if status == 0:
            return "nothing"
        self._git(g, "commit", "--only", "--no-verify", "--no-gpg-sign", "--quiet", "-m", commit_message(lines),
                  *_STATE_PATHS)
        return "committed"

    def _queue_leftovers(self, repo_root: Path) -> bool:
        """Under the file lock: whether anything waits for a commit. Changed state files with no queued line
        (a hand edit, or a process that died between writing and recording) get RECOVER_LINE."""
        with ProjectStore(repo_root).locked(timeout=COMMIT_LOCK_TIMEOUT_S):
            if queued_lines(repo_root):
                return True
            _, out, _ = self._git(git.Git(repo_root), "status", "--porcelain", "--untracked-files=all", *_STATE_PATHS)
            if not out.strip():
                return False
            self.record(repo_root, [RECOVER_LINE])
            return True

    def _git(self, g: git.Git, *args: str, check: bool = True) -> tuple[int, str, str]:
        """Run one git command in the repo with the bot's identity and options; returns (status, out, err)."""
        status, out, err = g.execute(["git", *GIT_OPTIONS, *args], env=self._env, with_extended_output=True,
                                     with_exceptions=False, kill_after_timeout=GIT_TIMEOUT_S)
        if check and status != 0:
            if "index.lock" in err:
                raise _IndexLocked()
            # Our own message, not GitCommandError's: that one repeats the whole command line.
            raise RuntimeError(f"git {args[0]} exited with {status}: {err.strip()[:300]}")
        return status, out, err


def _describe(exc: Exception) -> str:
    """An error as one log-safe line: no command line, no credentials in URLs."""
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError) else str(exc)
    return _URL_CREDENTIALS.sub(r"\1***@", " ".join(text.split()))[:400]


def _in_progress(git_dir: Path) -> str | None:
    """The user's own git operation that a commit of ours must not cut into, or None."""
    if (git_dir / "MERGE_HEAD").exists():
        return "a merge"
    if (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists():
        return "a rebase"
    if (git_dir / "CHERRY_PICK_HEAD").exists() or (git_dir / "REVERT_HEAD").exists() or (git_dir / "sequencer").exists():
        return "a cherry-pick or revert"
    return None


def writes_blocked(repo_root: Path) -> str | None:
    """Why the state files must not change now, or None: a rebase, cherry-pick or revert in progress.

    A deferred commit would leave our change unstaged in the working tree, where it does harm during these:
    `git rebase --continue` refuses to go on while there are unstaged changes, and `--abort` resets the work
    tree, which would throw our change away. A merge is different (`git commit` and `merge --abort` leave
    unstaged changes alone), so during a merge commands go on and their commit is deferred."""
    dotgit = repo_root / ".git"
    if dotgit.is_file():  # a linked worktree or submodule: "gitdir: <path>"
        dotgit = (repo_root / dotgit.read_text().partition("gitdir:")[2].strip()).resolve()
    why = _in_progress(dotgit)
    return None if why in (None, "a merge") else why


def why_commit_waits(repo: git.Repo) -> str | None:
    """Why committing now would be wrong, or None.

    - A merge, rebase, cherry-pick or revert in progress: the user is in the middle of their own commit; ours
      waits until they finish.
    - A detached HEAD (a checkout of an old commit, a bisect): a commit there belongs to no branch and is lost
      from sight when the user checks out a branch. Deferring keeps the change in the working tree, which
      `git checkout <branch>` carries over, and it is committed on that branch.
    """
    why = _in_progress(Path(repo.git_dir))
    if why:
        return f"{why} is in progress"
    if repo.head.is_detached:
        return "HEAD is detached (commit after checking out a branch)"
    return None
