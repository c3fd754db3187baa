"""Restore: bring a project's .orch-state/ back to what a commit of its history held, as a new change and so a new
commit (history is never rewritten).

The commit's files are read from git (ls-tree, then one cat-file --batch), checked as the store would load them
(in a scratch folder: a commit whose state does not load changes nothing), compared with what is there now, and
written in one journaled change that also removes the files the commit did not have. The project's state machine
takes the restored state. Refused: a commit that is not in the checked-out branch's history or holds no
.orch-state, and a restore while an agent works on one of the project's stories (pause the sprint first: its
outcome would land on a state it was not started from).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

from . import state_machine as sm
from .agents.records import runs_of
from .errors import Busy, InvalidInput, OrchError, StateCorrupt
from .gitlog import GIT_OPTIONS, QUEUE, GitFailed, fix_for, head_commit, run_git, why_commit_waits, writes_blocked
from .models import StoryStatus, id_number
from .results import Restored
from .store import JOURNAL, LOCK_NAME, LOCK_TRY_S, STATE_DIR, ProjectStore
from .unit_of_work import Change, Project

SHA = re.compile(r"^[0-9a-fA-F]{4,40}$")
MAX_FILES = 100_000
MAX_BYTES = 256 * 1024 * 1024  # far beyond any project's state; a commit holding more is refused, not read
GIT_TIMEOUT_S = 60
_NEVER_RESTORED = {LOCK_NAME, QUEUE, JOURNAL}  # the orchestrator's working files (ignored by git anyway)


def restore(project: Project, commit: str, by: str) -> tuple[Change, Restored]:
    """In a worker thread, under the project's file lock (one short try: StateLocked while another process holds
    it): restore .orch-state to `commit`'s. Returns the change (its commit lines) and what changed."""
    root = project.entry.path
    try:
        if why := writes_blocked(root) or why_commit_waits(root):
            raise Busy(f"{project.entry.name}'s repository cannot take a commit now ({why}); nothing was restored.",
                       f"Fix: {fix_for(root, why)}.")
        sha, subject = commit_of(root, commit)
        files = files_at(root, sha)
    except GitFailed as exc:
        raise OrchError(f"git refuses to read {project.entry.name}'s repository: {exc}.",
                        f"Fix: {fix_for(root, str(exc))}.") from None
    with project.store.locked(timeout=LOCK_TRY_S), tempfile.TemporaryDirectory(prefix="orch-restore-") as scratch:
        project.store.saved_backlog(full=True)  # every story file as it is now (a hand edit in place included)
        before = Change(project, by, "restore")
        previous = head_commit(root)  # holds the state as it is (all committed first)
        _refuse_running_agents(before)
        after = _loaded(project, Path(scratch), files, sha)
        current = _state_files(root)
        # .gitignore keeps the lock and the commit queue out of git: kept, even if the commit had none.
        removed = sorted(set(current) - set(files) - {".gitignore"})
        written = {rel: data for rel, data in files.items() if current.get(rel) != data}
        result = _compared(before, after, sha, subject).model_copy(update={"previous": previous})
        if not written and not removed:
            return before, result.model_copy(update={"restored": False})
        warning = project.store.replace_files(written, removed)
        project.model.state = after.status.state  # the machine takes the restored state
        before.note(project.entry.name, f"restore .orch-state to {sha[:10]}: {_summary(result)}")
        return before, result.model_copy(update={"files_written": len(written), "files_removed": len(removed),
                                                 "warning": warning})


def commit_of(root: Path, text: str) -> tuple[str, str]:
    """(full sha, subject) of a commit given by its (abbreviated) sha, refused unless the checked-out branch holds
    it (a restore goes back within the project's own history)."""
    text = (text or "").strip()
    if not SHA.match(text):
        raise InvalidInput("commit", f"{text!r} is not a commit ID (4 to 40 hexadecimal digits).",
                           "`project history` lists the commits.")
    status, out, _ = run_git(root, "rev-parse", "--verify", "--quiet", f"{text}^{{commit}}", check=False)
    if status != 0:
        raise InvalidInput("commit", f"there is no commit {text} in the repository (or it is ambiguous).",
                           "`project history` lists the commits; give more digits if several match.")
    sha = out.strip()
    status, _, err = run_git(root, "merge-base", "--is-ancestor", sha, "HEAD", check=False)
    if status == 1:
        raise InvalidInput("commit", f"{text} is not in the history of the checked-out branch.",
                           "Restore a commit of this branch (`project history`), or check out its branch first.")
    if status != 0:
        raise OrchError(f"git could not tell whether {text} is in the branch's history: {' '.join(err.split())[:200]}")
    return sha, run_git(root, "log", "-1", "--format=%s", sha)[1].strip()


def files_at(root: Path, sha: str) -> dict[str, bytes]:
    """The files of .orch-state in commit `sha` (paths inside .orch-state -> contents)."""
    _, out, _ = run_git(root, "ls-tree", "-r", "-z", "--full-tree", sha, "--", STATE_DIR, timeout=GIT_TIMEOUT_S)
    blobs: dict[str, str] = {}
    for entry in filter(None, out.split("\0")):
        meta, _, path = entry.partition("\t")
        mode, kind, obj = meta.split()
        rel = PurePosixPath(path).relative_to(STATE_DIR).as_posix()
        if PurePosixPath(rel).name in _NEVER_RESTORED or rel.endswith(".tmp"):
            continue
        if kind != "blob" or mode not in ("100644", "100755") or ".." in PurePosixPath(rel).parts:
            raise InvalidInput("commit", f"{sha[:10]}'s {path} is not a plain file (a symlink or a submodule); "
                               "the bot restores plain files only.")
        blobs[rel] = obj
    if not blobs:
        raise InvalidInput("commit", f"{sha[:10]} holds no {STATE_DIR}/ (it is older than the project's registration).",
                           "Pick a later commit (`project history`).")
    if len(blobs) > MAX_FILES:
        raise InvalidInput("commit", f"{sha[:10]}'s {STATE_DIR}/ holds {len(blobs)} files, more than a project's "
                           f"state ever does ({MAX_FILES}).")
    contents = _cat_blobs(root, list(blobs.values()))
    return {rel: contents[obj] for rel, obj in blobs.items()}


def _cat_blobs(root: Path, objects: list[str]) -> dict[str, bytes]:
    """Blobs by object ID, read by one `git cat-file --batch`."""
    try:
        done = subprocess.run(["git", *GIT_OPTIONS, "cat-file", "--batch"], cwd=root, capture_output=True,
                              input="".join(f"{o}\n" for o in dict.fromkeys(objects)).encode(), timeout=GIT_TIMEOUT_S,
                              env={**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"})
    except subprocess.TimeoutExpired:
        raise GitFailed(f"git cat-file did not answer within {GIT_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise GitFailed(f"git cat-file exited with {done.returncode}: {done.stderr.decode(errors='replace')[:300]}")
    out, found, at, total = done.stdout, {}, 0, 0
    while at < len(out):
        end = out.index(b"\n", at)
        header = out[at:end].split()
        if len(header) != 3:
            raise GitFailed(f"git cat-file could not read {header[0].decode(errors='replace')}")
        size = int(header[2])
        total += size
        if total > MAX_BYTES:
            raise InvalidInput("commit", f"its {STATE_DIR}/ is larger than a project's state ever is.")
        found[header[0].decode()] = out[end + 1: end + 1 + size]
        at = end + 1 + size + 1
    return found


def _state_files(root: Path) -> dict[str, bytes]:
    """The state files there now (tracked, or new and not ignored), with their contents."""
    _, out, _ = run_git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", STATE_DIR)
    found = {}
    for path in dict.fromkeys(filter(None, out.split("\0"))):
        file = root / path
        if file.is_file() and not file.is_symlink():
            found[PurePosixPath(path).relative_to(STATE_DIR).as_posix()] = file.read_bytes()
    return found


def _loaded(project: Project, scratch: Path, files: dict[str, bytes], sha: str) -> Change:
    """The commit's state as the store loads it, from a scratch folder (a reader's view of it); refused, changing
    nothing, if it does not load."""
    for rel, data in files.items():
        target = scratch / STATE_DIR / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    store = ProjectStore(scratch)
    try:
        store.validate_all()
        return Change(Project(project.entry, store, sm.ProjectModel(project.entry.name, project.model.state)),
                      "restore", "restore", writer=False)
    except StateCorrupt as exc:
        raise InvalidInput("commit", f"{sha[:10]}'s state does not load, so it was not restored: {exc.message}",
                           "Pick another commit (`project history`).") from None


def _refuse_running_agents(c: Change) -> None:
    working = [s.id for s in c.stories() if s.status is StoryStatus.in_progress
               and (last := runs_of(c, s.id).last) is not None and last.outcome is None]
    if working:
        raise Busy(f"an agent is working on {', '.join(working)}; nothing was restored.",
                   "Pause the sprint (`sprint pause` stops the agents), then restore.")


def _compared(before: Change, after: Change, sha: str, subject: str) -> Restored:
    old = {s.id: s for s in before.stories()}  # read, never changed: no writer's copy of the whole backlog
    new = {s.id: s for s in after.stories()}
    old_epics, new_epics = {e.id: e for e in before.epics}, {e.id: e for e in after.epics}
    state = after.status.state
    sprints = (before.status.current_sprint, after.status.current_sprint)
    return Restored(
        project=before.name, state=state, allowed=sm.allowed_commands(state), next_step=sm.NEXT_STEP[state],
        commit=sha, subject=subject,
        stories_added=_ordered(new.keys() - old.keys()), stories_removed=_ordered(old.keys() - new.keys()),
        stories_changed=_ordered(i for i in old.keys() & new.keys() if old[i] != new[i]),
        epics_added=_ordered(new_epics.keys() - old_epics.keys()),
        epics_removed=_ordered(old_epics.keys() - new_epics.keys()),
        epics_changed=_ordered(i for i in old_epics.keys() & new_epics.keys() if old_epics[i] != new_epics[i]),
        sprint=sprints if sprints[0] != sprints[1] else None,
        state_change=(before.status.state, state) if before.status.state != state else None)


def _ordered(ids) -> list[str]:
    return sorted(ids, key=id_number)


def _summary(r: Restored) -> str:
    """What a restore changed, in a few words (its commit line)."""
    parts = [f"{label.lower()} {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}"
             for label, ids in r.items_changed()]
    if r.sprint:
        parts.append(f"sprint {r.sprint[0] or 'none'} -> {r.sprint[1] or 'none'}")
    if r.state_change:
        parts.append(f"state {r.state_change[0].value} -> {r.state_change[1].value}")
    return "; ".join(parts) or "files only"
