"""One command's unit of work on one project (`Change`), and a registered project as the orchestrator holds it
at run time (`Project`). `Orchestrator._run` makes a Change under the project's locks; commands read and mutate
the state through it, and it writes what they changed (status.json last) and keeps their commit lines. A read
(`Orchestrator._read`) uses a Change too, with no lock, on the saved state the store shares."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, TypeVar

from . import state_machine as sm
from .commands import DISCORD, origin
from .errors import NotFound
from .models import Backlog, Sprint, State, Status, Transition, VersionedFile
from .registry import ProjectEntry
from .results import Cascade
from .store import TICKETS, ProjectStore
from .tickets import TicketFile

F = TypeVar("F", bound=VersionedFile)

@dataclass
class Project:
    """A registered project at run time: its files, its machine model, its lock."""

    entry: ProjectEntry
    store: ProjectStore
    model: sm.ProjectModel
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Change:
    """One command's unit of work on one project: loaded state in, changed files and commit lines out.

    A writer works on private copies of the files (each loaded once, so every step sees the same objects): a
    command that fails leaves nothing behind, and what it saved becomes the store's shared state, never changed
    again. A reader (`writer=False`) gets the shared objects and must not change them; it leaves the project's
    state machine alone too (a writer may be firing it in another thread)."""

    def __init__(self, project: Project, by: str, command: str, *, writer: bool = True,
                 front_end: str = DISCORD) -> None:
        self.project = project
        self.front_end = front_end  # where the command came from, for its commit lines
        self.store = project.store
        self.by = by
        self.command = command
        self.writer = writer
        self.loaded: dict[str, VersionedFile | None] = {}
        self.status: Status = self._load("status.json", self.store.status)
        if writer:
            project.model.state = self.status.state  # the file is the truth (it may have been checked out)
        self.dirty: dict[str, VersionedFile] = {}
        self.lines: list[str] = []
        self.written: list[str] = []  # the .orch-state-relative paths write() wrote or removed
        self.cascade = Cascade()

    @property
    def name(self) -> str:
        return self.project.entry.name

    @property
    def state(self) -> State:
        return self.status.state  # a writer's transition() keeps it equal to the machine's

    def _load(self, rel: str, read: Callable[..., F | None]) -> F | None:
        """`read` (a store method) once per unit of work: a writer's private copy, a reader's shared object."""
        if rel not in self.loaded:
            self.loaded[rel] = read(private=self.writer)
        return self.loaded[rel]  # type: ignore[return-value]

    @property
    def backlog(self) -> Backlog:
        return self._load("backlog.json", self.store.backlog)  # type: ignore[return-value]

    def tickets(self) -> TicketFile | None:
        return self._load(TICKETS, self.store.tickets)

    def unchanged(self) -> bool:
        """For a reader: whether every file it read still holds what it read (no write came in between)."""
        return all(self.store.unchanged(rel, obj) for rel, obj in self.loaded.items())

    def touch_backlog(self) -> None:
        self.dirty["backlog.json"] = self.backlog

    def sprint(self, ident: str) -> Sprint:
        rel = f"sprints/{ident}.json"
        if rel in self.dirty:
            return self.dirty[rel]  # type: ignore[return-value]
        sprint = self._load(rel, partial(self.store.sprint, ident))
        if sprint is None:
            raise NotFound("sprint", ident)
        return sprint

    def save_sprint(self, sprint: Sprint) -> None:
        self.dirty[f"sprints/{sprint.id}.json"] = sprint

    def current_sprint(self) -> Sprint:
        if not self.status.current_sprint:
            raise NotFound("current sprint", "", "Plan one with `sprint plan`.")
        return self.sprint(self.status.current_sprint)

    def check(self, command: str | None = None) -> None:
        sm.check(self.project.model, command or self.command)

    def transition(self, command: str | None = None, by: str | None = None) -> None:
        """Fire a trigger; a real change of state is recorded in status.json's history."""
        command = command or self.command
        source, dest = sm.fire(self.project.model, command)
        if source != dest:
            self.status.state = dest
            self.status.history.append(Transition(command=command, source=source, dest=dest, by=by or self.by))
            self.dirty["status.json"] = self.status
            first = self.cascade.state_change[0] if self.cascade.state_change else source
            self.cascade.state_change = (first, dest)

    def set_current_sprint(self, ident: str | None) -> None:
        self.status.current_sprint = ident
        self.dirty["status.json"] = self.status

    def note(self, ids: str, text: str) -> None:
        """A line of the commit message: `orch(S-3): text (/command by who)`, with the command as its front-end
        names it (`/epic` from Discord, `orch epic` from the CLI)."""
        self.lines.append(f"orch({ids}): {text} ({origin(self.command, self.front_end)} by {self.by})")

    def write(self) -> str | None:
        """Save what changed. Raises if nothing was saved; returns what went wrong after the change was decided
        (it is made all the same: see ProjectStore.save_many)."""
        if not self.dirty:
            return None
        status = self.dirty.pop("status.json", None)
        files = dict(self.dirty)
        if status is not None:
            files["status.json"] = status  # written last: the state never runs ahead of its data
        self.written = list(files)  # what the commit of this change holds (GitLog.record's paths)
        return self.store.save_many(files)

    def result_fields(self) -> dict:
        state = self.state
        return dict(project=self.name, state=state, allowed=sm.allowed_commands(state), next_step=sm.NEXT_STEP[state])
