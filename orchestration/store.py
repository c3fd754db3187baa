"""Reading and writing one project's .orch-state/: atomic, locked, cached, and confined to that folder.

- Writes go to a temp file in the same folder, are fsynced, then renamed over the target (and the folder is
  fsynced), so a reader sees the old file or the new one, never half of one. A command that changes several
  files writes a journal first, so a crash between two renames is finished by the next command: never half
  of a command either (`save_many`).
- A file lock (.orch-state/.lock) keeps a second process (the CLI beside the bot) from interleaving.
- Parsed files are cached by their bytes: each read compares the file's bytes (cheap) with those it parsed
  (dear), so a hand edit or a `git checkout` is seen by the next read, whatever the clock or inode says.
- A file that does not parse or validate raises StateCorrupt and is never overwritten; so does one nested too
  deeply or holding an absurdly long number (a damaged file, never a RecursionError or ValueError).
- No file under .orch-state is opened through a symlink: every open walks from the repository down with
  O_NOFOLLOW (the folders on the way too), and every lock (each command, each commit) first refuses a
  .orch-state that holds one. A link could lead writes anywhere, or a file's contents into a commit message.
- Writers work on private copies (parsed afresh from the file's bytes); the cache holds only what was saved,
  so readers take no lock and what they return never changes afterwards.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import stat
import tempfile
from contextlib import contextmanager
from datetime import date
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, TypeVar

from pydantic import ValidationError

from . import filelocks
from .errors import OrchError, StateCorrupt, StateLocked, UnsafePath, WriteFailed
from .models import SPRINT_ID, Backlog, Sprint, Status, VersionedFile
from .tickets import TicketFile

STATE_DIR = ".orch-state"
LOCK_NAME = ".lock"
TICKETS = "tickets.json"
JOURNAL = ".journal.tmp"  # names the temp files of a multi-file write in progress; *.tmp is never committed
LOCK_TIMEOUT_S = 10.0
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
    tmp = _durable_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _durable_temp(path: Path, data: bytes) -> Path:
    """`data` in a fsynced temp file beside `path` (same folder, so the rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


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


def symlinks_in(repo_root: Path) -> list[str]:
    """Every symlink in the repository's .orch-state (itself included), as paths relative to the repository."""
    folder = repo_root / STATE_DIR
    if folder.is_symlink():
        return [STATE_DIR]
    found = []
    for parent, dirs, files in os.walk(folder):  # a symlinked folder is listed in `dirs`, never entered
        found += [(Path(parent) / n).relative_to(repo_root).as_posix() for n in dirs + files
                  if (Path(parent) / n).is_symlink()]
    return sorted(found)


def _symlinks_refused(found: list[str]) -> UnsafePath:
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    verb = "is a symlink" if len(found) == 1 else "are symlinks"
    return UnsafePath(f"{shown} {verb}; the bot never follows a symlink in {STATE_DIR}, so nothing was changed.",
                      "Replace each with the real file or folder, or remove it (and commit that if git holds the "
                      "link); the bot recreates its own working files.")


def check_no_symlinks(repo_root: Path) -> None:
    if found := symlinks_in(repo_root):
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


class ProjectStore:
    """Typed access to one project's .orch-state files."""

    def __init__(self, repo_root: Path) -> None:
        self.root = repo_root.resolve()
        self.dir = state_dir_of(self.root)
        self._cache: dict[str, tuple[bytes, VersionedFile]] = {}  # saved state only: never handed to a writer

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
        changes on disk: never change it. A writer asks for a `private` copy, parsed afresh from the bytes (a
        backlog of 1,000 stories in about 5 ms, 10,000 in 50-90 ms; a deep copy of the objects costs 2-3 times
        as much)."""
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

    def save_many(self, files: dict[str, VersionedFile | str]) -> str | None:
        """Write one command's files so that they change together (the caller holds the lock).

        Every file goes to a fsynced temp file first. With more than one file, a journal naming the temp files
        is made durable next: from then on the change is decided. Then the temp files are renamed in the given
        order (callers put status.json last) and the journal is removed. A crash between two renames leaves the
        journal, and whoever takes the lock next finishes the renames before reading anything, so no command
        ever sees half of another.

        A failure before the decision (the journal, or for one file its rename) raises WriteFailed and nothing
        has changed. A failure after it cannot undo the change: it is made (the journal finishes it), so the
        command succeeded, and what went wrong is returned for it to say beside its success."""
        folder = state_dir_of(self.root)
        staged: list[tuple[str, Path, Path, bytes]] = []
        journal = folder / JOURNAL if len(files) > 1 else None
        try:
            for rel, obj in files.items():
                path = self.path(rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                data = dump(obj)
                staged.append((rel, path, _durable_temp(path, data), data))
            if journal is not None:
                atomic_write(journal, json.dumps(
                    [[tmp.relative_to(folder).as_posix(), rel] for rel, _, tmp, _ in staged]).encode())
            else:
                os.replace(staged[0][2], staged[0][1])  # one file: its rename is the decision
        except BaseException as exc:
            for _, _, tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise WriteFailed(f"Could not save {self.root.name}'s state ({_os_reason(exc)}). Nothing was "
                                  "changed.", "Fix the cause (disk space, permissions, something in the way), "
                                  "then try again.") from exc
            raise
        try:
            if journal is not None:
                for _, path, tmp, _ in staged:
                    os.replace(tmp, path)
            for parent in {path.parent for _, path, _, _ in staged}:
                fsync_dir(parent)
            if journal is not None:
                journal.unlink()
                fsync_dir(folder)
        except OSError as exc:
            self.invalidate()
            log.error("a decided write to %s is not finished: %s; the next command finishes it", self.root, exc)
            return (f"it is not fully on disk yet ({_os_reason(exc)}); the next command finishes it once that "
                    "is fixed")
        for rel, _, _, data in staged:
            self._cache[rel] = (data, files[rel])  # the writer's copy is saved state now, and is never changed
        return None

    def settle(self) -> None:
        """For readers, which take no lock: if a write was interrupted, finish it (under the lock) first. One
        short try: StateLocked while another process holds the lock (the caller waits on the event loop)."""
        if (state_dir_of(self.root) / JOURNAL).exists():
            with self.locked(timeout=LOCK_TRY_S):
                pass

    def _finish_interrupted_write(self) -> None:
        """Under the lock, before anything is read: finish the renames of a write that a crash interrupted
        (its journal is there), and remove temp files that a crash left before any journal was made."""
        folder = state_dir_of(self.root)
        journal = folder / JOURNAL
        if journal.exists():
            finished = []
            try:
                for tmp_rel, rel in load_json(read_state_file(self.root, JOURNAL)):
                    tmp, target = self.path(tmp_rel), self.path(rel)
                    if tmp.exists():  # not renamed yet
                        os.replace(tmp, target)
                        finished.append(rel)
                for parent in {folder, folder / "sprints"}:
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
        for orphan in folder.rglob(".*.tmp"):  # a crash before the journal: the command never happened
            orphan.unlink(missing_ok=True)

    def invalidate(self) -> None:
        self._cache.clear()

    # -- the files of the design ---------------------------------------------------------------------
    def backlog(self, *, private: bool = False) -> Backlog:
        return self._required("backlog.json", Backlog, private)

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
        return sorted((i for i in ids if SPRINT_ID.match(i)), key=lambda i: int(i.split("-")[1]))

    def _required(self, rel: str, model: type[F], private: bool = False) -> F:
        obj = self.load(rel, model, private=private)
        if obj is None:
            shown = self.rel(rel)
            raise StateCorrupt(shown, None, "the file is missing", _recovery_hint(shown))
        return obj

    def validate_all(self, *, partial: bool = False) -> None:
        """Parse every state file (raising StateCorrupt on the first bad one). With `partial`, a missing backlog
        or status is no error: registration checks what exists before the templates fill in the rest."""
        load = self.load if partial else self._required
        load("backlog.json", Backlog)
        load("status.json", Status)
        for sid in self.sprint_ids():
            self.sprint(sid)
        self.tickets()

    # -- a whole set of files at once (restore) ----------------------------------------------------------
    def replace_files(self, files: dict[str, bytes], remove: list[str]) -> str | None:
        """Write `files` (path in .orch-state -> bytes) and remove the files of `remove`, as one change that a
        crash never leaves half done (the caller holds the lock). save_many's journal, where a removal is a rename
        of the file to a temp name that the sweep of leftover temp files deletes: a crash after the journal is
        finished by the next lock, one before it changed nothing. status.json is written last. Failures as in
        save_many: WriteFailed (nothing changed), or what went wrong after the change was decided."""
        folder = state_dir_of(self.root)
        writes: list[tuple[Path, Path]] = []  # (temp file, target)
        try:
            for rel in sorted(files, key=lambda rel: rel == "status.json"):
                path = self.path(rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                writes.append((_durable_temp(path, files[rel]), path))
            removals = [(path, path.with_name(f".{path.name}.removed.tmp")) for path in map(self.path, remove)]
            last = writes[-1:] if "status.json" in files else []
            moves = writes[: len(writes) - len(last)] + removals + last
            atomic_write(folder / JOURNAL, json.dumps(
                [[a.relative_to(folder).as_posix(), b.relative_to(folder).as_posix()] for a, b in moves]).encode())
        except BaseException as exc:
            for tmp, _ in writes:
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise WriteFailed(f"Could not save {self.root.name}'s state ({_os_reason(exc)}). Nothing was "
                                  "changed.", "Fix the cause, then try again.") from exc
            raise
        try:
            for source, target in moves:
                os.replace(source, target)
            for _, trash in removals:
                trash.unlink()
            for parent in {target.parent for _, target in moves}:
                fsync_dir(parent)
            (folder / JOURNAL).unlink()
            fsync_dir(folder)
        except OSError as exc:
            log.error("a decided write to %s is not finished: %s; the next command finishes it", self.root, exc)
            return (f"it is not fully on disk yet ({_os_reason(exc)}); the next command finishes it once that "
                    "is fixed")
        finally:
            self.invalidate()
        return None


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
