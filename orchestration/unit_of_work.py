"""One command's unit of work on one project (`Change`), and a registered project as the orchestrator holds it
at run time (`Project`). `Orchestrator._run` makes a Change under the project's locks; commands read and mutate
the state through it, and it writes what they changed (status.json last) and keeps their commit lines."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from . import state_machine as sm
from .errors import NotFound
from .models import Backlog, Sprint, State, Status, Transition, VersionedFile
from .registry import ProjectEntry
from .results import Cascade
from .store import ProjectStore

# How a command appears in commit messages and logs.
LABEL = {
    "register": "/project register", "epic": "/epic", "add_story": "/backlog add_story",
    "prioritize": "/backlog prioritize", "remove_story": "/backlog remove", "update_story": "/story update",
    "plan": "/sprint plan", "start": "/sprint start", "pause": "/sprint pause", "resume": "/sprint resume",
    "review": "/sprint review", "feedback": "/feedback", "request_changes": "/feedback",
    "open_ticket": "/ticket open", "set_ticket_thread": "/ticket open", "reply_ticket": "reply",
    "resolve_ticket": "/ticket resolve", "reopen_ticket": "/ticket reopen", "set_dependencies": "/backlog depend",
}


@dataclass
class Project:
    """A registered project at run time: its files, its machine model, its lock."""

    entry: ProjectEntry
    store: ProjectStore
    model: sm.ProjectModel
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Change:
    """One command's unit of work on one project: loaded state in, changed files and commit lines out.

    It mutates the store's cached objects in place; if the command fails, `_run` drops the cache, so the
    next command reads the files again and nothing half-changed survives."""

    def __init__(self, project: Project, by: str, command: str) -> None:
        self.project = project
        self.store = project.store
        self.by = by
        self.command = command
        self.status: Status = self.store.status()
        project.model.state = self.status.state  # the file is the truth (it may have been checked out)
        self._backlog: Backlog | None = None
        self.dirty: dict[str, VersionedFile] = {}
        self.lines: list[str] = []
        self.cascade = Cascade()

    @property
    def name(self) -> str:
        return self.project.entry.name

    @property
    def state(self) -> State:
        return self.project.model.state

    @property
    def backlog(self) -> Backlog:
        if self._backlog is None:
            self._backlog = self.store.backlog()
        return self._backlog

    def touch_backlog(self) -> None:
        self.dirty["backlog.json"] = self.backlog

    def sprint(self, ident: str) -> Sprint:
        rel = f"sprints/{ident}.json"
        if rel in self.dirty:
            return self.dirty[rel]  # type: ignore[return-value]
        sprint = self.store.sprint(ident)
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
        """A line of the commit message: `orch(S-3): text (/command by who)`."""
        self.lines.append(f"orch({ids}): {text} ({LABEL.get(self.command, self.command)} by {self.by})")

    def write(self) -> None:
        if not self.dirty:
            return
        status = self.dirty.pop("status.json", None)
        files = dict(self.dirty)
        if status is not None:
            files["status.json"] = status  # written last: the state never runs ahead of its data
        self.store.save_many(files)

    def result_fields(self) -> dict:
        state = self.state
        return dict(project=self.name, state=state, allowed=sm.allowed_commands(state), next_step=sm.NEXT_STEP[state])
