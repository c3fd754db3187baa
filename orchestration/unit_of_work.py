"""One command's unit of work on one project (`Change`), and a registered project as the orchestrator holds it
at run time (`Project`). `Orchestrator._run` makes a Change under the project's locks; commands read and mutate
the state through it, and it writes what they changed (status.json last) and keeps their commit lines. A read
(`Orchestrator._read`) uses a Change too, with no lock, on the saved state the store shares.

The backlog (backlog.json: project, counters, epics; stories/S-<n>.json: one file per story), per story, so a
one-story command costs one story whatever the backlog's size:
    c.story(id) / c.epic(id)        read (None if missing); shared with readers: NEVER change what they return
    c.stories() / c.ordered()       every story (ordered: the queue's order, priority then age); read only
    c.dependants(id)                the stories that depend on `id` (an index, not a scan); read only
    c.edit_story(id)                a writer's private copy of the story as its file holds now (None if missing);
                                    change it freely: it is written if it differs when the command ends
    c.add_story(story)              a new story (number from c.new_story_number())
    c.remove_story(id)              its file is removed in the same atomic write
    c.edit_head()                   a private copy of backlog.json's own content (epics, counters)
The old way stays correct, only slower (O(backlog)): `b = c.backlog` in a writer is a private copy of the whole
backlog, every story included; change it in place; whatever differs from the saved state is written
(`touch_backlog()` is kept for that code and changes nothing). Once a writer has taken `c.backlog`, the calls
above work on that copy. In a reader, `c.backlog` is the shared saved backlog (never change it).
After `write()`, `written` lists the .orch-state-relative paths written or removed. Tests set ORCH_CHECK_SHARED=1:
a write then fails if shared saved objects were changed in place."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, Iterator, TypeVar

from . import state_machine as sm
from .commands import DISCORD, signed
from .errors import NotFound
from .models import Backlog, Epic, Sprint, State, Status, Story, StoryFile, Transition, VersionedFile, id_number
from .registry import ProjectEntry
from .results import Cascade
from .store import BACKLOG, STORIES, TICKETS, ProjectStore, SavedBacklog, story_key
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
        self.cascade = Cascade()
        self.written: list[str] = []  # after write(): the .orch-state-relative paths written or removed
        self._saved: SavedBacklog | None = None  # the saved backlog this unit of work started from
        self._head: Backlog | None = None  # a writer's private backlog.json content
        self._copies: dict[str, Story | None] = {}  # a writer's private stories (None: removed)
        self._bases: dict[str, Story | None] = {}  # what each copy was made from (None: a new story)
        self._whole: Backlog | None = None  # the old way: a private copy of everything
        self._whole_base: SavedBacklog | None = None

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

    def file(self, rel: str, model: type[F]) -> F | None:
        """A state file (`runs/S-3.json`) as this unit of work sees it: what it is about to write, else the file
        loaded once (a writer's private copy, a reader's shared object); None if there is none."""
        return self.dirty.get(rel) or self._load(rel, partial(self.store.load, rel, model))

    # -- the backlog (see the module's docstring) -------------------------------------------------------
    def saved(self) -> SavedBacklog:
        if self._saved is None:
            self._saved = self.store.saved_backlog()
        return self._saved

    @property
    def backlog(self) -> Backlog:
        """The whole backlog: a reader's shared one; a writer's private copy of everything (slow: see above)."""
        if not self.writer:
            return self.saved().view()
        if self._whole is None:
            base = self._whole_base = self.store.saved_backlog(full=True)  # each file as it is now
            self.saved()
            stories = [self._copies[i] if i in self._copies else s.model_copy(deep=True)
                       for i, s in sorted(base.stories.items(), key=lambda kv: id_number(kv[0]))]
            stories = [s for s in stories if s is not None]
            stories += [s for i, s in self._copies.items() if s is not None and i not in base.stories]
            head = self.edit_head()
            self._whole = self._head = Backlog.model_construct(**{**dict(head), "stories": stories})
        return self._whole

    def refresh(self, idents: Iterable[str]) -> bool:
        """For a reader: see these stories as their files hold them now (a hand edit in place, which the
        folder's signature does not show: see ProjectStore.saved_backlog). Returns whether any had changed."""
        before = self.saved()
        self._saved = self.store.refreshed(idents)
        return self._saved is not before

    def touch_backlog(self) -> None:
        """Kept for code written the old way: whatever differs from the saved state is written anyway."""

    def story(self, ident: str) -> Story | None:
        ident = ident.upper()
        if self._whole is not None:
            return self._whole.story(ident)
        if ident in self._copies:
            return self._copies[ident]
        return self.saved().story(ident)

    def epic(self, ident: str) -> Epic | None:
        return (self._head or self.saved().head).epic(ident)

    @property
    def epics(self) -> list[Epic]:
        return (self._head or self.saved().head).epics

    def stories(self) -> Iterator[Story]:
        if self._whole is not None:
            yield from self._whole.stories
            return
        copies = self._copies
        for ident, s in self.saved().stories.items():
            if ident not in copies:
                yield s
            elif copies[ident] is not None:
                yield copies[ident]  # type: ignore[misc]
        yield from (s for i, s in copies.items() if s is not None and i not in self.saved().stories)

    def ordered(self) -> Iterable[Story]:
        """Every story in the queue's order: priority, then age."""
        if self._whole is not None:
            return sorted(self._whole.stories, key=story_key)
        if not self._copies:
            return self.saved().ordered()
        return self._ordered_with_copies()

    def _ordered_with_copies(self) -> Iterator[Story]:
        """The saved order with this change's few copies merged in where they now belong."""
        copies = self._copies
        mine = sorted((*story_key(s), s) for s in copies.values() if s is not None)
        j = 0
        for rank, number, story in self.saved().order:
            while j < len(mine) and (mine[j][0], mine[j][1]) < (rank, number):
                yield mine[j][2]
                j += 1
            if story.id not in copies:
                yield story
        for entry in mine[j:]:
            yield entry[2]

    def dependants(self, ident: str) -> list[Story]:
        """The stories that depend on `ident`, oldest first."""
        if self._whole is not None:
            return [s for s in self._whole.stories if ident in s.depends_on]
        ids = set(self.saved().dependants.get(ident, ()))
        for i, s in self._copies.items():
            if s is not None and ident in s.depends_on:
                ids.add(i)
            else:
                ids.discard(i)
        return [s for i in sorted(ids, key=id_number) if (s := self.story(i)) is not None]

    def edit_story(self, ident: str) -> Story | None:
        """A private copy of the story (None if there is none), based on what its file holds now."""
        ident = ident.upper()
        if self._whole is not None or ident in self._copies:
            return self.story(ident)
        self._writer_only()
        self.saved()
        current = self.store.story_now(ident)
        if current is None:
            return None
        self._bases[ident] = current
        copy = self._copies[ident] = current.model_copy(deep=True)
        return copy

    def new_story_number(self) -> int:
        """The number of a new story: above the counter and every story (a story file that appeared meanwhile
        from another process or a hand edit included)."""
        numbers = [id_number(i) + 1 for i in self._copies] if self._whole is None else \
            [id_number(s.id) + 1 for s in self._whole.stories]
        number = max([(self._head or self.saved().head).next_story, self.saved().max_number + 1, *numbers])
        while self.store.story_file_exists(f"S-{number}"):
            number += 1
        return number

    def add_story(self, story: Story) -> Story:
        self._writer_only()
        if not isinstance(story, StoryFile):
            story = StoryFile.model_construct(**dict(story))
        if self._whole is not None:
            self._whole.stories.append(story)
        else:
            self._copies[story.id] = story
            self._bases.setdefault(story.id, None)
        return story

    def remove_story(self, ident: str) -> None:
        ident = ident.upper()
        if self._whole is not None:
            self._whole.stories = [s for s in self._whole.stories if s.id != ident]
            return
        if ident not in self._copies:
            self._writer_only()
            self.saved()
            self._bases[ident] = self.store.story_now(ident)
        self._copies[ident] = None

    def edit_head(self) -> Backlog:
        """A private copy of backlog.json's content (project, counters, epics)."""
        self._writer_only()
        if self._head is None:
            self._head = self.saved().head.model_copy(deep=True)
        return self._head

    def _writer_only(self) -> None:
        if not self.writer:
            raise RuntimeError("a read changes nothing: use a writer's Change")

    def _backlog_files(self) -> dict[str, VersionedFile | None]:
        """What the backlog's files need written: the stories that differ from what they were made from, the
        removed ones, and backlog.json if its content differs (or a removal needs its counter kept above)."""
        if self._saved is None and not (self._copies or self._head is not None):
            return {}
        saved = self.saved()
        changes: dict[str, Story | None] = {}
        if self._whole is not None:
            base = self._whole_base
            now = {s.id: s for s in self._whole.stories}
            changes = {i: s for i, s in now.items() if (o := base.story(i)) is None or _fields(o) != _fields(s)}
            changes.update({i: None for i in base.stories if i not in now})
        else:
            for i, s in self._copies.items():
                old = self._bases.get(i)
                if s is None:
                    if old is not None:
                        changes[i] = None
                elif old is None or _fields(old) != _fields(s):
                    changes[i] = s
        if removed := [id_number(i) for i, s in changes.items() if s is None]:
            if (self._head or saved.head).next_story <= max(removed):  # no removed story's ID is ever reused
                self.edit_head().next_story = max(removed) + 1
        head = self._head
        if saved.legacy and (changes or head is not None or self.dirty):
            head = self.edit_head()  # version 1: every story moves to its own file now, in this same write
            head.schema_version = 2
            for i, s in saved.stories.items():
                changes.setdefault(i, s)
            self.lines.append(f"orch({self.name}): move the stories of backlog.json to stories/, one file per "
                              f"story ({len(saved.stories)} stories; backlog.json schema_version 2)")
        files: dict[str, VersionedFile | None] = {}
        if head is not None and (saved.legacy or _fields(head) != _fields(saved.head)):
            files[BACKLOG] = head.model_copy(update={"stories": []}) if head.stories else head
        for i in sorted(changes, key=id_number):
            s = changes[i]
            files[f"{STORIES}/{i}.json"] = s if s is None or isinstance(s, StoryFile) else \
                StoryFile.model_construct(**dict(s))
        return files

    def tickets(self) -> TicketFile | None:
        return self._load(TICKETS, self.store.tickets)

    def unchanged(self) -> bool:
        """For a reader: whether every file it read still holds what it read (no write came in between)."""
        return all(self.store.unchanged(rel, obj) for rel, obj in self.loaded.items()) and \
            (self._saved is None or self.store.saved_backlog() is self._saved)

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
        self.lines.append(signed(f"orch({ids}): {text}", self.command, self.front_end, self.by))

    def write(self) -> str | None:
        """Save what changed. Raises if nothing was saved; returns what went wrong after the change was decided
        (it is made all the same: see ProjectStore.save_many)."""
        files: dict[str, VersionedFile | None] = self._backlog_files()
        status = self.dirty.pop("status.json", None)
        files.update(self.dirty)
        if status is not None:
            files["status.json"] = status  # written last: the state never runs ahead of its data
        for saved in {id(s): s for s in (self._saved, self._whole_base) if s is not None}.values():
            saved.check_unchanged()  # with ORCH_CHECK_SHARED: no writer changed what readers share
        if not files:
            return None
        warning = self.store.save_many(files)
        self.written = list(files)
        return warning

    def result_fields(self) -> dict:
        state = self.state
        return dict(project=self.name, state=state, allowed=sm.allowed_commands(state), next_step=sm.NEXT_STEP[state])


def _fields(model: Story | Backlog) -> dict:
    """What a story or backlog.json holds, to compare a copy with what it was made from (schema_version and the
    in-memory stories of a whole backlog aside)."""
    fields = dict(model)
    fields.pop("schema_version", None)
    fields.pop("stories", None)
    return fields
