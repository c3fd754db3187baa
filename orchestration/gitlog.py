"""Commits .orch-state/ changes to the project repo: batched, path-limited, never touching the user's files.

Each command records a message line; lines recorded for one repo within `batch_ms` go into one commit.
The commit is limited to .orch-state (`git commit --only -- .orch-state`), so whatever the user has staged
or modified elsewhere stays exactly as it was. Git runs in a worker thread, one repo at a time per repo.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import git

from .store import STATE_DIR

log = logging.getLogger(__name__)

LOCK_RETRIES = 8  # index.lock held by another git: back off 50 ms, 100 ms, ... (about 6 s in all)
_IDS = re.compile(r"^orch\(([^)]*)\)")


@dataclass
class _Pending:
    lines: list[str] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


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
    def __init__(self, author_name: str, author_email: str, batch_ms: int = 250) -> None:
        self.author = f"{author_name} <{author_email}>"
        self._env = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
            "GIT_TERMINAL_PROMPT": "0",
        }
        self.batch_s = batch_ms / 1000
        self._pending: dict[Path, _Pending] = {}
        self.last_outcome: dict[Path, str] = {}

    # -- queueing ------------------------------------------------------------------------------------------
    def record(self, repo_root: Path, lines: list[str]) -> None:
        """Queue message lines for the next commit of this repo. Returns at once; the commit follows."""
        if not lines:
            return
        pending = self._pending.setdefault(repo_root, _Pending())
        pending.lines.extend(lines)
        if pending.timer is None:
            loop = asyncio.get_running_loop()
            pending.timer = loop.call_later(self.batch_s, lambda: loop.create_task(self.flush(repo_root)))

    def pending_lines(self, repo_root: Path) -> int:
        p = self._pending.get(repo_root)
        return len(p.lines) if p else 0

    async def flush(self, repo_root: Path | None = None) -> None:
        """Commit what is queued now (for one repo, or all)."""
        roots = [repo_root] if repo_root is not None else list(self._pending)
        for root in roots:
            pending = self._pending.get(root)
            if pending is None:
                continue
            async with pending.lock:
                if pending.timer is not None:
                    pending.timer.cancel()
                    pending.timer = None
                lines, pending.lines = pending.lines, []
                if not lines:
                    continue
                outcome = await asyncio.to_thread(self.commit_now, root, lines)
                self.last_outcome[root] = outcome
                if outcome.startswith("deferred"):
                    pending.lines[:0] = lines  # keep them for the next try; the files are safe on disk

    async def close(self) -> None:
        await self.flush()

    # -- git work (runs in a worker thread) ----------------------------------------------------------------
    def commit_now(self, repo_root: Path, lines: list[str]) -> str:
        """Commit .orch-state of one repo with a message made of `lines`. Returns what happened."""
        repo = git.Repo(repo_root)
        try:
            why = _why_not_now(repo)
            if why:
                log.warning("commit deferred in %s: %s", repo_root, why)
                return f"deferred: {why}"
            g = repo.git
            for attempt in range(LOCK_RETRIES + 1):
                try:
                    with g.custom_environment(**self._env):
                        g.add("--all", "--", STATE_DIR)
                        if not g.status("--porcelain", "--", STATE_DIR).strip() and not _staged(g):
                            return "nothing"
                        g.commit(
                            "--only", "--no-verify", "--no-gpg-sign", "--quiet",
                            f"--author={self.author}", "-m", commit_message(lines), "--", STATE_DIR,
                        )
                    return "committed"
                except git.GitCommandError as exc:
                    if "index.lock" in str(exc) and attempt < LOCK_RETRIES:
                        time.sleep(0.05 * (2**attempt) if attempt < 6 else 1.6)
                        continue
                    if "index.lock" in str(exc):
                        log.warning("commit deferred in %s: index.lock held", repo_root)
                        return "deferred: another git process holds index.lock"
                    raise
            return "deferred"  # pragma: no cover
        finally:
            repo.close()

    def recover(self, repo_root: Path) -> str:
        """At start-up: commit .orch-state changes a crash left uncommitted."""
        repo = git.Repo(repo_root)
        try:
            dirty = repo.git.status("--porcelain", "--", STATE_DIR).strip()
        finally:
            repo.close()
        if not dirty:
            return "nothing"
        return self.commit_now(repo_root, ["orch: recover uncommitted .orch-state changes left by an interrupted run"])


def _staged(g: git.Git) -> bool:
    return bool(g.diff("--cached", "--name-only", "--", STATE_DIR).strip())


def _why_not_now(repo: git.Repo) -> str | None:
    gitdir = Path(repo.git_dir)
    if (gitdir / "MERGE_HEAD").exists():
        return "a merge is in progress"
    if (gitdir / "rebase-merge").exists() or (gitdir / "rebase-apply").exists():
        return "a rebase is in progress"
    if (gitdir / "CHERRY_PICK_HEAD").exists() or (gitdir / "REVERT_HEAD").exists():
        return "a cherry-pick or revert is in progress"
    if repo.head.is_detached:
        return "HEAD is detached (commit after checking out a branch)"
    return None
