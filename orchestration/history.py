"""What git says of a project's .orch-state/: its latest commits (who, what, when), or those naming one work item
(a story's history). Read-only, bounded (a count of commits, a time-out), run in a worker thread by the service."""
from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path

from .commands import SIGNED
from .errors import OrchError
from .gitlog import GitFailed, run_git
from .results import HistoryEntry
from .store import STATE_DIR

log = logging.getLogger(__name__)

HISTORY_TIMEOUT_S = 20
_FIELD, _RECORD = "\x1f", "\x1e"


def id_pattern(ident: str) -> str:
    """An extended regex for a work item's ID as a whole word: S-1 but not S-10 nor XS-1."""
    return rf"(^|[^A-Za-z0-9-]){re.escape(ident)}([^0-9]|$)"


def entries(root: Path, limit: int, skip: int = 0, mentioning: str | None = None) -> list[HistoryEntry]:
    """The latest `limit` commits (after `skip`) that touched .orch-state, newest first; with `mentioning` (an ID),
    only those whose message names it, each with just its lines that do. A repository with no commit yet has no
    history; any other git failure is an OrchError with git's reason."""
    args = ["log", f"--max-count={limit}", f"--skip={skip}", f"--format=%H{_FIELD}%aI{_FIELD}%an{_FIELD}%B{_RECORD}"]
    if mentioning:
        args += ["--extended-regexp", f"--grep={id_pattern(mentioning)}"]
    try:
        status, out, err = run_git(root, *args, "--", STATE_DIR, timeout=HISTORY_TIMEOUT_S, check=False)
    except GitFailed as exc:
        raise OrchError(f"The history could not be read: {exc}.") from None
    if status != 0:
        if "does not have any commits" in err:
            return []
        raise OrchError(f"The history could not be read: git log says {' '.join(err.split())[:300]}",
                        f"See `git -C {root} log -- {STATE_DIR}`.")
    named = re.compile(id_pattern(mentioning)) if mentioning else None
    found = []
    for record in out.split(_RECORD):
        parts = record.strip("\n").split(_FIELD, 3)
        if len(parts) != 4:
            continue
        sha, at, author, message = parts
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        if not lines:
            continue
        subject, bullets = lines[0], [line[2:] for line in lines[1:] if line.startswith("- ")]
        told = bullets or [subject]
        if named is not None:
            told = [line for line in told if named.search(line)] or [subject]
        who = list(dict.fromkeys(m.group(2).strip() for line in told if (m := SIGNED.search(line))))
        found.append(HistoryEntry(sha=sha, at=datetime.fromisoformat(at), who=who or [author], subject=subject,
                                  lines=told))
    return found
