"""The registered projects: one JSON file in data_dir, written atomically, shared safely between processes."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout
from pydantic import Field, ValidationError

from .errors import Busy, StateCorrupt
from .models import SLUG, Line, Model, VersionedFile, utcnow
from .store import atomic_write, dump, load_json


class ProjectEntry(Model):
    name: str = Field(pattern=SLUG.pattern)
    path: Path
    guild_id: int | None = None
    channel_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    created_by: Line = "unknown"

    def seen_from(self, guild_id: int | None) -> bool:
        """Per-server isolation, the one rule: asked on behalf of a Discord server (`guild_id`), a project
        exists only if that server registered it (or adopted it); the CLI (None) sees every project. A
        project registered from the CLI belongs to no server, so none sees it until one adopts it."""
        return guild_id is None or self.guild_id == guild_id


class RegistryFile(VersionedFile):
    projects: list[ProjectEntry] = Field(default_factory=list)


class Registry:
    """Read-through cache of data_dir/registry.json (by its bytes, like the state files: another process, the
    CLI beside the bot, may change it); `edit()` is the only way to change it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.file = data_dir / "registry.json"
        self._cached: tuple[bytes | None, RegistryFile] = (None, RegistryFile())  # one tuple: threads read it

    def _load(self) -> RegistryFile:
        try:
            raw = self.file.read_bytes()
        except FileNotFoundError:
            data = RegistryFile()
            self._cached = (None, data)
            return data
        cached_raw, data = self._cached
        if raw != cached_raw:
            try:
                parsed = load_json(raw)
                if not isinstance(parsed, dict):
                    raise ValueError("expected a JSON object")
                data = RegistryFile.model_validate(RegistryFile.migrate(parsed))
            except (ValueError, ValidationError) as exc:
                raise StateCorrupt(
                    str(self.file), getattr(exc, "lineno", None), str(exc).splitlines()[0],
                    "Fix the file by hand or restore it from a backup; the bot does not overwrite it.",
                ) from None
            self._cached = (raw, data)
        return data

    def all(self, guild_id: int | None = None) -> list[ProjectEntry]:
        """Every project, or those `guild_id` sees (see ProjectEntry.seen_from)."""
        return [p for p in self._load().projects if p.seen_from(guild_id)]

    def get(self, name: str) -> ProjectEntry | None:
        return next((p for p in self._load().projects if p.name == name), None)

    def by_path(self, path: Path) -> ProjectEntry | None:
        return next((p for p in self._load().projects if p.path == path), None)

    def by_channel(self, channel_id: int, guild_id: int) -> ProjectEntry | None:
        return next((p for p in self.all(guild_id) if p.channel_id == channel_id), None)

    @contextmanager
    def edit(self) -> Iterator[RegistryFile]:
        """Read-modify-write under a cross-process lock; written only if the block finishes."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.data_dir / "registry.lock"), timeout=10)
        try:
            lock.acquire()
        except Timeout:
            raise Busy("Another process is changing the list of projects right now.", "Try again in a moment.") from None
        try:
            data = self._load().model_copy(deep=True)
            yield data
            atomic_write(self.file, dump(data))
        finally:
            lock.release()
