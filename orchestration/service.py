"""The orchestrator's API: one async method per command. Front-ends call these and render what they return.

Every mutating command follows one path (`_change`): take the project's asyncio lock, then (in a worker
thread) its file lock; load the state; ask the state machine; mutate; write every changed file atomically;
queue the git commit; return a typed result. A failure raises an OrchError and writes nothing.
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Callable, TypeVar

import git
from pydantic import ValidationError

from . import consistency, state_machine as sm
from .config import Config
from .errors import Busy, InvalidInput, NotFound, OrchError, ProjectExists, ProjectNotFound
from .gitlog import GitLog, quote, why_commit_waits, writes_blocked
from .models import (
    SLUG, Backlog, BurndownPoint, Epic, Priority, Retrospective, Sprint, SprintStatus, State, Status,
    Story, StoryStatus, Transition, VersionedFile, sprint_id, utcnow,
)
from .registry import ProjectEntry, Registry
from .results import (
    BacklogPage, Cascade, EpicCreated, Health, ProjectHealth, ProjectInfo, Registered, SprintView,
    StateView, StoryChanged, Unregistered,
)
from .store import STATE_DIR, ProjectStore, create_from_templates, state_dir_of
from .queue import queue_order as _queue_order, unmet_dependencies as _unmet_dependencies
from .ticket_service import TicketCommands, close_tickets_of_done_story, tickets_of

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CAPACITY = 20  # points, when /sprint plan picks stories itself and no capacity is given
UNPOINTED = 1  # a story without points counts as 1 point towards capacity
PAGE_SIZE = 10
TRANSITION_WINDOW = timedelta(days=7)  # health counts the state changes of this window (transitions_last_7_days)

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


class Orchestrator(TicketCommands):
    def __init__(self, config: Config) -> None:
        self.config = config
        o = config.orchestrator
        self.registry = Registry(o.data_dir)
        self.git = GitLog(o.author_name, o.author_email, o.commit_batch_ms)
        self._projects: dict[str, Project] = {}
        self._registry_lock = asyncio.Lock()

    # -- life cycle ----------------------------------------------------------------------------------------
    async def start(self) -> dict[str, str]:
        """Commit what a crash left uncommitted in every registered project. Returns project -> outcome."""
        outcomes = {}
        for entry in self.registry.all():
            try:
                outcomes[entry.name] = await self.git.recover(entry.path)
            except Exception as exc:  # a broken project must not keep the others from starting
                outcomes[entry.name] = f"failed: {exc}"
                log.warning("start-up recovery of %s failed: %s", entry.name, exc)
        return outcomes

    async def close(self) -> None:
        await self.git.close()
        for project in self._projects.values():
            sm.forget_model(project.model)
        self._projects.clear()

    async def flush(self) -> None:
        """Commit everything queued now (tests and shutdown)."""
        await self.git.flush()

    # -- projects ------------------------------------------------------------------------------------------
    def project(self, name: str) -> Project:
        entry = self.registry.get(name)
        if entry is None:
            raise ProjectNotFound(name)
        _check_repo_present(entry)
        project = self._projects.get(name)
        if project is None or project.entry.path != entry.path:  # first use, or re-registered elsewhere
            if project is not None:
                sm.forget_model(project.model)
            store = ProjectStore(entry.path)
            project = Project(entry, store, sm.new_model(name, store.status().state))
            self._projects[name] = project
        project.entry = entry
        return project

    def project_for_channel(self, channel_id: int) -> ProjectEntry | None:
        return self.registry.by_channel(channel_id)

    def list_projects(self) -> list[ProjectInfo]:
        infos = []
        for entry in self.registry.all():
            try:
                state = ProjectStore(entry.path).status().state
            except OrchError:
                state = None
            infos.append(ProjectInfo(**entry.model_dump(exclude={"created_by"}), state=state))
        return infos

    def check_registration(self, path: str, name: str | None = None) -> tuple[Path, str]:
        """Validate a registration without changing anything. Returns (resolved path, name)."""
        raw = Path(path).expanduser()
        if not str(path).strip():
            raise InvalidInput("path", "is empty")
        if not raw.exists():
            raise InvalidInput("path", f"{path} does not exist on the bot's machine.")
        resolved = raw.resolve()
        roots = self.config.orchestrator.allowed_roots
        if not any(resolved == r or r in resolved.parents for r in roots):
            shown = ", ".join(str(r) for r in roots) or "none configured"
            raise InvalidInput("path", f"{resolved} is outside the allowed roots ({shown}).",
                               "Ask an admin to add its folder to `allowed_roots` in the config.")
        if not resolved.is_dir():
            raise InvalidInput("path", f"{resolved} is not a folder.")
        try:
            repo = git.Repo(resolved)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise InvalidInput("path", f"{resolved} is not the top folder of a git repository.",
                               "Run `git init` there first, or give the repository's top folder.") from None
        try:
            if repo.bare:
                raise InvalidInput("path", f"{resolved} is a bare repository; it needs a work tree.")
            if Path(repo.working_tree_dir).resolve() != resolved:
                raise InvalidInput("path", f"{resolved} is not the top folder of its git repository.")
            if _ignored_by_git(repo, f"{STATE_DIR}/status.json"):
                raise InvalidInput("path", f"the repository's ignore rules ignore {STATE_DIR}/, so its history "
                                   "(the audit trail and undo) could not be committed.",
                                   f"Remove the rule that ignores {STATE_DIR} (see `git check-ignore -v "
                                   f"{STATE_DIR}/status.json`), then register again.")
        finally:
            repo.close()
        state_dir_of(resolved)  # refuses a symlinked .orch-state
        name = (name or _slugify(resolved.name)).strip()
        if not SLUG.match(name):
            raise InvalidInput("name", f"{name!r} is not a valid project name.",
                               "Use 1 to 40 lowercase letters, digits and hyphens, starting with a letter or digit.")
        existing = self.registry.by_path(resolved)
        if existing:
            raise ProjectExists(existing.name, str(existing.path), existing.channel_id)
        if self.registry.get(name):
            raise InvalidInput("name", f'"{name}" is already the name of another project.', "Choose another name.")
        return resolved, name

    async def register_project(self, path: str, name: str | None = None, by: str = "unknown",
                               guild_id: int | None = None, channel_id: int | None = None) -> Registered:
        async with self._registry_lock:
            resolved, name = await asyncio.to_thread(self.check_registration, path, name)  # runs git: off the loop
            created, adopted = await asyncio.to_thread(self._prepare_state, resolved, name, by)
            with self.registry.edit() as data:
                if any(p.path == resolved or p.name == name for p in data.projects):  # another process won
                    raise ProjectExists(name, str(resolved))
                entry = ProjectEntry(name=name, path=resolved, guild_id=guild_id, channel_id=channel_id, created_by=by)
                data.projects.append(entry)
        self.git.commit_soon(resolved)
        project = self.project(name)
        state = project.model.state
        return Registered(project=name, state=state, allowed=sm.allowed_commands(state), next_step=sm.NEXT_STEP[state],
                          info=ProjectInfo(**entry.model_dump(exclude={"created_by"}), state=state),
                          created_files=created, adopted=adopted)

    def _prepare_state(self, root: Path, name: str, by: str) -> tuple[list[str], bool]:
        """Adopt a valid existing .orch-state (never overwriting it) or create one from the templates."""
        adopted = (state_dir_of(root) / "status.json").exists()
        ProjectStore(root).validate_all(partial=True)  # before anything is created: a refusal changes nothing
        created = create_from_templates(root, name)
        store = ProjectStore(root)
        store.validate_all()
        with store.locked():
            verb = "adopt existing" if adopted else "initialise"
            self.git.record(root, [f"orch({name}): {verb} .orch-state for project {name} (/project register by {by})"])
        return created, adopted

    async def set_channel(self, name: str, guild_id: int | None, channel_id: int | None) -> ProjectEntry:
        async with self._registry_lock:
            with self.registry.edit() as data:
                entry = next((p for p in data.projects if p.name == name), None)
                if entry is None:
                    raise ProjectNotFound(name)
                entry.guild_id, entry.channel_id = guild_id, channel_id
        return entry

    async def unregister_project(self, name: str, by: str = "unknown") -> Unregistered:
        """Forget a project. Its repository and .orch-state stay as they are."""
        async with self._registry_lock:
            with self.registry.edit() as data:
                entry = next((p for p in data.projects if p.name == name), None)
                if entry is None:
                    raise ProjectNotFound(name)
                data.projects.remove(entry)
        await self.git.flush(entry.path)
        project = self._projects.pop(name, None)
        if project:
            sm.forget_model(project.model)
        return Unregistered(name=name, path=entry.path, channel_id=entry.channel_id)

    # -- the one path every change takes ---------------------------------------------------------------
    async def _change(self, name: str, command: str, by: str, work: Callable[[Change], T]) -> T:
        project = self.project(name)
        async with project.lock:
            change, result = await asyncio.to_thread(self._run, project, command, by, work)
        self.git.commit_soon(project.entry.path)  # the lines were recorded under the file lock, in _run
        log.info("project=%s command=%s by=%s changes=%d state=%s", name, command, by, len(change.lines),
                 project.model.state.value)
        return result

    def _run(self, project: Project, command: str, by: str, work: Callable[[Change], T]) -> tuple[Change, T]:
        if why := writes_blocked(project.entry.path):
            raise Busy(f"{project.entry.name}'s repository is in the middle of {why}; nothing was changed.",
                       "Finish it (or abort it) in the repository, then try again.")
        with project.store.locked():
            change = Change(project, by, command)
            before = project.model.state
            try:
                result = work(change)
                change.write()
            except BaseException:
                project.model.state = before
                project.store.invalidate()
                raise
            self.git.record(project.entry.path, change.lines)  # still under the file lock: see gitlog.record
            return change, result

    async def _read(self, name: str, work: Callable[[Change], T]) -> T:
        project = self.project(name)
        async with project.lock:
            return await asyncio.to_thread(self._read_sync, project, work)

    @staticmethod
    def _read_sync(project: Project, work: Callable[[Change], T]) -> T:
        project.store.settle()
        return work(Change(project, "read", "read"))

    # -- backlog -------------------------------------------------------------------------------------------
    async def create_epic(self, project: str, title: str, description: str = "", by: str = "unknown") -> EpicCreated:
        def work(c: Change) -> EpicCreated:
            c.check()
            b = c.backlog
            epic = _validated(lambda: Epic(id=f"E-{b.next_epic}", title=title, description=description or "",
                                           created_by=by))
            b.epics.append(epic)
            b.next_epic += 1
            c.touch_backlog()
            c.transition()
            c.note(epic.id, f"create epic {quote(epic.title)}")
            return EpicCreated(**c.result_fields(), epic=epic)

        return await self._change(project, "epic", by, work)

    async def add_story(self, project: str, epic: str, title: str, description: str = "", points: int | None = None,
                        priority: str | Priority = Priority.medium, acceptance_criteria: list[str] | None = None,
                        depends_on: list[str] | None = None, by: str = "unknown") -> StoryChanged:
        def work(c: Change) -> StoryChanged:
            c.check()
            b = c.backlog
            parent = b.epic(epic or "")
            if parent is None:
                raise InvalidInput("epic", f"there is no epic {epic!r} in {c.name}.",
                                   _known("Epics", [e.id for e in b.epics]))
            deps = [d.strip().upper() for d in depends_on or [] if d.strip()]
            for dep in deps:
                if b.story(dep) is None:
                    raise InvalidInput("depends_on", f"there is no story {dep} in {c.name}.")
            story = _validated(lambda: Story(
                id=f"S-{b.next_story}", epic=parent.id, title=title, description=description or "",
                points=points, priority=_priority(priority), depends_on=deps,
                acceptance_criteria=[a.strip() for a in acceptance_criteria or [] if a.strip()], created_by=by))
            b.stories.append(story)
            b.next_story += 1
            c.touch_backlog()
            c.transition()
            c.note(f"{story.id}, {parent.id}", f"add story {quote(story.title)} [{story.priority.value}]")
            return StoryChanged(**c.result_fields(), action="added", story=story)

        return await self._change(project, "add_story", by, work)

    async def prioritize_story(self, project: str, story: str, priority: str | Priority,
                               by: str = "unknown") -> StoryChanged:
        def work(c: Change) -> StoryChanged:
            c.check()
            s = _story(c, story)
            previous = s.priority.value
            s.priority = _priority(priority)
            s.updated_at = utcnow()
            c.touch_backlog()
            c.transition()
            c.note(s.id, f"priority {previous} -> {s.priority.value}")
            return StoryChanged(**c.result_fields(), action="reprioritized", story=s, previous=previous)

        return await self._change(project, "prioritize", by, work)

    async def remove_story(self, project: str, story: str, by: str = "unknown") -> StoryChanged:
        def work(c: Change) -> StoryChanged:
            c.check()
            b = c.backlog
            s = _story(c, story)
            dependants = [o.id for o in b.stories if s.id in o.depends_on]
            if dependants:
                raise InvalidInput("story", f"{', '.join(dependants)} depend on {s.id}.",
                                   "Remove those first, or keep this story.")
            if asking := tickets_of(c).open_for_story(s.id):  # else a ticket would ask about nothing
                raise InvalidInput("story", f"{', '.join(t.id for t in asking)} still asks about {s.id}.",
                                   "Resolve the ticket first (`ticket resolve`), then remove the story.")
            if s.sprint and s.sprint == c.status.current_sprint:
                sprint = c.current_sprint()
                if sprint.status is not SprintStatus.planned:
                    raise InvalidInput("story", f"{s.id} is part of {sprint.id}, which is under way.",
                                       "Finish or review the sprint first; unfinished stories return to the backlog.")
                sprint.stories.remove(s.id)
                c.save_sprint(sprint)
            b.stories.remove(s)
            c.touch_backlog()
            c.transition()
            c.note(s.id, f"remove story {quote(s.title)}")
            return StoryChanged(**c.result_fields(), action="removed", story=s)

        return await self._change(project, "remove_story", by, work)

    async def view_backlog(self, project: str, epic: str | None = None, status: str | None = None,
                           page: int = 1, per_page: int = PAGE_SIZE) -> BacklogPage:
        def work(c: Change) -> BacklogPage:
            b = c.store.backlog()
            stories = b.stories
            if epic:
                if b.epic(epic) is None:
                    raise InvalidInput("epic", f"there is no epic {epic!r}.", _known("Epics", [e.id for e in b.epics]))
                stories = [s for s in stories if s.epic == epic.upper()]
            if status:
                wanted = _status(status)
                stories = [s for s in stories if s.status is wanted]
            stories = sorted(stories, key=_queue_order)
            pages = max(1, -(-len(stories) // per_page))
            if page < 1 or page > pages:
                raise InvalidInput("page", f"must be between 1 and {pages}.")
            chunk = stories[(page - 1) * per_page: page * per_page]
            return BacklogPage(**c.result_fields(), epics=b.epics, stories=chunk, page=page, pages=pages,
                               total=len(stories), epic_filter=epic.upper() if epic else None, status_filter=status)

        return await self._read(project, work)

    # -- stories in a sprint ---------------------------------------------------------------------------
    async def update_story(self, project: str, story: str, status: str | StoryStatus,
                           by: str = "unknown") -> StoryChanged:
        """A person (or an agent) moves a story: todo, in_progress, done or blocked."""
        def work(c: Change) -> StoryChanged:
            c.check()
            new = _status(status)
            if new is StoryStatus.blocked_awaiting_feedback:
                raise InvalidInput("status", "blocked_awaiting_feedback is set by opening a ticket.",
                                   "Use todo, in_progress, done or blocked.")
            s = _story(c, story)
            previous = s.status
            if previous is StoryStatus.blocked_awaiting_feedback and new is not StoryStatus.done:
                raise InvalidInput("status", f"{s.id} waits for an answer to its ticket.",
                                   "Answer or resolve the ticket; that unblocks the story.")
            if new is StoryStatus.in_progress and (missing := _unmet_dependencies(c.backlog, s)):
                raise InvalidInput("status", f"{s.id} depends on {', '.join(missing)}, not done yet.")
            c.transition()
            c.note(s.id, f"status {previous.value} -> {new.value}")
            set_story_status(c, s, new)
            return StoryChanged(**c.result_fields(), action="status", story=s, previous=previous.value,
                                cascade=c.cascade)

        return await self._change(project, "update_story", by, work)

    # -- sprints -------------------------------------------------------------------------------------------
    async def plan_sprint(self, project: str, stories: list[str] | None = None, goal: str = "",
                          capacity: int | None = None, by: str = "unknown") -> SprintView:
        """Plan the next sprint: the given stories, or an automatic pick (priority, then satisfied dependencies,
        then age) up to `capacity` points."""
        def work(c: Change) -> SprintView:
            c.check()
            b = c.backlog
            replanning = c.state is State.SPRINT_PLANNED
            if replanning:
                sprint = c.current_sprint()
                for sid in sprint.stories:
                    if (s := b.story(sid)) is not None:
                        s.sprint = None
            else:
                sprint = Sprint(id=sprint_id(_next_sprint_number(c.store)),
                                length_days=self.config.orchestrator.sprint_days)
            if capacity is not None and capacity < 1:
                raise InvalidInput("capacity", "must be at least 1 point.")
            chosen = _explicit_pick(b, stories, sprint.id) if stories else _auto_pick(b, capacity or DEFAULT_CAPACITY)
            if not chosen:
                raise InvalidInput("stories", "there is no story ready to plan (todo, not in a sprint, dependencies met).",
                                   "Add stories with `backlog add_story`.")
            sprint.goal = _validated(lambda: Sprint(id=sprint.id, goal=" ".join((goal or "").split()))).goal
            sprint.stories = [s.id for s in chosen]
            sprint.capacity = capacity
            for s in chosen:
                s.sprint = sprint.id
                s.updated_at = utcnow()
            c.touch_backlog()
            c.save_sprint(sprint)
            c.set_current_sprint(sprint.id)
            c.transition()
            points = sum(s.points or 0 for s in chosen)
            c.note(f"{sprint.id}, {', '.join(sprint.stories)}",
                   f"{'re-plan' if replanning else 'plan'} {sprint.id} with {len(chosen)} stories, {points} points")
            return _sprint_view(c, sprint)

        return await self._change(project, "plan", by, work)

    async def start_sprint(self, project: str, by: str = "unknown") -> SprintView:
        def work(c: Change) -> SprintView:
            c.check()
            sprint = c.current_sprint()
            sprint.status = SprintStatus.active
            sprint.started_at = utcnow()
            c.save_sprint(sprint)
            c.transition()
            c.note(sprint.id, f"start {sprint.id}")
            _settle_sprint(c, sprint)  # its stories may all be blocked (or done) already
            return _sprint_view(c, sprint)

        return await self._change(project, "start", by, work)

    async def pause_sprint(self, project: str, by: str = "unknown") -> SprintView:
        return await self._sprint_step(project, "pause", SprintStatus.paused, by)

    async def resume_sprint(self, project: str, by: str = "unknown") -> SprintView:
        return await self._sprint_step(project, "resume", SprintStatus.active, by)

    async def review_sprint(self, project: str, by: str = "unknown") -> SprintView:
        """End the sprint (early, or when the orchestrator has not done it already) and open its review."""
        return await self._sprint_step(project, "review", SprintStatus.review, by)

    async def _sprint_step(self, project: str, command: str, new_status: SprintStatus, by: str) -> SprintView:
        def work(c: Change) -> SprintView:
            c.check()
            sprint = c.current_sprint()
            sprint.status = new_status
            if new_status is SprintStatus.review:
                sprint.ended_at = utcnow()
            c.save_sprint(sprint)
            c.transition()
            c.note(sprint.id, f"{command} {sprint.id}")
            if command == "resume":
                _settle_sprint(c, sprint)  # stories may have been finished or blocked during the pause
            return _sprint_view(c, sprint)

        return await self._change(project, command, by, work)

    async def feedback(self, project: str, text: str, by: str = "unknown",
                       changes_requested: bool = False) -> SprintView:
        """Close the review: store the retrospective; unfinished stories go back to the backlog.
        With changes_requested the project returns to BACKLOG_READY instead of IDLE."""
        command = "request_changes" if changes_requested else "feedback"

        def work(c: Change) -> SprintView:
            c.check()
            text_clean = (text or "").strip()
            if not text_clean:
                raise InvalidInput("text", "the feedback is empty.", "Say what went well and what to change.")
            sprint = c.current_sprint()
            sprint.retrospective = _validated(lambda: Retrospective(text=text_clean, by=by,
                                                                    changes_requested=changes_requested))
            sprint.status = SprintStatus.closed
            sprint.ended_at = sprint.ended_at or utcnow()
            returned = []
            for sid in sprint.stories:
                s = c.backlog.story(sid)
                if s is not None and s.status is not StoryStatus.done:
                    s.sprint = None
                    if s.status is StoryStatus.in_progress:
                        s.status = StoryStatus.todo
                    returned.append(s.id)
            c.touch_backlog()
            c.save_sprint(sprint)
            c.set_current_sprint(None)
            c.transition()
            back = f"; {', '.join(returned)} back to the backlog" if returned else ""
            c.note(sprint.id, f"close {sprint.id} with {'changes requested' if changes_requested else 'feedback'}{back}")
            return _sprint_view(c, sprint)

        return await self._change(project, command, by, work)

    async def sprint_status(self, project: str) -> SprintView:
        """The current sprint, or else the latest one."""
        def work(c: Change) -> SprintView:
            ident = c.status.current_sprint or (c.store.sprint_ids() or [None])[-1]
            if ident is None:
                raise NotFound("sprint", "yet", sm.NEXT_STEP[c.state])
            return _sprint_view(c, c.sprint(ident))

        return await self._read(project, work)

    async def state(self, project: str) -> StateView:
        def work(c: Change) -> StateView:
            b = c.store.backlog()
            counts = {s.value: 0 for s in StoryStatus}
            for s in b.stories:
                counts[s.status.value] += 1
            blocked = []
            if c.status.current_sprint:
                blocked = [s.id for s in b.stories if s.sprint == c.status.current_sprint and s.status.is_blocked]
            return StateView(**c.result_fields(), current_sprint=c.status.current_sprint, epics=len(b.epics),
                             stories_by_status=counts, blocked_in_sprint=blocked, history=c.status.history[-10:])

        return await self._read(project, work)

    # -- health ----------------------------------------------------------------------------------------------
    async def health(self) -> Health:
        reports = [await asyncio.to_thread(self._project_health, e) for e in self.registry.all()]
        return Health(ok=all(r.ok for r in reports), projects=reports)

    def _project_health(self, entry: ProjectEntry) -> ProjectHealth:
        problems: list[str] = []
        state = None
        transitions = 0
        try:
            _check_repo_present(entry)
            store = ProjectStore(entry.path)
            store.validate_all()
            status = store.status()
            state = status.state
            since = utcnow() - TRANSITION_WINDOW
            transitions = sum(1 for t in status.history if t.at >= since)  # the design's transition frequency
            problems += consistency.problems(store)
            repo = git.Repo(entry.path)
            try:
                if why := why_commit_waits(repo):
                    problems.append(f"commits wait: {why}")
            finally:
                repo.close()
        except (OrchError, git.GitError, OSError) as exc:
            problems.append(str(exc))
        return ProjectHealth(name=entry.name, path=entry.path, ok=not problems, state=state, problems=problems,
                             pending_commit_lines=self.git.pending_lines(entry.path),
                             last_commit=self.git.last_outcome.get(entry.path), transitions_last_7_days=transitions)


# -- rules shared by several commands -------------------------------------------------------------------------

def _ignored_by_git(repo: git.Repo, rel: str) -> bool:
    try:
        repo.git.check_ignore("--quiet", "--no-index", rel)
    except git.GitCommandError:  # exit 1: not ignored
        return False
    return True


def _check_repo_present(entry: ProjectEntry) -> None:
    if not (entry.path / ".git").exists():
        raise OrchError(f"The repository of {entry.name} is no longer at {entry.path}.",
                        "Move it back, or unregister the project and register it where it is now.")


def set_story_status(c: Change, story: Story, new: StoryStatus) -> None:
    """Change a story's status and everything that follows from it: dependants that become ready, the
    sprint's burndown, BLOCKED in and out, and the automatic review when every story is done."""
    story.status = new
    story.updated_at = utcnow()
    c.touch_backlog()
    if new is StoryStatus.done:
        c.cascade.stories_ready += [
            o.id for o in c.backlog.stories
            if story.id in o.depends_on and o.status is StoryStatus.todo and not _unmet_dependencies(c.backlog, o)
        ]
        close_tickets_of_done_story(c, story)  # tickets that still asked about it are no longer needed
    if not (story.sprint and story.sprint == c.status.current_sprint):
        return
    sprint = c.current_sprint()
    if sprint.status is SprintStatus.active:
        _settle_sprint(c, sprint)


def _settle_sprint(c: Change, sprint: Sprint) -> None:
    """What an active sprint's stories imply: its burndown, the automatic review once every story is done,
    and BLOCKED in and out."""
    _record_burndown(c, sprint)
    members = [c.backlog.story(i) for i in sprint.stories]
    if members and all(s is None or s.status is StoryStatus.done for s in members):
        if c.state is State.BLOCKED:
            c.transition("unblock", by="orchestrator")
        sprint.status = SprintStatus.review
        sprint.ended_at = utcnow()
        c.save_sprint(sprint)
        c.transition("review", by="orchestrator")
        c.cascade.sprint_to_review = True
        c.lines.append(f"orch({sprint.id}): every story is done; {sprint.id} moves to review")
        return
    _update_blocked_state(c, sprint)


def _update_blocked_state(c: Change, sprint: Sprint) -> None:
    """BLOCKED while every unfinished story of the active sprint is blocked; back to SPRINT_ACTIVE otherwise."""
    open_stories = [s for i in sprint.stories if (s := c.backlog.story(i)) and s.status is not StoryStatus.done]
    all_blocked = bool(open_stories) and all(s.status.is_blocked for s in open_stories)
    if all_blocked and c.state is State.SPRINT_ACTIVE:
        c.transition("block", by="orchestrator")
    elif not all_blocked and c.state is State.BLOCKED:
        c.transition("unblock", by="orchestrator")


def _record_burndown(c: Change, sprint: Sprint) -> None:
    members = [s for i in sprint.stories if (s := c.backlog.story(i))]
    open_ = [s for s in members if s.status is not StoryStatus.done]
    point = BurndownPoint(day=utcnow().date(), remaining_points=sum(s.points or 0 for s in open_),
                          remaining_stories=len(open_))
    sprint.burndown = [p for p in sprint.burndown if p.day != point.day] + [point]
    c.save_sprint(sprint)


def _sprint_view(c: Change, sprint: Sprint) -> SprintView:
    backlog = c._backlog or c.store.backlog()
    stories = [s for i in sprint.stories if (s := backlog.story(i))]
    done = [s for s in stories if s.status is StoryStatus.done]
    days: list[date] = []
    elapsed = 0
    if sprint.started_at:
        first = sprint.started_at.date()
        through = (sprint.ended_at or utcnow()).date()  # UTC, like started_at and the burndown's days
        last = max(through, sprint.planned_end or through)
        days = [first + timedelta(d) for d in range((last - first).days + 1)]
        elapsed = (through - first).days + 1
    return SprintView(
        **c.result_fields(), sprint=sprint, stories=stories, done_stories=len(done), total_stories=len(stories),
        done_points=sum(s.points or 0 for s in done), total_points=sum(s.points or 0 for s in stories),
        blocked=[s.id for s in stories if s.status.is_blocked], burndown=sprint.burndown, days=days,
        elapsed_days=elapsed, cascade=c.cascade)


def _plannable(s: Story) -> bool:
    return s.sprint is None and s.status is StoryStatus.todo


def _auto_pick(b: Backlog, capacity: int) -> list[Story]:
    chosen: list[Story] = []
    used = 0
    picked: set[str] = set()
    progress = True
    ordered = sorted(b.stories, key=_queue_order)  # once: sorting on every pass cost 100 ms at 1,000 stories
    while progress:  # a story may become eligible once its dependency is picked
        progress = False
        for s in ordered:
            if s.id in picked or not _plannable(s) or _unmet_dependencies(b, s, picked):
                continue
            cost = s.points if s.points is not None else UNPOINTED
            if used + cost > capacity:
                continue
            chosen.append(s)
            picked.add(s.id)
            used += cost
            progress = True
            break
    return chosen


def _explicit_pick(b: Backlog, ids: list[str], sprint: str) -> list[Story]:
    chosen: list[Story] = []
    for raw in dict.fromkeys(i.strip().upper() for i in ids if i.strip()):
        s = b.story(raw)
        if s is None:
            raise InvalidInput("stories", f"there is no story {raw}.", _known("Stories", [x.id for x in b.stories][:20]))
        if s.status is StoryStatus.done:
            raise InvalidInput("stories", f"{s.id} is already done.")
        if s.sprint and s.sprint != sprint:
            raise InvalidInput("stories", f"{s.id} is already in {s.sprint}.")
        chosen.append(s)
    ids_chosen = {s.id for s in chosen}
    for s in chosen:
        if missing := _unmet_dependencies(b, s, ids_chosen):
            raise InvalidInput("stories", f"{s.id} depends on {', '.join(missing)}, neither done nor in this sprint.",
                               "Add those stories to the sprint too, or leave this one for later.")
    return chosen


def _next_sprint_number(store: ProjectStore) -> int:
    ids = store.sprint_ids()
    return int(ids[-1].split("-")[1]) + 1 if ids else 1


def _story(c: Change, ident: str) -> Story:
    s = c.backlog.story((ident or "").strip())
    if s is None:
        raise InvalidInput("story", f"there is no story {ident!r} in {c.name}.", "`backlog view` lists the stories.")
    return s


E = TypeVar("E", Priority, StoryStatus)


def _choice(kind: type[E], value: str | E, field_name: str) -> E:
    """Parse one of an enum's values, case-insensitively; anything else is an InvalidInput listing them."""
    try:
        return kind(value.lower() if isinstance(value, str) else value)
    except ValueError:
        raise InvalidInput(field_name, f"{value!r} is not a {field_name}.",
                           "Use one of: " + ", ".join(v.value for v in kind) + ".") from None


def _priority(value: str | Priority) -> Priority:
    return _choice(Priority, value, "priority")


def _status(value: str | StoryStatus) -> StoryStatus:
    return _choice(StoryStatus, value, "status")


def _validated(build: Callable[[], T]) -> T:
    """Run a model constructor; a validation error becomes an InvalidInput naming the field."""
    try:
        return build()
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field_name = ".".join(str(p) for p in err["loc"]) or "input"
        raise InvalidInput(field_name, err["msg"].removeprefix("Value error, ")) from None


def _known(kind: str, ids: list[str]) -> str:
    return f"{kind} here: {', '.join(ids)}." if ids else f"There are no {kind.lower()} yet."


def _slugify(name: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", name.lower())).strip("-")[:40] or "project"
