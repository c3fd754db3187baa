"""Commits .orch-state/ changes to the project repo: batched, path-limited, never touching the user's files.

How a change reaches git:
- A command writes its files durably and, still holding the project's file lock, calls
  `record(root, lines, paths)`, which appends its message lines and the paths it wrote (with the size, mtime and
  inode each write left) to `.orch-state/.commit-queue` (fsynced; never committed itself); it replies without
  waiting for git. A commit takes the queue under that same lock and empties it once committed, so a commit's
  message always names exactly the changes it holds, whichever process (bot or CLI) makes it, and the lines of
  a change whose process died before its commit are still there for the next start.
- Lines recorded for one repo within `batch_ms` go into one commit. One line: the message is that line
  (`orch(E-3): create epic "X" (/epic by alice)`); several: a subject with the IDs and what happened
  (`orch(S-4, sprint-002): S-4 done; review sprint-002`), then one bullet per line.
- No command waits for git. Under the file lock a commit only reads the queue and the bytes of the files it
  commits (a snapshot); then, outside it, git builds the commit in a private index (`GIT_INDEX_FILE`:
  read-tree HEAD, update-index, write-tree, commit-tree) and moves the branch with a compare-and-swap
  (`update-ref HEAD <new> <old>`; when another commit landed in between, it is built again on top of that).
  Only .orch-state paths are in it: the user's files elsewhere stay exactly as they were (staged stays staged,
  modified stays modified, untracked stays untracked), also on an unborn branch (the first commit then holds
  .orch-state alone). Afterwards the user's index gets the committed entries of those paths, so their
  `git status` shows no committed .orch-state change. One commit runs at a time per repository, across
  processes (a lock in the git folder), and never while another git holds index.lock.
- Hand edits: a changed .orch-state file that no queued change wrote is a change made outside the bot (or by a
  process that died before it recorded its lines). With the next change it is committed first, in a commit of
  its own (HAND_EDIT_LINE, naming the files); `hand_edits()` lists those waiting, for health. A file the bot
  wrote and someone edited afterwards is committed as it is, with the bot's change, whose message names it. A
  hand edit of a file that a command then rewrote cannot be told apart: the command read it and changed it, so
  it is part of that command's commit (the working tree is what the bot reads and acts on).
- Every git call runs with the bot's identity as author and committer, with no hooks (`core.hooksPath=/dev/null`;
  plumbing runs none anyway) and no signing, whatever the user's git config says; a hung git is killed after a
  minute.

When git cannot commit now, the outcome says why ("deferred: ..." or "failed: ..."), the lines stay queued, and
the commit is retried every `retry_s` seconds while anything is waiting (and on every `flush()`). Meanwhile
nothing is lost: the files and the queue are on disk, and if the process stops, `recover` commits them at the
next start, with their own messages.

Commits that are stuck (the last try failed, git refuses the repo, or changes waited longer than
`stuck_after_s`) are a problem `trouble()` states with the command that fixes it, for health, and reported
once per episode through `on_event` ("commits_stuck", then "commits_resumed"). An index.lock older than
`stale_lock_s` while no git process works in the repo is what a git killed mid-commit leaves: it is removed.

Git runs in a small pool of its own, so a slow or hung git never takes the threads every command shares, and
the waits between tries (index.lock held) happen on the event loop, not in a thread.
A queued line is never a blocker: one that does not parse is passed over, and characters git cannot take in a
message (NUL, lone surrogates) and terminal controls are written out as escapes (`\x00`).
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import os
import re
import subprocess
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, TypeVar

from . import filelocks
from .commands import SIGNED
from .errors import StateLocked, UnsafePath
from .store import (
    LOCK_NAME, LOCK_TIMEOUT_S, STATE_DIR, ProjectStore, append_state_file, atomic_write,
    read_state_file, state_dir_of,
)

log = logging.getLogger(__name__)

# index.lock held by another git: wait this long before each new try (about 5 s in all), then defer.
LOCK_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 1.6)
RETRY_S = 5.0  # while a commit is deferred or failed, try again this often
MIN_COMMIT_GAP_S = 0.5  # under sustained load, at most one commit this often (each holding what waited)
GIT_TIMEOUT_S = 60  # a git process that hangs longer is killed
GIT_THREADS = 2  # git's own pool: commits of all projects, never the threads commands use
STUCK_AFTER_S = 60.0  # changes waiting longer than this are a problem health reports
STALE_LOCK_S = 600.0  # an index.lock this old, with no git running in the repo, is removed
GIT_OPTIONS = ("-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", "-c", "core.quotepath=off")
DONE = ("committed", "nothing")
RECOVER_LINE = "orch: commit .orch-state changes made outside the bot (or before an interrupted run recorded them)"
HAND_EDIT_LINE = "orch: commit .orch-state changes made outside the bot"  # committed before the next change's own
CAS_TRIES = 5  # the branch moved between reading HEAD and updating it: build again on top, this often
ZERO_OID = "0" * 40
_COMMIT_LOCK = "orch-commit.lock"  # in the git folder: one commit at a time per repository, across processes
# In .orch-state: the message lines waiting for their commit, one JSON object a line: {"at": when, "line": text}.
QUEUE = ".commit-queue"
_STATE_PATHS = ("--", STATE_DIR)  # .orch-state/.gitignore (from the templates) keeps .lock, *.tmp and the queue out
_IDS = re.compile(r"^orch\(([^)]*)\)")
_VALUE_CHANGE = re.compile(r"^(status|priority) \S+ -> (\S+)$")
SUBJECT_MAX = 100
# What a commit message must not hold: NUL (git's argv cannot), lone surrogates (not UTF-8), controls.
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")
T = TypeVar("T")


class _IndexLocked(Exception):
    """Another git process holds index.lock."""


@dataclass
class _Pending:
    timer: asyncio.TimerHandle | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_commit: float = -math.inf  # time.monotonic() when this process's last commit here landed


def _queue_path(repo_root: Path) -> Path:
    return repo_root / STATE_DIR / QUEUE


Signature = tuple[int, int, int]  # (size, mtime_ns, inode) of a file as the bot wrote it


@dataclass
class _Entry:
    """One `record` call: when, its message lines, and the files it wrote or removed (.orch-state-relative, each
    with the signature it left, None for removed), or None when anything may have changed."""
    at: float | None
    lines: list[str]
    paths: dict[str, Signature | None] | None


def _entries(repo_root: Path) -> list[_Entry]:
    """The queue, oldest first. A line that does not parse (torn by a crash mid-append, not UTF-8, not ours)
    is passed over: the change itself is in the files, and is then committed as one made outside the bot."""
    try:
        raw = read_state_file(repo_root, QUEUE)
    except (FileNotFoundError, UnsafePath):  # a symlink is not our queue: never read (commands and health say so)
        return []
    entries = []
    for line in raw.splitlines():
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, str):  # queued by a version that kept no time
            entries.append(_Entry(None, [escaped(value)], None))
        elif isinstance(value, dict):
            at = value.get("at")
            at = at if isinstance(at, (int, float)) and not isinstance(at, bool) else None
            lines = value["lines"] if isinstance(value.get("lines"), list) else [value.get("line")]
            lines = [escaped(text) for text in lines if isinstance(text, str)]
            if lines:
                entries.append(_Entry(at, lines, _paths_of(value.get("paths"))))
    return entries


def _paths_of(value: object) -> dict[str, Signature | None] | None:
    if not isinstance(value, dict):
        return None  # an older version's entry, or one without paths: anything may have changed
    paths: dict[str, Signature | None] = {}
    for rel, sig in value.items():
        ok = isinstance(sig, list) and len(sig) == 3 and all(isinstance(n, int) for n in sig)
        paths[rel] = tuple(sig) if ok else None  # type: ignore[assignment]
    return paths


def _encode(entries: list[_Entry]) -> bytes:
    return "".join(json.dumps({"at": e.at, "lines": e.lines, "paths": e.paths}) + "\n" for e in entries).encode()


def queued_lines(repo_root: Path) -> list[str]:
    """The message lines waiting for a commit in this repo (from every process)."""
    return [line for entry in _entries(repo_root) for line in entry.lines]


def waited_s(repo_root: Path) -> float | None:
    """How long the oldest queued line has waited (lines without a time: since the queue last changed)."""
    entries = _entries(repo_root)
    if not entries:
        return None
    times = [e.at for e in entries if e.at is not None]
    if len(times) < len(entries):
        try:
            times.append(_queue_path(repo_root).lstat().st_mtime)
        except FileNotFoundError:
            pass
    return max(0.0, time.time() - min(times)) if times else None


def _signature(repo_root: Path, rel: str) -> Signature | None:
    try:
        st = (repo_root / STATE_DIR / rel).lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _append_queue(repo_root: Path, lines: list[str], paths: list[str] | None) -> None:
    sigs = None if paths is None else {rel: _signature(repo_root, rel) for rel in paths}
    append_state_file(repo_root, QUEUE, _encode([_Entry(time.time(), lines, sigs)]))


def _drop_queued(repo_root: Path, count: int) -> None:
    """Remove the first `count` entries (those just committed); later ones stay for the next commit. (Only one
    commit runs at a time per repository, across processes: see _COMMIT_LOCK.)"""
    rest = _entries(repo_root)[count:]
    if rest:
        atomic_write(_queue_path(repo_root), _encode(rest))
    else:
        _queue_path(repo_root).unlink(missing_ok=True)


def escaped(text: str) -> str:
    """`text` with what git cannot take in a message (NUL, lone surrogates) and control characters written out
    as escapes, so one odd line never stops a project's commits."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


def quote(text: str, limit: int = 72) -> str:
    """User text inside a commit line: one line, cut to `limit`, in double quotes (inner ones made single)."""
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return '"' + text.replace('"', "'") + '"'


def commit_message(lines: list[str]) -> str:
    """One line: used as is. Several: a subject with the IDs they touch and what happened to them, in order
    (`orch(S-4, sprint-002): S-4 done; review sprint-002`), cut to about SUBJECT_MAX characters with the count
    of what did not fit, then each line in full."""
    if len(lines) == 1:
        return lines[0]
    ids: list[str] = []
    for line in lines:
        m = _IDS.match(line)
        if m:
            ids.extend(i.strip() for i in m.group(1).split(",") if i.strip() and i.strip() not in ids)
    head = f"orch({', '.join(ids[:8])}{', ...' if len(ids) > 8 else ''})" if ids else "orch"
    gists = [_gist(line) for line in lines]
    subject = f"{head}: {gists[0]}"
    for shown, gist in enumerate(gists[1:], start=1):
        rest = len(gists) - shown - 1
        tail = f"; and {rest} more" if rest else ""
        if len(subject) + 2 + len(gist) + len(tail) > SUBJECT_MAX:
            subject += f"; and {len(gists) - shown} more"
            break
        subject += f"; {gist}"
    return subject + "\n\n" + "\n".join(f"- {line}" for line in lines)


def _gist(line: str) -> str:
    """What one line says happened, short: without its `orch(...)` head and its `(/command by who)` origin;
    a status or priority change as the ID and its new value (`S-4 done`, `S-2 priority high`)."""
    m = _IDS.match(line)
    ids = [i.strip() for i in m.group(1).split(",")] if m else []
    text = SIGNED.sub("", line[m.end():] if m else line).removeprefix(":").strip()
    if ids and (change := _VALUE_CHANGE.match(text)):
        what, new = change.groups()
        return f"{ids[0]} {new}" if what == "status" else f"{ids[0]} {what} {new}"
    return text


def _rel(path: str) -> str:
    """A repository-relative path under .orch-state, relative to .orch-state."""
    return path.removeprefix(STATE_DIR + "/")


def _last_signatures(entries: list[_Entry]) -> dict[str, Signature | None]:
    """Repository-relative path -> the signature the bot's last queued write of it left."""
    written: dict[str, Signature | None] = {}
    for entry in entries:
        for rel, sig in (entry.paths or {}).items():
            written[f"{STATE_DIR}/{rel}"] = sig
    return written


def listed(paths: list[str], limit: int = 20) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


@dataclass
class _Snapshot:
    """What one commit holds, taken under the project's file lock: the bytes of every file it commits
    (repository-relative path -> bytes, None for a removed file), and which of them are hand edits.

    A file changed but written by no queued change is a hand edit (or the change of a process that died before
    it recorded its lines): it goes into a commit of its own, first. A file the bot wrote that no longer has
    the signature the bot's write left was edited outside the bot since: it is committed as it is now, with the
    bot's change, and the message names it. A hand edit made BEFORE a command rewrote the same file cannot be
    told apart: the command read it and wrote it back changed, so it is part of that command's commit."""

    files: dict[str, bytes | None]
    hand: set[str]
    edited_after: list[str]

    @classmethod
    def take(cls, root: Path, entries: list[_Entry], changed: set[str]) -> "_Snapshot":
        written = _last_signatures(entries)
        files: dict[str, bytes | None] = {}
        for path in sorted(changed | set(written)):
            try:
                files[path] = read_state_file(root, _rel(path))
            except FileNotFoundError:
                files[path] = None
            except (UnsafePath, OSError) as exc:  # not a file the bot could have written: left as it is
                log.warning("not committing %s of %s: %s", path, root, exc)
        if any(e.paths is None for e in entries):  # anything may be the bot's: all of it is the batch's
            return cls(files, set(), [])
        return cls(files, {p for p in files if p not in written},
                   sorted(p for p in files if p in written and _signature(root, _rel(p)) != written[p]))

    def hand_edits(self) -> list[str]:
        return sorted(self.hand)

    def bot_changes(self) -> list[str]:
        return sorted(set(self.files) - self.hand)


class GitLog:
    def __init__(self, author_name: str, author_email: str, batch_ms: int = 250, *, retry_s: float = RETRY_S,
                 lock_backoff_s: tuple[float, ...] = LOCK_BACKOFF_S, stale_lock_s: float = STALE_LOCK_S,
                 on_event: Callable[[Path, str, str], None] | None = None) -> None:
        self._env = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        }
        self.batch_s = batch_ms / 1000
        self.retry_s = retry_s
        self.lock_backoff_s = lock_backoff_s
        self.stale_lock_s = stale_lock_s
        self.stuck_after_s = STUCK_AFTER_S
        self.on_event = on_event  # (repo root, kind, text): "commits_stuck" / "commits_resumed", once each
        self._pending: dict[Path, _Pending] = {}  # event loop only
        self._tasks: set[asyncio.Task] = set()
        self._stuck: set[Path] = set()  # repos whose trouble was reported and has not ended yet
        self._pool: ThreadPoolExecutor | None = None
        self.last_outcome: dict[Path, str] = {}
        self._index_debt: dict[Path, set[str]] = {}  # committed paths the user's index does not show yet
        # For the benchmark: commits made, and each committed line's lag (recorded -> its commit on the branch).
        self.commits_made = 0
        self.lag_samples: deque[float] = deque(maxlen=100_000)

    # -- queueing --------------------------------------------------------------------------------------------
    def record(self, repo_root: Path, lines: list[str], paths: list[str] | None = None) -> None:
        """Queue message lines for the next commit of this repo, with the .orch-state-relative `paths` the change
        wrote or removed (None: anything under .orch-state may have changed). The caller holds the project's file
        lock (commands do, in their worker thread, right after writing; a commit takes the queue and the files'
        bytes under that same lock, so its message always matches its content), and calls `commit_soon` on the
        event loop afterwards. Each path's signature (size, mtime, inode) is kept: a file that no longer has it
        when the commit takes it was edited outside the bot since."""
        if lines:
            _append_queue(repo_root, lines, paths)

    def commit_soon(self, repo_root: Path) -> None:
        """Commit what is queued for this repo once the batch window ends (event loop only). Under sustained
        load, commits come at most every MIN_COMMIT_GAP_S (or batch window, if longer), so that slow commands
        too share a commit by several (the lag stays under a second)."""
        last = self._pending.setdefault(repo_root, _Pending()).last_commit
        gap = max(self.batch_s, MIN_COMMIT_GAP_S)
        self._schedule(repo_root, max(self.batch_s, last + gap - time.monotonic()))

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

    async def _in_pool(self, fn: Callable[..., T], *args: object) -> T:
        """Run git work in git's own threads, never in the pool every command shares (in a copy of the caller's
        context, as asyncio.to_thread does: a file lock the caller holds is held there too)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(GIT_THREADS, thread_name_prefix="orch-git")
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(context.run, fn, *args))

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
            if root in self._index_debt and not await self._in_pool(self._pay_index_debt, root):
                self._schedule(root, self.retry_s)
            if await self._in_pool(self.pending_lines, root):
                outcome = await self._commit_with_backoff(root)
                if outcome == "committed":
                    pending.last_commit = time.monotonic()
            elif self.last_outcome.get(root, "nothing") in DONE:
                return
            else:  # what waited here was committed by another process
                outcome = "nothing"
            await self._note(root, outcome)
            if outcome not in DONE:
                self._schedule(root, self.retry_s)
            if outcome not in DONE or root in self._stuck:  # a commit that flows needs no diagnosis
                self._report(root, outcome, await self._in_pool(self.trouble, root))

    async def _commit_with_backoff(self, root: Path) -> str:
        """Try `commit_now`; while another git holds index.lock, wait on the event loop between tries."""
        backoff = iter(self.lock_backoff_s)
        while True:
            try:
                return await self.commit_now(root)
            except _IndexLocked:
                delay = next(backoff, None)
                if delay is None:
                    return "deferred: another git process holds index.lock"
            except StateLocked:  # after a blocking wait of LOCK_TIMEOUT_S
                return "deferred: the state files stayed locked by another process"
            except filelocks.Timeout:
                return "deferred: another process's commit did not end"
            except Exception as exc:  # logged by _note; the lines are kept and retried
                return f"failed: {_describe(exc)}"
            await asyncio.sleep(delay)

    async def _note(self, root: Path, outcome: str) -> None:
        """Keep the outcome; log it when it changes (a stale index.lock would otherwise log every few seconds)."""
        previous = self.last_outcome.get(root)
        if outcome == previous:
            return
        waiting = await asyncio.to_thread(self.pending_lines, root)
        self.last_outcome[root] = outcome  # seen only once logged: whoever reads it finds the log written
        if outcome.startswith("failed"):
            log.error("commit of %d change(s) in %s %s; kept for a retry in %.0f s", waiting, root, outcome,
                      self.retry_s)
        elif outcome.startswith("deferred"):
            log.warning("commit of %d change(s) in %s %s; retrying every %.0f s", waiting, root, outcome,
                        self.retry_s)
        elif previous and previous not in DONE:
            log.info("commits in %s resumed after: %s", root, previous)

    def _report(self, root: Path, outcome: str, trouble: str | None) -> None:
        """Tell `on_event` once when commits get stuck, and once when they flow again."""
        if trouble and root not in self._stuck:
            self._stuck.add(root)
            kind, text = "commits_stuck", trouble
        elif not trouble and outcome in DONE and root in self._stuck:
            self._stuck.discard(root)
            kind, text = "commits_resumed", "commits resumed: every change is committed again"
        else:
            return
        if self.on_event is not None:
            try:
                self.on_event(root, kind, text)
            except Exception:  # a listener's bug must not stop commits
                log.exception("the listener of %s failed", kind)

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
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _cancel_timers(self) -> None:
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
                pending.timer = None

    async def recover(self, repo_root: Path) -> str:
        """At start-up: commit what a stopped process left uncommitted, with the messages it queued (retried
        like any other commit)."""
        if not await self._in_pool(self._queue_leftovers, repo_root):
            return "nothing"
        await self.flush(repo_root)
        # Another process may have committed it meanwhile: then this flush found nothing to do.
        return self.last_outcome.get(repo_root, "nothing")

    # -- what health reports -----------------------------------------------------------------------------------
    def trouble(self, repo_root: Path) -> str | None:
        """Why this repo's commits are stuck, with the command that fixes it; None while they flow (or wait only
        briefly). Stuck: git refuses the repo, the last try failed, or changes waited longer than stuck_after_s.
        Reads the queue on disk, so it holds for changes of any process (the CLI asks about the bot's)."""
        last = self.last_outcome.get(repo_root, "")
        try:
            why = why_commit_waits(repo_root)
        except GitFailed as exc:
            return f"commits fail: {exc}. Fix: {fix_for(repo_root, str(exc))}"
        if last.startswith("failed"):
            return f"commits fail: {last.removeprefix('failed: ')}. Fix: {fix_for(repo_root, last)}"
        waited = waited_s(repo_root)
        if waited is None or waited < self.stuck_after_s:
            return None
        if last.startswith("deferred"):
            why = last.removeprefix("deferred: ")
        elif why is None and (_git_dir(repo_root) / "index.lock").exists():
            why = "another git process holds index.lock"
        why = why or "no commit has taken them yet (is the bot running? any changing command commits them)"
        return (f"{self.pending_lines(repo_root)} change(s) waited {_minutes(waited)} for a commit: {why}. "
                f"Fix: {fix_for(repo_root, why)}")

    # -- git work (git's threads) ------------------------------------------------------------------------------
    async def commit_now(self, repo_root: Path) -> str:
        """One try at committing .orch-state of one repo with the lines queued for it. Returns what happened:
        "committed", "nothing" (no change left: another process committed it, with its own message) or
        "deferred: <why>" (the lines stay queued). Raises _IndexLocked when the caller should wait and try again,
        and anything unexpected (the lines stay queued too).

        Under the project's file lock it only takes the queue and the bytes of the files it commits; everything
        git does runs outside it, so no command waits for git. One commit at a time per repository, across
        processes (_COMMIT_LOCK), so the queue's head is always what the commit took. Both locks are waited for
        on the event loop, so a lock another process holds never keeps git's threads from other projects."""
        why, commit_lock, state_lock = await self._in_pool(self._why_not_now, repo_root)
        if why:
            return f"deferred: {why}"
        async with filelocks.hold_async(commit_lock, LOCK_TIMEOUT_S):
            if not await self._in_pool(_entries, repo_root):
                return "nothing"  # an earlier try took them; a hand edit alone waits for the next change
            changed = await self._in_pool(self._changed_paths, repo_root)  # git, before the file lock
            entries, snap = await self._holding(state_lock, self._take_snapshot, repo_root, changed)
            outcome = await self._in_pool(self._commit_snapshot, repo_root, snap, entries)
            if outcome == "committed":
                now = time.time()
                self.lag_samples.extend(now - e.at for e in entries if e.at is not None for _ in e.lines)
                self._index_debt.setdefault(repo_root, set()).update(snap.files)
                await self._in_pool(self._pay_index_debt, repo_root)  # before the queue empties: all done then
            await self._holding(state_lock, self._drop, repo_root, len(entries))
            return outcome

    async def _holding(self, state_lock: Path, fn: Callable[..., T], *args: object) -> T:
        """`fn` in git's threads, holding the project's file lock (waited for on the event loop)."""
        try:
            async with filelocks.hold_async(state_lock, LOCK_TIMEOUT_S):
                return await self._in_pool(fn, *args)
        except filelocks.Timeout:
            raise StateLocked("the state files stayed locked by another process") from None

    def _why_not_now(self, root: Path) -> tuple[str | None, Path, Path]:
        """(why committing now would be wrong, or None; the commit lock; the project's file lock)."""
        self._clear_stale_lock(root)
        return why_commit_waits(root), _git_dir(root) / _COMMIT_LOCK, state_dir_of(root) / LOCK_NAME

    @staticmethod
    def _take_snapshot(root: Path, changed: set[str]) -> tuple[list[_Entry], "_Snapshot"]:
        with ProjectStore(root).locked():  # held by the caller's context: refuses symlinks, ends a torn write
            entries = _entries(root)
            return entries, _Snapshot.take(root, entries, changed)

    @staticmethod
    def _drop(root: Path, count: int) -> None:
        with ProjectStore(root).locked():
            _drop_queued(root, count)

    def _commit_snapshot(self, root: Path, snap: "_Snapshot", entries: list[_Entry]) -> str:
        """Commit the snapshot on the current branch: the hand edits first (their own commit), then the queued
        changes, built in a private index and put on the branch with a compare-and-swap of HEAD (retried from the
        new HEAD when another commit, the user's say, lands in between)."""
        if not snap.files:
            return "nothing"
        lines = [line for e in entries for line in e.lines]
        message = commit_message(lines)
        if snap.edited_after:
            message += ("\n\nEdited outside the bot after this change was written (committed as they are now): "
                        + listed(snap.edited_after))
        steps = [(snap.hand_edits(), f"{HAND_EDIT_LINE}\n\nFiles: {listed(snap.hand_edits())}\n\nChanged by hand, by "
                  "a git command, or by a command whose process stopped before it queued its commit line; "
                  "committed before the changes queued since."),
                 (snap.bot_changes(), message)]
        with tempfile.TemporaryDirectory(prefix="orch-commit-") as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            blobs = self._write_blobs(root, tmp, snap.files)
            for _ in range(CAS_TRIES):
                old = self._head(root)
                self._git(root, "read-tree", *([old] if old else ["--empty"]), env=env)
                tip, tree = old, self._tree_of(root, old)
                for paths, text in steps:
                    if not paths:
                        continue
                    info = "".join(f"100644 {blobs[p]}\t{p}\0" if blobs.get(p) else f"0 {ZERO_OID}\t{p}\0"
                                   for p in paths)
                    self._git(root, "update-index", "-z", "--index-info", env=env, input=info.encode())
                    new_tree = self._git(root, "write-tree", env=env)[1].strip()
                    if new_tree == tree:
                        continue  # nothing of it differs from what the branch has (another process committed it)
                    tip = self._git(root, "commit-tree", new_tree, *(["-p", tip] if tip else []), "-F", "-",
                                    input=text.encode())[1].strip()
                    tree = new_tree
                    self.commits_made += 1
                if tip == old:
                    return "nothing"
                if (_git_dir(root) / "index.lock").exists():
                    raise _IndexLocked()  # a git of the user's is at work (a commit, say): never cut in
                status, _, err = self._git(root, "update-ref", "-m", f"commit: {message.splitlines()[0]}", "HEAD",
                                           tip, old or "", check=False)
                if status == 0:
                    return "committed"
                if "but expected" not in err and "cannot lock ref" not in err:
                    raise GitFailed(f"git update-ref exited with {status}: {err.strip()[:300]}")
                log.info("the branch of %s moved while committing; trying again on top of it", root)
        return "deferred: the branch kept moving while committing"

    def _head(self, root: Path) -> str | None:
        return head_commit(root)  # a method: a test races a user's commit against it

    def _tree_of(self, root: Path, commit: str | None) -> str | None:
        return self._git(root, "rev-parse", f"{commit}^{{tree}}")[1].strip() if commit else None

    def _write_blobs(self, root: Path, tmp: str, files: dict[str, bytes | None]) -> dict[str, str]:
        """Store the snapshot's bytes as git objects (one git for all of them); returns path -> object ID."""
        present = [(path, data) for path, data in files.items() if data is not None]
        if not present:
            return {}
        names = []
        for n, (_, data) in enumerate(present):
            name = os.path.join(tmp, f"blob{n}")
            with open(name, "wb") as fh:
                fh.write(data)
            names.append(name)
        out = self._git(root, "hash-object", "-w", "--no-filters", "--stdin-paths",
                        input="".join(f"{n}\n" for n in names).encode())[1].split()
        return {path: oid for (path, _), oid in zip(present, out)}

    def _changed_paths(self, root: Path) -> set[str]:
        """The .orch-state paths whose working-tree file differs from the branch (modified, added, removed,
        untracked and not ignored), as repository-relative paths. Reads the user's index without writing it."""
        _, out, _ = self._git(root, "--no-optional-locks", "status", "--porcelain=v1", "-z", "--no-renames",
                              "--untracked-files=all", *_STATE_PATHS)
        return {record[3:] for record in out.split("\0") if len(record) > 3}

    def _pay_index_debt(self, root: Path) -> bool:
        """Make the user's index show the committed content of the paths we committed, so their `git status`
        shows no .orch-state change that is committed (their own staged changes elsewhere stay staged). Returns
        whether it is done; while their git holds index.lock it is kept for the next try."""
        paths = self._index_debt.get(root)
        if not paths:
            return True
        try:
            _, out, _ = self._git(root, "--literal-pathspecs", "ls-tree", "-r", "-z", "HEAD", "--", *sorted(paths))
            in_head = {}
            for record in out.split("\0"):
                meta, _, path = record.partition("\t")
                if path in paths:
                    in_head[path] = meta.split()
            info = "".join(f"{in_head[p][0]} {in_head[p][2]}\t{p}\0" if p in in_head else f"0 {ZERO_OID}\t{p}\0"
                           for p in sorted(paths))
            self._git(root, "update-index", "-z", "--index-info", input=info.encode())
            if in_head:  # their stat information too, so that git does not read those files again to compare
                self._git(root, "--literal-pathspecs", "add", "--refresh", "--", *sorted(in_head), check=False)
        except _IndexLocked:
            log.info("the index of %s is locked by another git; it is brought up to date later", root)
            return False
        except GitFailed as exc:
            log.warning("could not bring the index of %s up to date with the last commit: %s", root, exc)
            return False
        del self._index_debt[root]
        return True

    def hand_edits(self, repo_root: Path) -> list[str]:
        """The .orch-state files changed outside the bot and not committed yet (repository-relative). Empty
        while a queued change may have touched anything (its commit takes every change as its own)."""
        entries = _entries(repo_root)
        if any(e.paths is None for e in entries):
            return []
        written = _last_signatures(entries)
        return sorted(path for path in self._changed_paths(repo_root)
                      if path not in written or _signature(repo_root, _rel(path)) != written[path])

    def _clear_stale_lock(self, root: Path) -> None:
        """Remove an index.lock older than stale_lock_s while no git process works in the repo: a git killed
        mid-commit left it, and git itself never removes it (every command would wait and defer, forever)."""
        lock = _git_dir(root) / "index.lock"
        try:
            found = lock.lstat()
        except FileNotFoundError:
            return
        age = time.time() - found.st_mtime
        if age < self.stale_lock_s or git_running_in(root):
            return
        try:
            if lock.lstat().st_ino == found.st_ino:  # still the same stale file, not a new git's lock
                lock.unlink()
        except FileNotFoundError:
            return
        log.warning("removed %s: %.0f s old and no git process runs in %s (left by a git that was killed)",
                    lock, age, root)

    def _queue_leftovers(self, repo_root: Path) -> bool:
        """Whether anything waits for a commit. Changed state files with no queued line (a hand edit, or a
        process that died between writing and recording) get RECOVER_LINE, under the file lock."""
        if queued_lines(repo_root):
            return True
        changed = self._changed_paths(repo_root)
        with ProjectStore(repo_root).locked():
            if queued_lines(repo_root):
                return True
            if changed:
                self.record(repo_root, [RECOVER_LINE])
            return bool(changed)

    def _git(self, root: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
             input: bytes | None = None) -> tuple[int, str, str]:
        """Run one git command in the repo with the bot's identity and options; returns (status, out, err)."""
        status, out, err = run_git(root, *args, env={**self._env, **(env or {})}, check=False, input=input)
        if check and status != 0:
            if "index.lock" in err:
                raise _IndexLocked()
            raise GitFailed(f"git {args[0]} exited with {status}: {err.strip()[:300]}")
        return status, out, err


class GitFailed(RuntimeError):
    """A git command failed or did not answer; the text is git's own reason (no command line)."""


def head_commit(root: Path) -> str | None:
    """The commit checked out in the repository (None on an unborn branch)."""
    status, out, _ = run_git(root, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)
    return out.strip() if status == 0 else None


def run_git(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = GIT_TIMEOUT_S,
            check: bool = True, input: bytes | None = None) -> tuple[int, str, str]:
    """Run git in `root` with our options, no prompt, messages in English (we read some), and a time-out (a hung
    git, e.g. reading a named pipe, is killed). Returns (status, out, err); with `check`, a non-zero status
    raises GitFailed."""
    try:
        done = subprocess.run(["git", *GIT_OPTIONS, *args], cwd=root, capture_output=True, timeout=timeout, input=input,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})})
    except subprocess.TimeoutExpired:
        raise GitFailed(f"git {args[0]} did not answer within {timeout:.0f} s") from None
    out, err = (b.decode("utf-8", "replace") for b in (done.stdout, done.stderr))
    if check and done.returncode != 0:
        raise GitFailed(f"git {args[0]} exited with {done.returncode}: {err.strip()[:300]}")
    return done.returncode, out, err


def fix_for(repo_root: Path, why: str) -> str:
    """The command (or step) that ends this reason for commits to wait or fail."""
    if "dubious ownership" in why:
        return (f"`git config --global --add safe.directory {repo_root}` as the bot's user (or make that user "
                "the repository's owner)")
    if "index.lock" in why:
        return (f"if no git command is running there, `rm {repo_root}/.git/index.lock` (it is removed by itself "
                "once older than stale_lock_s)")
    if "a merge" in why:
        return f"finish the merge (`git -C {repo_root} commit`) or abort it (`git -C {repo_root} merge --abort`)"
    if "detached" in why:
        return f"`git -C {repo_root} checkout <branch>`"
    if "rename" in why:
        return f"commit the rename (`git -C {repo_root} commit`) or undo it (`git -C {repo_root} restore --staged .`)"
    if "is in progress" in why:
        return f"finish or abort it; `git -C {repo_root} status` says how"
    if "state files" in why:
        return f"find the process that holds {repo_root}/{STATE_DIR}/.lock (`fuser {repo_root}/{STATE_DIR}/.lock`)"
    return f"see what git says with `git -C {repo_root} status` and repair the repository"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def git_running_in(root: Path) -> bool:
    """Whether a git process works in this repo (its current folder is inside it). Unsure (no /proc, a process
    we may not look at) counts as yes: a lock is only removed when surely nobody holds it."""
    proc = Path("/proc")
    if not (proc / "self").exists():
        return True
    root = root.resolve()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith("git"):
                continue
            cwd = Path(os.readlink(entry / "cwd"))
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
        except OSError:
            return True
        if cwd == root or root in cwd.parents:
            return True
    return False


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


def _git_dir(repo_root: Path) -> Path:
    dotgit = repo_root / ".git"
    if dotgit.is_file():  # a linked worktree or submodule: "gitdir: <path>"
        dotgit = (repo_root / dotgit.read_text().partition("gitdir:")[2].strip()).resolve()
    return dotgit


def writes_blocked(repo_root: Path) -> str | None:
    """Why the state files must not change now, or None: a rebase, cherry-pick or revert in progress.

    A deferred commit would leave our change unstaged in the working tree, where it does harm during these:
    `git rebase --continue` refuses to go on while there are unstaged changes, and `--abort` resets the work
    tree, which would throw our change away. A merge is different (`git commit` and `merge --abort` leave
    unstaged changes alone), so during a merge commands go on and their commit is deferred."""
    why = _in_progress(_git_dir(repo_root))
    return None if why in (None, "a merge") else why


def why_commit_waits(repo_root: Path) -> str | None:
    """Why committing now would be wrong, or None. Raises GitFailed when git refuses the repository (it is
    owned by another user, say: "dubious ownership"), with git's reason.

    - A merge, rebase, cherry-pick or revert in progress: the user is in the middle of their own commit; ours
      waits until they finish.
    - A detached HEAD (a checkout of an old commit, a bisect): a commit there belongs to no branch and is lost
      from sight when the user checks out a branch. Deferring keeps the change in the working tree, which
      `git checkout <branch>` carries over, and it is committed on that branch.
    - A staged rename into or out of .orch-state: our commit would take one half of it (the file added or
      removed in .orch-state) and leave the other half staged. It waits until the user commits or undoes it.
    """
    run_git(repo_root, "rev-parse", "--git-dir")
    why = _in_progress(_git_dir(repo_root))
    if why:
        return f"{why} is in progress"
    if run_git(repo_root, "symbolic-ref", "-q", "HEAD", check=False)[0] != 0:
        return "HEAD is detached (commit after checking out a branch)"
    if crossing := _staged_rename_across_state(repo_root):
        return f"a staged rename of {crossing[0]} to {crossing[1]} crosses {STATE_DIR} (commit or undo it first)"
    return None


def _staged_rename_across_state(repo_root: Path) -> tuple[str, str] | None:
    """A rename staged by the user with exactly one side inside .orch-state, as (from, to), or None."""
    _, out, _ = run_git(repo_root, "diff", "--cached", "--name-status", "-M", "-z")
    fields = out.split("\0")
    i = 0
    while i < len(fields) - 1:
        status = fields[i]
        if status[:1] in ("R", "C"):
            source, target = fields[i + 1], fields[i + 2]
            i += 3
            if status[0] == "R" and _in_state(source) != _in_state(target):
                return source, target
        else:
            i += 2
    return None


def _in_state(path: str) -> bool:
    return path == STATE_DIR or path.startswith(STATE_DIR + "/")
