"""Reading and writing one project's .orch-state/: atomic, locked, cached, and confined to that folder.

- Writes go to a temp file in the same folder, are fsynced, then renamed over the target (and the folder is
  fsynced), so a reader sees the old file or the new one, never half of one. A command that changes several
  files writes a journal first, so a crash between two renames is finished by the next command: never half
  of a command either (`save_many`).
- A file lock (.orch-state/.lock) keeps a second process (the CLI beside the bot) from interleaving.
- The backlog is backlog.json (project, counters, epics) and one file per story (stories/S-<n>.json), so a
  one-story change writes that story alone. The saved backlog is held with its indexes (SavedBacklog: by ID,
  the queue's order, dependants), kept up to date by this store's own writes and checked per use cheaply:
  backlog.json's bytes and the stories folder's signature; a changed folder costs a stat per story file and a
  read of the changed ones (see saved_backlog for what a hand edit in place costs to see). Other files are
  cached by their bytes: each read compares the file's bytes (cheap) with those it parsed (dear), so a hand
  edit or a `git checkout` is seen by the next read, whatever the clock or inode says.
- A file that does not parse or validate raises StateCorrupt and is never overwritten; so does one nested too
  deeply or holding an absurdly long number (a damaged file, never a RecursionError or ValueError).
- No file under .orch-state is opened through a symlink: every open walks from the repository down with
  O_NOFOLLOW (the folders on the way too), and every lock (each command, each commit) first refuses a
  .orch-state that holds one (the files in stories/: whenever that folder is listed). A link could lead writes
  anywhere, or a file's contents into a commit message.
- Writers work on private copies (a story copied when it is edited, other files parsed afresh from their
  bytes); the cache holds only what was saved, so readers take no lock and what they return never changes
  afterwards.
"""
from __future__ import annotations

import bisect
import errno
import json
import logging
import os
import re
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from operator import itemgetter
from typing import Any, Iterable, Iterator, TypeVar

from pydantic import ValidationError

from . import filelocks
from .errors import OrchError, StateCorrupt, StateLocked, UnsafePath, WriteFailed
from .models import SPRINT_ID, STORY_ID, Backlog, Sprint, Status, Story, StoryFile, VersionedFile, id_number
from .tickets import TicketFile

STATE_DIR = ".orch-state"
LOCK_NAME = ".lock"
TICKETS = "tickets.json"
BACKLOG = "backlog.json"
STORIES = "stories"  # one file per story: stories/S-<n>.json
STORY_FILE = re.compile(r"^S-[1-9][0-9]*\.json$")
# Tests set ORCH_CHECK_SHARED=1: every write then checks that no writer changed an object readers share.
CHECK_SHARED_ENV = "ORCH_CHECK_SHARED"
JOURNAL = ".journal.tmp"  # names the temp files of a multi-file write in progress; *.tmp is never committed
LOCK_TIMEOUT_S = 10.0
FSYNC_THREADS = 8  # a multi-file write fsyncs its temp files together
MAX_INT_DIGITS = 30  # far beyond any count or ID; Python refuses to convert over 4,300 digits (a ValueError)
# Async callers take the file lock with short tries in a worker thread and wait between them on the event loop,
# so a lock held by another process never keeps a shared worker thread for LOCK_TIMEOUT_S.
LOCK_TRY_S = 0.05
LOCK_POLL_S = 0.1
# What a new .orch-state/ starts from: package data (pyproject ships it in the wheel), read as a resource.
TEMPLATES = resources.files(__package__) / "templates"
REQUIRED_TEMPLATES = {"backlog.json", "status.json", ".gitignore"}

log = logging.getLogger(__name__)
F = TypeVar("F", bound=VersionedFile)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old file or the new one, and the new one is on disk."""
    ((tmp, _),) = _durable_temps([(path, data)])
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _durable_temps(files: list[tuple[Path, bytes]]) -> list[tuple[Path, Sig]]:
    """Each `data` in a temp file beside its `path` (same folder, so the rename is atomic), with its signature
    (which the rename keeps); all written first and then fsynced together (in threads: the file system commits
    concurrent fsyncs at once, so a sprint plan's twenty stories cost about one)."""
    made: list[tuple[Path, int]] = []
    try:
        for path, data in files:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            made.append((Path(tmp), fd))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        fds = [fd for _, fd in made]
        if len(fds) > 1:
            list(_fsync_pool().map(os.fsync, fds))
        elif fds:
            os.fsync(fds[0])
        return [(tmp, _sig(os.fstat(fd))) for tmp, fd in made]
    except BaseException:
        for tmp, _ in made:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        for _, fd in made:
            os.close(fd)


_FSYNC_POOL: ThreadPoolExecutor | None = None


def _fsync_pool() -> ThreadPoolExecutor:
    global _FSYNC_POOL
    if _FSYNC_POOL is None:
        _FSYNC_POOL = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="orch-fsync")
    return _FSYNC_POOL


Sig = tuple[int, int, int]  # a file's (inode, size, mtime in ns): an atomic write or a checkout changes it


def _sig(st: os.stat_result) -> Sig:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _is_story_rel(rel: str) -> bool:
    return rel.startswith(f"{STORIES}/") and bool(STORY_FILE.match(rel[len(STORIES) + 1:]))


def _apply(path: Path, tmp: Path | None) -> None:
    """One step of a write: rename the temp file over `path`, or (None) remove `path`."""
    if tmp is None:
        path.unlink(missing_ok=True)
    else:
        os.replace(tmp, path)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dump(obj: VersionedFile | str) -> bytes:
    """A model as indented JSON; a text (a plan's markdown) as it is."""
    return obj.encode() if isinstance(obj, str) else (obj.model_dump_json(indent=2) + "\n").encode()


def load_json(raw: bytes | str) -> Any:
    """json.loads for files a person may have edited: nesting too deep for Python to read (a RecursionError) and
    integers longer than MAX_INT_DIGITS raise ValueError (a JSONDecodeError for bad syntax) with the reason."""
    def bounded_int(text: str) -> int:
        if len(text.lstrip("-")) > MAX_INT_DIGITS:
            raise ValueError(f"a number with {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS} are read)")
        return int(text)

    try:
        return json.loads(raw, parse_int=bounded_int)
    except RecursionError:
        raise ValueError("nested deeper than this program reads") from None


# -- opening without following symlinks -----------------------------------------------------------------------

def _open_state(repo_root: Path, rel: str, flags: int) -> int:
    """A descriptor of .orch-state/<rel>, opened one name at a time from the repository down with O_NOFOLLOW,
    so neither .orch-state, nor a folder below it, nor the file can be a symlink (checked at the open itself,
    so a link put in place later is refused too). Raises UnsafePath for a symlink or a FIFO, device or socket
    (a FIFO would hang a read); OSError (FileNotFoundError, ...) as usual otherwise."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or any(p in (".", "..") for p in parts):
        raise UnsafePath(f"{rel!r} is outside {STATE_DIR}.")
    names = (STATE_DIR, *parts)
    fd = os.open(repo_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, name in enumerate(names):
            last = depth == len(names) - 1
            try:
                opened = os.open(name, (flags | os.O_NONBLOCK if last else os.O_RDONLY | os.O_DIRECTORY)
                                 | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(_lstat_mode(name, fd)):
                    raise _symlinks_refused(["/".join(names[: depth + 1])]) from None
                raise
            os.close(fd)
            fd = opened
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a folder fails as usual, at the read or write
            raise UnsafePath(f"{STATE_DIR}/{rel} is not a regular file.", "Remove it; the bot never reads one.")
        os.set_blocking(fd, True)
        result, fd = fd, -1
        return result
    finally:
        if fd >= 0:
            os.close(fd)


def _lstat_mode(name: str, dir_fd: int) -> int:
    try:
        return os.lstat(name, dir_fd=dir_fd).st_mode
    except OSError:
        return 0


def read_state_file(repo_root: Path, rel: str) -> bytes:
    """The bytes of .orch-state/<rel>, never through a symlink (FileNotFoundError if it does not exist)."""
    fd = _open_state(repo_root, rel, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def append_state_file(repo_root: Path, rel: str, data: bytes) -> None:
    """Append `data` to .orch-state/<rel> (created if missing) and fsync it, never through a symlink."""
    fd = _open_state(repo_root, rel, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def symlinks_in(repo_root: Path, *, stories: bool = True) -> list[str]:
    """Every symlink in the repository's .orch-state (itself included), as paths relative to the repository.
    Without `stories`, the files in stories/ are skipped (thousands of them): the store reads those with
    O_NOFOLLOW and refuses a symlink there whenever it lists the folder (see ProjectStore.saved_backlog)."""
    folder = repo_root / STATE_DIR
    if folder.is_symlink():
        return [STATE_DIR]
    found: list[str] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:  # d_type: no stat per file
            if entry.is_symlink():
                found.append(Path(entry.path).relative_to(repo_root).as_posix())
            elif entry.is_dir(follow_symlinks=False) and (stories or entry.path != str(folder / STORIES)):
                pending.append(Path(entry.path))
    return sorted(found)


def _symlinks_refused(found: list[str]) -> UnsafePath:
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    verb = "is a symlink" if len(found) == 1 else "are symlinks"
    return UnsafePath(f"{shown} {verb}; the bot never follows a symlink in {STATE_DIR}, so nothing was changed.",
                      "Replace each with the real file or folder, or remove it (and commit that if git holds the "
                      "link); the bot recreates its own working files.")


def check_no_symlinks(repo_root: Path) -> None:
    """Refuse a .orch-state holding a symlink (stories/' files: see symlinks_in)."""
    if found := symlinks_in(repo_root, stories=False):
        raise _symlinks_refused(found)


def state_dir_of(repo_root: Path) -> Path:
    """The project's .orch-state folder, refused if it is a symlink or resolves outside the repo."""
    root = repo_root.resolve()
    folder = root / STATE_DIR
    if folder.is_symlink():
        raise UnsafePath(f"{STATE_DIR} in {root} is a symlink; it must be a real folder inside the repository.")
    if folder.exists() and (not folder.is_dir() or folder.resolve().parent != root):
        raise UnsafePath(f"{STATE_DIR} in {root} is not a folder inside the repository.")
    return folder


def _recovery_hint(rel: str) -> str:
    return (
        f"Nothing was changed. Restore it with `git checkout -- {rel}` (the last committed version), or pick a "
        f"good version from `git log -- {rel}` and `git checkout <commit> -- {rel}`."
    )


def story_key(s: Story) -> tuple[int, int]:
    """The queue's order: priority first, then age (IDs grow with age)."""
    return (s.priority.rank, id_number(s.id))


class SavedBacklog:
    """The saved backlog of one project, with its indexes: shared by every reader, never changed. A write makes
    the next one from it (copies of the maps and the order: about 0.1 ms at 10,000 stories), so a reader
    iterating one is never disturbed by a writer in another thread.

    `head` is backlog.json (project, counters, epics); `stories` maps ID -> story; `order` is every story as
    (priority rank, number, story), sorted: the queue's order; `dependants` maps ID -> the IDs that depend on it. The
    order and dependants are built on first use and then carried from one SavedBacklog to the next."""

    def __init__(self, head: Backlog, stories: dict[str, Story], sigs: dict[str, Sig], head_raw: bytes,
                 dir_sig: Sig | None) -> None:
        self.head, self.stories, self.sigs = head, stories, sigs
        self.head_raw, self.dir_sig = head_raw, dir_sig  # what it was read from: see ProjectStore.saved_backlog
        self.legacy = head.schema_version < 2  # every story still inside backlog.json: the next change migrates
        self._order: list[tuple[int, int, Story]] | None = None
        self._dependants: dict[str, frozenset[str]] | None = None
        self._view: Backlog | None = None
        self._max: int | None = None
        self._prints: dict[str, str] | None = None
        if os.environ.get(CHECK_SHARED_ENV):
            self._prints = {i: s.model_dump_json() for i, s in stories.items()}
            self._prints[BACKLOG] = head.model_dump_json()

    def story(self, ident: str) -> Story | None:
        return self.stories.get(ident)

    @property
    def order(self) -> list[tuple[int, int, Story]]:
        if self._order is None:
            self._order = sorted((*story_key(s), s) for s in self.stories.values())  # numbers are unique: a
        return self._order  # story is never compared

    def ordered(self) -> Iterator[Story]:
        """Every story in the queue's order (priority, then age)."""
        return map(itemgetter(2), self.order)

    @property
    def dependants(self) -> dict[str, frozenset[str]]:
        if self._dependants is None:
            found: dict[str, set[str]] = {}
            for s in self.stories.values():
                for d in s.depends_on:
                    found.setdefault(d, set()).add(s.id)
            self._dependants = {k: frozenset(v) for k, v in found.items()}
        return self._dependants

    @property
    def max_number(self) -> int:
        """The highest story number (0: none)."""
        if self._max is None:
            self._max = max(map(id_number, self.stories), default=0)
        return self._max

    def view(self) -> Backlog:
        """The whole backlog as one Backlog (stories in ID order), shared: never change it."""
        if self._view is None:
            self._view = self.head.model_copy(update={"stories": sorted(self.stories.values(),
                                                                         key=lambda s: id_number(s.id))})
        return self._view

    def changed(self, head: Backlog, head_raw: bytes, written: dict[str, Story | None], sigs: dict[str, Sig | None],
                dir_sig: Sig | None) -> SavedBacklog:
        """The next SavedBacklog: this one with `head` and the stories in `written` (None: removed)."""
        stories, all_sigs = dict(self.stories), dict(self.sigs)
        order = list(self._order) if self._order is not None else None
        dependants = dict(self._dependants) if self._dependants is not None else None
        for ident, new in written.items():
            old = stories.pop(ident, None)
            if new is not None:
                stories[ident] = new
            sig = sigs.get(ident)
            if sig is None:
                all_sigs.pop(ident, None)
            else:
                all_sigs[ident] = sig
            if order is not None:
                if old is not None:
                    del order[bisect.bisect_left(order, story_key(old))]  # (rank, n) sorts just before its entry
                if new is not None:
                    bisect.insort(order, (*story_key(new), new))
            if dependants is not None:
                before = set(old.depends_on) if old is not None else set()
                after = set(new.depends_on) if new is not None else set()
                for d in before - after:
                    dependants[d] = dependants.get(d, frozenset()) - {ident}
                for d in after - before:
                    dependants[d] = dependants.get(d, frozenset()) | {ident}
        following = SavedBacklog(head, stories, all_sigs, head_raw, dir_sig)
        following._order, following._dependants = order, dependants
        if self._max is not None and all(new is not None or id_number(i) < self._max for i, new in written.items()):
            following._max = max([self._max, *map(id_number, written)])
        return following

    def check_unchanged(self) -> None:
        """With ORCH_CHECK_SHARED set: fail loudly if a writer changed a shared object (a bug: readers saw it)."""
        if self._prints is None:
            return
        now = {i: s.model_dump_json() for i, s in self.stories.items()}
        now[BACKLOG] = self.head.model_dump_json()
        if changed := sorted(i for i in now if now[i] != self._prints.get(i)):
            raise AssertionError(f"shared saved state was changed in place: {', '.join(changed)} (a writer must "
                                 "edit a private copy: Change.edit_story / edit_head)")


class ProjectStore:
    """Typed access to one project's .orch-state files."""

    def __init__(self, repo_root: Path) -> None:
        self.root = repo_root.resolve()
        self.dir = state_dir_of(self.root)
        self._cache: dict[str, tuple[bytes, VersionedFile]] = {}  # saved state only: never handed to a writer
        self._saved: SavedBacklog | None = None  # backlog.json and stories/, with indexes

    # -- locking -------------------------------------------------------------------------------------------
    @contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the cross-process lock of this project's state. Refuses a .orch-state holding a symlink (every
        command and every commit takes this lock, so it is checked on every use)."""
        lock_file = state_dir_of(self.root) / LOCK_NAME  # checked on every use, like `path`
        check_no_symlinks(self.root)
        try:
            with filelocks.hold(lock_file, timeout):  # a blocking wait, in turn with this process's others
                self._finish_interrupted_write()
                yield
        except filelocks.Timeout:
            raise StateLocked(
                f"Another process is changing {self.root.name}'s state right now.", "Try again in a few seconds."
            ) from None

    # -- paths ---------------------------------------------------------------------------------------------
    def _folder(self) -> Path:
        """.orch-state, checked again on every use as `state_dir_of` does, for a write's hot path: one lstat (the
        repository's path was resolved once; a real folder under it cannot lead outside)."""
        try:
            mode = os.lstat(self.dir).st_mode
        except FileNotFoundError:
            return state_dir_of(self.root)  # says what is wrong
        if not stat.S_ISDIR(mode):
            return state_dir_of(self.root)
        return self.dir

    def path(self, rel: str) -> Path:
        """A path inside .orch-state; anything that would leave it is refused. The folder is checked again on
        every use: it may have been swapped for a symlink since this store was made (the bot runs for weeks)."""
        folder = state_dir_of(self.root)
        target = (folder / rel).resolve()
        if folder not in target.parents:
            raise UnsafePath(f"{rel!r} is outside {STATE_DIR}.")
        return target

    def rel(self, rel: str) -> str:
        return f"{STATE_DIR}/{rel}"

    # -- generic typed files ---------------------------------------------------------------------------
    def load(self, rel: str, model: type[F], *, private: bool = False) -> F | None:
        """The parsed file, or None if it does not exist. Shared with other readers and cached until the file
        changes on disk: never change it. A writer asks for a `private` copy, parsed afresh from the bytes (not
        for the backlog: see saved_backlog and Change.edit_story)."""
        try:
            raw = read_state_file(self.root, rel)
        except FileNotFoundError:
            self._cache.pop(rel, None)
            return None
        if private:
            return self._parse(rel, raw, model)
        cached = self._cache.get(rel)
        if cached and cached[0] == raw and isinstance(cached[1], model):
            return cached[1]  # type: ignore[return-value]
        obj = self._parse(rel, raw, model)
        self._cache[rel] = (raw, obj)
        return obj

    def unchanged(self, rel: str, obj: VersionedFile | None) -> bool:
        """Whether `obj` (from `load`, not private) is still what the file holds."""
        try:
            raw = read_state_file(self.root, rel)
        except FileNotFoundError:
            return obj is None
        cached = self._cache.get(rel)
        return cached is not None and cached[1] is obj and cached[0] == raw

    def _parse(self, rel: str, raw: bytes, model: type[F]) -> F:
        shown = self.rel(rel)
        try:
            data = load_json(raw)
        except UnicodeDecodeError as exc:
            raise StateCorrupt(shown, None, f"not UTF-8 text ({exc.reason})", _recovery_hint(shown)) from None
        except json.JSONDecodeError as exc:
            raise StateCorrupt(shown, exc.lineno, f"not valid JSON ({exc.msg})", _recovery_hint(shown)) from None
        except ValueError as exc:
            raise StateCorrupt(shown, None, str(exc), _recovery_hint(shown)) from None
        if not isinstance(data, dict):
            raise StateCorrupt(shown, 1, "expected a JSON object", _recovery_hint(shown))
        try:
            return model.model_validate(model.migrate(data))
        except ValueError as exc:  # ValidationError is a ValueError
            raise StateCorrupt(shown, None, _describe(exc), _recovery_hint(shown)) from None

    def save_many(self, files: dict[str, VersionedFile | str | None]) -> str | None:
        """Write one command's files so that they change together (the caller holds the lock). A None removes
        that file (a story's, by remove_story).

        Every file goes to a fsynced temp file first. With more than one file, a journal naming the temp files
        (and the files to remove) is made durable next: from then on the change is decided. Then the temp files
        are renamed (and removals made) in the given order (callers put status.json last) and the journal is
        removed. A crash between two renames leaves the journal, and whoever takes the lock next finishes the
        renames before reading anything, so no command ever sees half of another.

        A failure before the decision (the journal, or for one file its rename) raises WriteFailed and nothing
        has changed. A failure after it cannot undo the change: it is made (the journal finishes it), so the
        command succeeded, and what went wrong is returned for it to say beside its success."""
        folder = self._folder()
        staged: list[tuple[str, Path, Path | None, bytes]] = []
        sigs: dict[str, Sig | None] = {}
        journal = folder / JOURNAL if len(files) > 1 else None
        made: set[Path] = set()
        try:
            entries: list[tuple[str, Path, bytes | None]] = []
            for rel, obj in files.items():
                # A story's path needs no resolving (its name is checked; check_no_symlinks refused a linked
                # stories/ under the lock, and a rename replaces a link itself, never its target).
                path = folder / rel if _is_story_rel(rel) else self.path(rel)
                if obj is not None and path.parent not in made:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made.add(path.parent)
                entries.append((rel, path, None if obj is None else dump(obj)))
            temps = iter(_durable_temps([(path, data) for _, path, data in entries if data is not None]))
            for rel, path, data in entries:
                tmp, sigs[rel] = next(temps) if data is not None else (None, None)
                staged.append((rel, path, tmp, data or b""))
            if journal is not None:
                atomic_write(journal, json.dumps(
                    [[tmp.relative_to(folder).as_posix() if tmp else None, rel] for rel, _, tmp, _ in staged]).encode())
            else:
                _apply(staged[0][1], staged[0][2])  # one file: its rename (or removal) is the decision
        except BaseException as exc:
            for _, _, tmp, _ in staged:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise WriteFailed(f"Could not save {self.root.name}'s state ({_os_reason(exc)}). Nothing was "
                                  "changed.", "Fix the cause (disk space, permissions, something in the way), "
                                  "then try again.") from exc
            raise
        try:
            if journal is not None:
                for _, path, tmp, _ in staged:
                    _apply(path, tmp)
            list(_fsync_pool().map(fsync_dir, {path.parent for _, path, _, _ in staged}))
            if journal is not None:
                journal.unlink()
                fsync_dir(folder)
        except OSError as exc:
            self.invalidate()
            log.error("a decided write to %s is not finished: %s; the next command finishes it", self.root, exc)
            return (f"it is not fully on disk yet ({_os_reason(exc)}); the next command finishes it once that "
                    "is fixed")
        written = {}
        for rel, _, _, data in staged:
            if rel == BACKLOG or rel.startswith(f"{STORIES}/"):
                written[rel] = (data, files[rel])
            elif files[rel] is None:
                self._cache.pop(rel, None)
            else:
                self._cache[rel] = (data, files[rel])  # the writer's copy is saved state now, never changed
        if written:
            self._saved_after_write(written, sigs)
        return None

    def _saved_after_write(self, written: dict[str, tuple[bytes, VersionedFile | str | None]],
                           sigs: dict[str, Sig | None]) -> None:
        """The saved backlog after this store's own write (checked fresh when the command began, under the lock
        that is still held): carried forward, never read back."""
        saved = self._saved
        head, head_raw = (saved.head, saved.head_raw) if saved is not None else (None, b"")
        if BACKLOG in written:
            head_raw, head = written[BACKLOG]  # type: ignore[assignment]
        if saved is None or head is None or head.schema_version < 2:  # type: ignore[union-attr]
            self._saved = None  # read afresh next time
            return
        ident = lambda rel: rel[len(STORIES) + 1:-len(".json")]  # noqa: E731
        stories = {ident(rel): obj for rel, (_, obj) in written.items() if rel != BACKLOG}
        story_sigs = {ident(rel): sig for rel, sig in sigs.items() if rel in written and rel != BACKLOG}
        self._saved = saved.changed(head, head_raw, stories, story_sigs, self._dir_sig())  # type: ignore[arg-type]

    def settle(self) -> None:
        """For readers, which take no lock: if a write was interrupted, finish it (under the lock) first. One
        short try: StateLocked while another process holds the lock (the caller waits on the event loop)."""
        if (state_dir_of(self.root) / JOURNAL).exists():
            with self.locked(timeout=LOCK_TRY_S):
                pass

    def _finish_interrupted_write(self) -> None:
        """Under the lock, before anything is read: finish the renames of a write that a crash interrupted
        (its journal is there), and remove temp files that a crash left before any journal was made."""
        folder = self._folder()
        journal = folder / JOURNAL
        if journal.exists():
            finished = []
            try:
                for tmp_rel, rel in load_json(read_state_file(self.root, JOURNAL)):
                    target = self.path(rel)
                    if tmp_rel is None:  # a removal
                        if target.exists():
                            target.unlink()
                            finished.append(rel)
                        continue
                    tmp = self.path(tmp_rel)
                    if tmp.exists():  # not renamed yet
                        os.replace(tmp, target)
                        finished.append(rel)
                for parent in {folder, folder / "sprints", folder / STORIES}:
                    if parent.is_dir():
                        fsync_dir(parent)
                journal.unlink()
                fsync_dir(folder)
            except OSError as exc:
                raise WriteFailed(f"An earlier change to {self.root.name} is not fully on disk yet "
                                  f"({_os_reason(exc)}); this command changed nothing.",
                                  "Fix the cause, then try again: the earlier change is finished first.") from exc
            finally:
                self.invalidate()
            log.warning("finished a write to %s that a crash interrupted: %s", self.root, ", ".join(finished) or "-")
        # A crash before the journal: the command never happened. stories/ (thousands of files) is only looked
        # through when it changed since this store last saw it (a crash there changed it).
        saved = self._saved
        look_in_stories = saved is None or saved.dir_sig != self._dir_sig()
        for parent, dirs, names in os.walk(folder):
            if not look_in_stories and parent == str(folder):
                dirs[:] = [d for d in dirs if d != STORIES]
            for name in names:
                if name.startswith(".") and name.endswith(".tmp"):
                    (Path(parent) / name).unlink(missing_ok=True)

    def invalidate(self) -> None:
        self._cache.clear()
        self._saved = None

    # -- the backlog: backlog.json and one file per story ---------------------------------------------
    def _dir_sig(self) -> Sig | None:
        try:
            return _sig(os.stat(self.dir / STORIES, follow_symlinks=False))
        except FileNotFoundError:
            return None

    def saved_backlog(self, *, full: bool = False) -> SavedBacklog:
        """The saved backlog, shared: never change what it holds.

        Whether what this store holds is still what the files hold is checked cheaply: backlog.json's bytes
        (a small file) and the stories folder's signature (inode, mtime). Any file created, removed or renamed
        in the folder (every write of ours, a `git checkout`, an editor that saves by renaming) changes the
        folder's mtime; then each story file's signature (inode, size, mtime) is compared and only the changed
        ones are read again. A story edited in place (same inode, the folder untouched) is seen at once where a
        story is looked at by itself (a writer editing it: `story_now`; a reader showing it: `refreshed`, as
        view_backlog's page and `story_of` do), by `full` (health, validate_all, the old whole-backlog way), and
        by everything once anything in the folder changes; until then a whole-backlog reader (counts, the
        queue) may see its previous content. Limit: a change by another process in the same clock tick as
        this store's last write (1-4 ms), keeping the folder's mtime, is seen likewise (a new story's number
        is checked against the files all the same: no ID is ever reused)."""
        try:
            raw = read_state_file(self.root, BACKLOG)
        except FileNotFoundError:
            self._saved = None
            shown = self.rel(BACKLOG)
            raise StateCorrupt(shown, None, "the file is missing", _recovery_hint(shown)) from None
        dir_sig = self._dir_sig()
        saved = self._saved
        if saved is not None and not full and saved.head_raw == raw and saved.dir_sig == dir_sig:
            return saved
        head = saved.head if saved is not None and saved.head_raw == raw else self._parse(BACKLOG, raw, Backlog)
        if head.schema_version < 2:  # version 1: every story inside backlog.json (moved out at the next change)
            stories = {}
            for story in head.stories:
                stories.setdefault(story.id, story)
            saved = SavedBacklog(head.model_copy(update={"stories": []}), stories, {}, raw, dir_sig)
        else:
            stories, sigs = self._scan(saved if saved is not None and not saved.legacy else None)
            saved = SavedBacklog(head, stories, sigs, raw, dir_sig)
        self._saved = saved
        return saved

    def _scan(self, known: SavedBacklog | None) -> tuple[dict[str, Story], dict[str, Sig]]:
        """Every story file, reusing what `known` parsed of the files whose signature is unchanged."""
        stories: dict[str, Story] = {}
        sigs: dict[str, Sig] = {}
        try:
            fd = _open_state(self.root, STORIES, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return stories, sigs
        try:
            for entry in os.scandir(fd):
                if not STORY_FILE.match(entry.name):
                    continue
                if entry.is_symlink():
                    raise _symlinks_refused([f"{STATE_DIR}/{STORIES}/{entry.name}"])
                ident = entry.name[:-5]
                sig = _sig(entry.stat(follow_symlinks=False))
                if known is not None and known.sigs.get(ident) == sig:
                    stories[ident], sigs[ident] = known.stories[ident], sig
                    continue
                story, sig = self._read_story(fd, ident)
                if story is not None:
                    stories[ident], sigs[ident] = story, sig
        finally:
            os.close(fd)
        return stories, sigs

    def _read_story(self, folder_fd: int, ident: str) -> tuple[Story | None, Sig | None]:
        """stories/<ident>.json, parsed, and its signature; (None, None) if there is no such file."""
        rel = f"{STORIES}/{ident}.json"
        try:
            fd = os.open(f"{ident}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=folder_fd)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _symlinks_refused([f"{STATE_DIR}/{rel}"]) from None
            raise
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(f"{STATE_DIR}/{rel} is not a regular file.", "Remove it; the bot never reads one.")
            raw = fh.read()
        try:  # pydantic's own JSON parser: twice as fast, and a thousand files are read at start
            story = StoryFile.model_validate_json(raw)
            if story.schema_version > StoryFile.SCHEMA_VERSION:
                raise ValueError("newer")
        except ValueError:  # a damaged or newer file: parsed again the careful way, to say what is wrong
            story = self._parse(rel, raw, StoryFile)
        if story.id != ident:
            shown = self.rel(rel)
            raise StateCorrupt(shown, None, f"its id is {story.id}, but its file name says {ident}",
                               _recovery_hint(shown))
        return story, _sig(st)

    def story_now(self, ident: str) -> Story | None:
        """The story as its file holds it now (shared: never change it), for a writer about to edit it."""
        return self.refreshed([ident]).story(ident)

    def refreshed(self, idents: Iterable[str]) -> SavedBacklog:
        """The saved backlog with these stories as their files hold them now (a hand edit in place included).
        Costs a stat per story when the files are what this store read; changed ones are read again."""
        saved = self.saved_backlog()
        if saved.legacy:
            return saved
        changed: dict[str, Sig | None] = {}
        for ident in idents:
            if not STORY_ID.match(ident):  # what a person typed: never a path
                continue
            try:
                st = os.stat(self.dir / STORIES / f"{ident}.json", follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise _symlinks_refused([f"{STATE_DIR}/{STORIES}/{ident}.json"])
            if (sig := _sig(st) if st is not None else None) != saved.sigs.get(ident):
                changed[ident] = sig
        if not changed:
            return saved
        fd = _open_state(self.root, STORIES, os.O_RDONLY | os.O_DIRECTORY)
        try:
            read = {ident: self._read_story(fd, ident) for ident in changed}
        finally:
            os.close(fd)
        saved = self._saved = saved.changed(saved.head, saved.head_raw, {i: s for i, (s, _) in read.items()},
                                            {i: sig for i, (_, sig) in read.items()}, saved.dir_sig)
        return saved

    def story_file_exists(self, ident: str) -> bool:
        return bool(STORY_ID.match(ident)) and os.path.lexists(self.dir / STORIES / f"{ident}.json")

    # -- the files of the design ---------------------------------------------------------------------
    def backlog(self) -> Backlog:
        """The whole saved backlog, every story included (shared: never change it)."""
        return self.saved_backlog().view()

    def status(self, *, private: bool = False) -> Status:
        return self._required("status.json", Status, private)

    def sprint(self, sprint_id: str, *, private: bool = False) -> Sprint | None:
        return self.load(f"sprints/{sprint_id}.json", Sprint, private=private)

    def tickets(self, *, private: bool = False) -> TicketFile | None:
        """tickets.json, or None before the project's first ticket."""
        return self.load(TICKETS, TicketFile, private=private)

    def sprint_ids(self) -> list[str]:
        """The sprints, in order of their number (as text, sprint-1000 would sort before sprint-999); a file
        whose name is no sprint ID (a copy someone left there) is not a sprint."""
        folder = self.path("sprints")
        ids = [p.stem for p in folder.glob("sprint-*.json") if p.is_file()] if folder.is_dir() else []
        return sorted((i for i in ids if SPRINT_ID.match(i)), key=id_number)

    def _required(self, rel: str, model: type[F], private: bool = False) -> F:
        obj = self.load(rel, model, private=private)
        if obj is None:
            shown = self.rel(rel)
            raise StateCorrupt(shown, None, "the file is missing", _recovery_hint(shown))
        return obj

    def validate_all(self, *, partial: bool = False) -> None:
        """Parse every state file (raising StateCorrupt on the first bad one). With `partial`, a missing backlog
        or status is no error: registration checks what exists before the templates fill in the rest."""
        if not partial or self.path(BACKLOG).exists():
            self.saved_backlog(full=True)  # backlog.json and every story file
        (self.load if partial else self._required)("status.json", Status)
        for sid in self.sprint_ids():
            self.sprint(sid)
        self.tickets()

    # -- a whole set of files at once (restore) ----------------------------------------------------------
    def replace_files(self, files: dict[str, bytes], remove: list[str]) -> str | None:
        """Write `files` (path in .orch-state -> bytes, valid UTF-8 JSON: restore checked them) and remove the
        files of `remove`, as one change: save_many's journal, status.json last. What this store had read is read
        afresh afterwards. Failures as in save_many."""
        status = {rel: files[rel].decode() for rel in files if rel == "status.json"}
        change: dict[str, VersionedFile | str | None] = {
            **{rel: data.decode() for rel, data in files.items() if rel != "status.json"},
            **{rel: None for rel in remove}, **status}
        self.invalidate()  # a text is no model: nothing of it is carried into the saved state
        try:
            return self.save_many(change)
        finally:
            self.invalidate()


def _os_reason(exc: OSError) -> str:
    """An OSError in a few words: what, and the file's name (the target of a rename)."""
    name = exc.filename2 or exc.filename
    return f"{exc.strerror or exc}: {Path(name).name}" if name else str(exc.strerror or exc)


def _describe(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors(include_url=False)[:3]:
            field = ".".join(str(p) for p in err["loc"]) or "(file)"
            value = err.get("input")
            # A container is not printed: it may be nested too deeply to print.
            shown = {dict: "{...}", list: "[...]"}.get(type(value)) or json.dumps(value)[:60]
            parts.append(f"field {field} = {shown}: {err['msg']}")
        more = len(exc.errors()) - len(parts)
        return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
    return str(exc)


def create_from_templates(repo_root: Path, project: str, templates: Traversable = TEMPLATES) -> list[str]:
    """Create .orch-state/ from the templates, filling in the project name and today's date.
    Returns the created paths (relative to the repo). Never overwrites an existing file. Every template is read
    before anything is written: a broken installation changes nothing."""
    texts = dict(_template_texts(templates)) if templates.is_dir() else {}
    if missing := sorted(REQUIRED_TEMPLATES - texts.keys()):
        raise OrchError(f"orch's templates for a new {STATE_DIR}/ are missing ({', '.join(missing)} in {templates}).",
                        "The installation is damaged: reinstall orch.")
    folder = state_dir_of(repo_root)
    folder.mkdir(exist_ok=True)
    (folder / "sprints").mkdir(exist_ok=True)
    created = []
    for rel, text in sorted(texts.items()):
        target = folder / rel
        if target.exists():
            continue
        text = text.replace("{{project}}", project).replace("{{date}}", date.today().isoformat())
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, text.encode())
        created.append(f"{STATE_DIR}/{rel}")
    return created


def _template_texts(folder: Traversable, prefix: str = "") -> Iterator[tuple[str, str]]:
    for item in folder.iterdir():
        if item.is_dir():
            yield from _template_texts(item, f"{prefix}{item.name}/")
        elif item.is_file():
            yield f"{prefix}{item.name}", item.read_text(encoding="utf-8")
