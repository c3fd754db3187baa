"""The orchestrator's API: one async method per command. Front-ends call these and render what they return.

Every mutating command follows one path (`_change`): take the project's asyncio lock, then (in a worker
thread) its file lock; load the state; ask the state machine; mutate; write every changed file atomically;
queue the git commit; return a typed result. A failure raises an OrchError and writes nothing.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import threading
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

from pydantic import ValidationError

from . import consistency, filelocks, history as git_history, restore, state_machine as sm
from .commands import CLI, DISCORD, signed
from .config import Config
from .wording import plural
from .errors import Busy, InvalidInput, NotFound, OrchError, ProjectExists, ProjectNotFound, StateLocked
from .events import Event, Events
from .gitlog import (
    GitFailed, GitLog, fix_for, head_commit, listed, quote, run_git, why_commit_waits, writes_blocked,
)
from .models import (
    SLUG, Epic, Priority, Retrospective, Sprint, SprintStatus, State, Story, StoryStatus, next_number, printable,
    sprint_id, utcnow,
)
from .inputs import (
    epic_of, invalid_input, line_of, priority_of, settable_status_of, slugify, status_of, story_of, validated,
)
from .queue import checked_dependencies, unmet_dependencies
from .registry import ProjectEntry, Registry, RegistryFile
from .results import (
    AgentRun, BacklogPage, EpicCreated, EpicEdited, EpicList, EpicSummary, FieldChange, Health, ProjectHealth,
    ProjectHistory, ProjectInfo, Registered, Restored, Result, SprintPlanned, SprintView, StateView, StoryChanged,
    StoryDetail, StoryEdited, StoryLog, StoryRef, TicketRef, Unregistered,
)
from .sprint_rules import (
    DEFAULT_CAPACITY, auto_pick, explicit_pick, return_to_backlog, set_story_status, settle_sprint, sprint_view,
)
from .store import (
    LOCK_NAME, LOCK_TIMEOUT_S, LOCK_TRY_S, STATE_DIR, ProjectStore, check_no_symlinks, create_from_templates,
    SavedBacklog, state_dir_of, symlinks_in,
)
from .ticket_service import TicketCommands, tickets_of, touch_tickets
from .unit_of_work import Change, Project

if TYPE_CHECKING:  # the agents' modules are imported when first used: most CLI commands never need them
    from .agents.planner import Planner
    from .agents.planning import PlanView
    from .agents.runner import RunningAttempt
    from .agents.scheduler import AgentScheduler

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE_SIZE = 10
STORY_HISTORY = 10  # commits shown with a story
HISTORY_PAGE = 10  # commits a page of a project's history
STORY_EDITABLE = ("title", "description", "points", "epic", "acceptance_criteria")
READ_TRIES = 3  # a read that a write overlapped is done again; after this many, under the file lock
TRANSITION_WINDOW = timedelta(days=7)  # health counts the state changes of this window (transitions_last_7_days)
REGISTER_GIT_TIMEOUT_S = 10  # registration's git checks: a git that hangs (a .gitignore that is a named pipe) is killed


class Orchestrator(TicketCommands):
    def __init__(self, config: Config, front_end: str = DISCORD) -> None:
        """`front_end` (commands.DISCORD or commands.CLI) is where this process's commands come from: their
        commit lines say so, in that front-end's names."""
        self.config = config
        self.front_end = front_end
        o = config.orchestrator
        self.registry = Registry(o.data_dir)
        self.events = Events()
        self.git = GitLog(o.author_name, o.author_email, o.commit_batch_ms, stale_lock_s=o.stale_lock_s,
                          on_event=self._git_event)
        self._projects: dict[str, Project] = {}
        self._projects_lock = threading.Lock()  # project() runs in worker threads
        self._registry_lock = asyncio.Lock()

    # Made on first use, so that a command that runs no agent never imports them (the CLI starts faster).
    @cached_property
    def agents(self) -> AgentScheduler:
        """Runs stories once started: `await orchestrator.agents.start()`."""
        from .agents.scheduler import AgentScheduler
        return AgentScheduler(self)

    @cached_property
    def planner(self) -> Planner:
        """Runs the planners this process started (and, with the agents, the rest)."""
        from .agents.planner import Planner
        return Planner(self)

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """Be told of events (commits stuck or resumed, ...): see orchestration/events.py."""
        self.events.subscribe(callback)

    def _git_event(self, root: Path, kind: str, text: str) -> None:
        name = next((p.entry.name for p in self._projects.values() if p.entry.path == root), None)
        if name is None:
            entry = self.registry.by_path(root)
            name = entry.name if entry else None
        if name is not None:  # an unregistered repo's commits concern no channel
            # Events reach a project's channel; the server's paths are for admins (health), so they go.
            self.events.publish(Event(project=name, kind=kind, text=text.replace(str(root), "<repo>")))

    # -- life cycle ----------------------------------------------------------------------------------------
    async def start(self) -> dict[str, str]:
        """Commit what a crash left uncommitted in every registered project. Returns project -> outcome."""
        outcomes = {}
        for entry in await self.project_entries():
            try:
                outcomes[entry.name] = await self.git.recover(entry.path)
            except Exception as exc:  # a broken project must not keep the others from starting
                outcomes[entry.name] = f"failed: {exc}"
                log.warning("start-up recovery of %s failed: %s", entry.name, exc)
        return outcomes

    def _made(self, part: str) -> AgentScheduler | Planner | None:
        """`agents` or `planner` if this process made it (see them), else None: asking must not make it."""
        return self.__dict__.get(part)

    async def close(self) -> None:
        for part in (self._made("agents"), self._made("planner")):
            if part is not None:
                await part.close()
        await self.git.close()
        with self._projects_lock:
            for project in self._projects.values():
                sm.forget_model(project.model)
            self._projects.clear()

    async def flush(self) -> None:
        """Commit everything queued now (tests and shutdown)."""
        await self.git.flush()

    # -- projects ------------------------------------------------------------------------------------------
    # The public methods that read the registry or a project's files are async and do that in a worker thread,
    # so no front-end can block its event loop with them (the synchronous `project()` is for worker threads).
    def project(self, name: str) -> Project:
        """The registered project `name` as it runs here (reads files: call it in a worker thread)."""
        entry = self.registry.get(name)
        if entry is None:
            raise ProjectNotFound(name)
        _check_repo_present(entry)
        project = self._projects.get(name)
        if project is None or project.entry.path != entry.path:  # first use, or re-registered elsewhere
            store = ProjectStore(entry.path)
            state = store.status().state  # read before the lock, which the event loop takes too (briefly)
            with self._projects_lock:  # one Project (so one asyncio lock) per name, whichever thread is first
                project = self._projects.get(name)
                if project is None or project.entry.path != entry.path:
                    if project is not None:
                        sm.forget_model(project.model)
                    project = Project(entry, store, sm.new_model(name, state))
                    self._projects[name] = project
        project.entry = entry
        return project

    async def project_entries(self, guild_id: int | None = None) -> list[ProjectEntry]:
        """The registered projects (of Discord server `guild_id`, if given: see ProjectEntry.seen_from): names,
        paths, channels (the registry alone, no project's files)."""
        return await asyncio.to_thread(self.registry.all, guild_id)

    async def project_for_channel(self, channel_id: int, guild_id: int) -> ProjectEntry | None:
        return await asyncio.to_thread(self.registry.by_channel, channel_id, guild_id)

    async def list_projects(self, guild_id: int | None = None) -> list[ProjectInfo]:
        """The registered projects (of Discord server `guild_id`, if given) with their states (reads every
        project's status.json)."""
        return await asyncio.to_thread(self._list_projects, guild_id)

    def _list_projects(self, guild_id: int | None) -> list[ProjectInfo]:
        infos = []
        for entry in self.registry.all(guild_id):
            try:
                state = ProjectStore(entry.path).status().state
            except Exception:  # whatever is wrong with one project is shown by its health, not here
                state = None
            infos.append(ProjectInfo(**entry.model_dump(exclude={"created_by"}), state=state))
        return infos

    async def check_registration(self, path: str, name: str | None = None,
                                 guild_id: int | None = None) -> tuple[Path, str]:
        """Validate a registration (from Discord server `guild_id`, or the CLI) without changing anything.
        Returns (resolved path, name)."""
        return await asyncio.to_thread(self._check_registration, path, name, guild_id)  # runs git

    def _check_registration(self, path: str, name: str | None, guild_id: int | None) -> tuple[Path, str]:
        raw = Path(line_of("path", path)).expanduser()
        if not str(path).strip():
            raise InvalidInput("path", "is empty")
        if not raw.exists():
            where = " on the bot's machine" if self.front_end == DISCORD else ""  # in a terminal: this one
            raise InvalidInput("path", f"{path} does not exist{where}.")
        resolved = raw.resolve()
        roots = self.config.orchestrator.allowed_roots
        if not any(resolved == r or r in resolved.parents for r in roots):
            shown = ", ".join(str(r) for r in roots) or "none configured"
            hint = "Ask an admin to add its folder to `allowed_roots` in the config."
            if self.front_end == CLI:  # the user is the admin here: say which file to change, or that none was read
                hint = self.config.where_to_set("allowed_roots")
            raise InvalidInput("path", f"{resolved} is outside the allowed roots ({shown}).", hint)
        if not resolved.is_dir():
            raise InvalidInput("path", f"{resolved} is not a folder.")
        _check_git_works_in(resolved)
        state_dir_of(resolved)  # refuses a symlinked .orch-state
        check_no_symlinks(resolved)  # and one holding a symlink (a committed one survives a clone)
        if _ignored_by_git(resolved, f"{STATE_DIR}/status.json"):
            raise InvalidInput("path", f"the repository's ignore rules ignore {STATE_DIR}/, so its history "
                               "(the audit trail and undo) could not be committed.",
                               f"Remove the rule that ignores {STATE_DIR} (see `git check-ignore -v "
                               f"{STATE_DIR}/status.json`), then register again.")
        existing = self.registry.by_path(resolved)
        if existing:
            return resolved, _adopted_name(existing, name, guild_id)
        name = (name or slugify(resolved.name)).strip()
        if not SLUG.match(name):
            raise InvalidInput("name", f"{name!r} is not a valid project name.",
                               "Use 1 to 40 lowercase letters, digits and hyphens, starting with a letter or digit.")
        if self.registry.get(name):
            raise InvalidInput("name", f'"{name}" is already the name of another project.', "Choose another name.")
        return resolved, name

    async def register_project(self, path: str, name: str | None = None, by: str = "unknown",
                               guild_id: int | None = None, channel_id: int | None = None) -> Registered:
        line_of("by", by)
        async with self._registry_lock:
            resolved, name = await self.check_registration(path, name, guild_id)
            if await asyncio.to_thread(self.registry.by_path, resolved):  # a project of no server, adopted
                created, adopted = [], True  # by this one: its state is there
            else:
                created, adopted = await asyncio.to_thread(self._prepare_state, resolved, name, by)

            def add(data: RegistryFile) -> ProjectEntry:
                entry = next((p for p in data.projects if p.path == resolved), None)
                if entry is not None:  # checked again: another process may have registered or adopted it meanwhile
                    _adopted_name(entry, name, guild_id)
                    entry.guild_id, entry.channel_id = guild_id, channel_id
                elif any(p.name == name for p in data.projects):  # another process won
                    raise ProjectExists(name, str(resolved))
                else:
                    entry = ProjectEntry(name=name, path=resolved, guild_id=guild_id, channel_id=channel_id,
                                         created_by=by)
                    data.projects.append(entry)
                return entry

            entry = await self._edit_registry(add)
        self.git.commit_soon(resolved)
        renamed = None
        if adopted:  # registered before, maybe under another name: the files take this one
            renamed = await self._change(name, "register", by, _rename_files)
        project = await asyncio.to_thread(self.project, name)
        state = project.model.state
        return Registered(project=name, state=state, allowed=sm.allowed_commands(state), next_step=sm.NEXT_STEP[state],
                          info=ProjectInfo(**entry.model_dump(exclude={"created_by"}), state=state),
                          created_files=created, adopted=adopted, renamed_from=renamed)

    def _prepare_state(self, root: Path, name: str, by: str) -> tuple[list[str], bool]:
        """Adopt a valid existing .orch-state (never overwriting it) or create one from the templates."""
        state = state_dir_of(root)
        adopted, fresh = (state / "status.json").exists(), not state.exists()
        store = ProjectStore(root)
        store.validate_all(partial=True)  # before anything is created: a refusal changes nothing
        try:
            created = create_from_templates(root, name)
            store.validate_all()
            with store.locked():
                verb = "adopt existing" if adopted else "initialise"
                self.git.record(root, [signed(f"orch({name}): {verb} .orch-state for project {name}", "register",
                                              self.front_end, by)])
        except BaseException:
            if fresh:  # all of it is ours: a failed registration leaves nothing behind
                shutil.rmtree(state, ignore_errors=True)
            raise
        return created, adopted

    async def set_channel(self, name: str, guild_id: int | None, channel_id: int | None) -> ProjectEntry:
        def set_(data: RegistryFile) -> ProjectEntry:
            entry = _entry_named(data, name)
            entry.guild_id, entry.channel_id = guild_id, channel_id
            return entry

        async with self._registry_lock:
            return await self._edit_registry(set_)

    async def unregister_project(self, name: str, by: str = "unknown", guild_id: int | None = None) -> Unregistered:
        """Forget a project (one of Discord server `guild_id`'s, if given). Its repository and .orch-state stay."""
        def remove(data: RegistryFile) -> ProjectEntry:
            entry = _entry_named(data, name, guild_id)
            data.projects.remove(entry)
            return entry

        async with self._registry_lock:
            entry = await self._edit_registry(remove)
        await self.git.flush(entry.path)
        with self._projects_lock:
            project = self._projects.pop(name, None)
            if project:
                sm.forget_model(project.model)
        return Unregistered(name=name, path=entry.path, channel_id=entry.channel_id)

    async def _edit_registry(self, edit: Callable[[RegistryFile], T]) -> T:
        """Registry.edit() in a worker thread: it waits for a cross-process file lock (up to 10 s) and fsyncs."""
        def run() -> T:
            with self.registry.edit() as data:
                return edit(data)

        return await asyncio.to_thread(run)

    # -- the one path every change takes ---------------------------------------------------------------
    async def _change(self, name: str, command: str, by: str, work: Callable[[Change], T]) -> T:
        line_of("by", by)  # it goes into every commit line and history entry
        project = await asyncio.to_thread(self.project, name)
        async with project.lock:
            change, result = await _under_file_lock(project, self._run, project, command, by, work)
        self._changed(project)
        if isinstance(result, Result) and result.warning:
            log.warning("project=%s command=%s by=%s saved, but %s", name, command, by, result.warning)
        log.info("project=%s command=%s by=%s changes=%d state=%s", name, command, by, len(change.lines),
                 project.model.state.value)
        return result

    def _changed(self, project: Project) -> None:
        """After a change: its commit (the lines were recorded under the file lock), and the agents told, since a
        change may have made a story ready (a sprint started, a ticket answered)."""
        self.git.commit_soon(project.entry.path)
        if (agents := self._made("agents")) is not None:
            agents.kick()

    def _run(self, project: Project, command: str, by: str, work: Callable[[Change], T]) -> tuple[Change, T]:
        if why := writes_blocked(project.entry.path):
            raise Busy(f"{project.entry.name}'s repository is in the middle of {why}; nothing was changed.",
                       "Finish it (or abort it) in the repository, then try again.")
        with project.store.locked():  # held already by _under_file_lock, which waited for it on the loop
            change = Change(project, by, command, front_end=self.front_end)
            before = project.model.state
            try:
                result = work(change)
                warning = change.write()  # raises only if nothing was written
            except BaseException as exc:
                project.model.state = before
                if isinstance(exc, ValidationError):  # a value set on a model field (validate_assignment)
                    raise invalid_input(exc) from None
                raise
            # The change is made now. What fails from here is said beside the success, never as a failure: a
            # retry would make the change twice.
            try:
                self.git.record(project.entry.path, change.lines, paths=change.written)  # still under the lock
            except Exception as exc:
                log.error("project=%s command=%s: its commit message could not be queued: %s", project.entry.name,
                          command, exc)
                warning = warning or f"its commit message could not be queued ({exc}); the next start commits it"
            if warning and isinstance(result, Result):
                result.warning = warning
            return change, result

    # For the orchestrator's own packages (agents): one unit of work, or one read, as every command makes.
    async def change(self, name: str, command: str, by: str, work: Callable[[Change], T]) -> T:
        return await self._change(name, command, by, work)

    async def read(self, name: str, work: Callable[[Change], T]) -> T:
        return await self._read(name, work)

    async def entry(self, name: str) -> ProjectEntry:
        entry = await asyncio.to_thread(self.registry.get, name)
        if entry is None:
            raise ProjectNotFound(name)
        return entry

    async def _read(self, name: str, work: Callable[[Change], T]) -> T:
        """Reads take no lock (autocomplete answers while a command waits for the project): they see the last
        saved state, which writers never change in place."""
        project = await asyncio.to_thread(self.project, name)
        try:
            return await asyncio.to_thread(self._read_sync, project, work)
        except StateLocked:  # a write to finish first, or writes kept coming: wait for the lock, in turn
            return await _under_file_lock(project, self._read_sync, project, work)

    @staticmethod
    def _read_sync(project: Project, work: Callable[[Change], T]) -> T:
        for _ in range(READ_TRIES):
            project.store.settle()
            c = Change(project, "read", "read", writer=False)
            result = work(c)
            if c.unchanged():  # no write came in between: one saved state, not parts of two
                return result
        with project.store.locked(timeout=LOCK_TRY_S):  # writes keep coming: read between two of them
            return work(Change(project, "read", "read", writer=False))

    # -- backlog -------------------------------------------------------------------------------------------
    async def create_epic(self, project: str, title: str, description: str = "", by: str = "unknown") -> EpicCreated:
        def work(c: Change) -> EpicCreated:
            c.check()
            b = c.edit_head()
            number = next_number(b.next_epic, (e.id for e in b.epics))
            epic = validated(lambda: Epic(id=f"E-{number}", title=title, description=description or "",
                                          created_by=by))
            b.epics.append(epic)
            b.next_epic = number + 1
            c.transition()
            c.note(epic.id, f"create epic {quote(epic.title)}")
            return EpicCreated(**c.result_fields(), epic=epic)

        return await self._change(project, "epic", by, work)

    async def add_story(self, project: str, epic: str, title: str, description: str = "", points: int | None = None,
                        priority: str | Priority = Priority.medium, acceptance_criteria: list[str] | None = None,
                        depends_on: list[str] | None = None, by: str = "unknown") -> StoryChanged:
        def work(c: Change) -> StoryChanged:
            c.check()
            parent = epic_of(c, epic)
            number = c.new_story_number()
            deps = checked_dependencies(c, f"S-{number}", depends_on or [])
            story = validated(lambda: Story(
                id=f"S-{number}", epic=parent.id, title=title, description=description or "",
                points=points, priority=priority_of(priority), depends_on=deps,
                acceptance_criteria=[a.strip() for a in acceptance_criteria or [] if a.strip()], created_by=by))
            story = c.add_story(story)
            c.transition()
            c.note(f"{story.id}, {parent.id}", f"add story {quote(story.title)} [{story.priority.value}]")
            return StoryChanged(**c.result_fields(), action="added", story=story)

        return await self._change(project, "add_story", by, work)

    async def prioritize_story(self, project: str, story: str, priority: str | Priority,
                               by: str = "unknown") -> StoryChanged:
        def work(c: Change) -> StoryChanged:
            c.check()
            s = story_of(c, story)
            previous = s.priority.value
            s.priority = priority_of(priority)
            s.updated_at = utcnow()
            c.transition()
            c.note(s.id, f"priority {previous} -> {s.priority.value}")
            return StoryChanged(**c.result_fields(), action="reprioritized", story=s, previous=previous)

        return await self._change(project, "prioritize", by, work)

    async def remove_story(self, project: str, story: str, by: str = "unknown") -> StoryChanged:
        def work(c: Change) -> StoryChanged:
            c.check()
            s = story_of(c, story)
            dependants = [o.id for o in c.dependants(s.id)]
            if dependants:
                verb = "depends" if len(dependants) == 1 else "depend"
                raise InvalidInput("story", f"{', '.join(dependants)} {verb} on {s.id}.",
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
            c.remove_story(s.id)
            c.transition()
            c.note(s.id, f"remove story {quote(s.title)}")
            return StoryChanged(**c.result_fields(), action="removed", story=s)

        return await self._change(project, "remove_story", by, work)

    async def view_backlog(self, project: str, epic: str | None = None, status: str | None = None,
                           page: int = 1, per_page: int = PAGE_SIZE, nearest: bool = False) -> BacklogPage:
        """A page of the backlog (of one epic's stories, or of one status), in the queue's order. With `nearest`, a
        page that is no more (the backlog shrank since it was shown) gives the nearest one instead of an error."""
        if per_page < 1:
            raise InvalidInput("per_page", f"must be at least 1 (got {per_page}).")

        def work(c: Change) -> BacklogPage:
            page_ = page_of(c)
            if c.refresh(s.id for s in page_.stories):  # a story shown was edited by hand: its order may change
                page_ = page_of(c)
            return page_

        def page_of(c: Change) -> BacklogPage:
            saved = c.saved()
            parent = epic_of(c, epic) if epic else None
            wanted = status_of(status) if status else None
            if parent or wanted:  # a filter: one pass over the stories, in the queue's order
                matching = [s for s in saved.ordered() if (not parent or s.epic == parent.id)
                            and (wanted is None or s.status is wanted)]
                total = len(matching)
            else:  # the page alone, from the maintained order
                matching, total = saved.order, len(saved.stories)
            pages = max(1, -(-total // per_page))
            shown = min(max(page, 1), pages) if nearest else page
            if shown < 1 or shown > pages:
                raise InvalidInput("page", f"must be between 1 and {pages}.")
            chunk = matching[(shown - 1) * per_page: shown * per_page]
            if not (parent or wanted):
                chunk = [story for _, _, story in chunk]
            return BacklogPage(**c.result_fields(), epics=c.epics, stories=chunk, page=shown, pages=pages,
                               total=total, epic_filter=parent.id if parent else None, status_filter=status,
                               stamp=backlog_stamp(saved))

        return await self._read(project, work)

    # -- seeing and editing a story or an epic ---------------------------------------------------------------
    async def story_detail(self, project: str, story: str, history: int = STORY_HISTORY) -> StoryDetail:
        """A story with its epic, criteria, dependencies both ways, tickets, sprint, agent attempts and the latest
        `history` commits that name it."""
        from .agents.records import runs_of

        def work(c: Change) -> StoryDetail:
            s = story_of(c, story)
            ref = lambda o: StoryRef(id=o.id, title=o.title, status=o.status.value)  # noqa: E731
            runs = runs_of(c, s.id)
            sprint = c.store.sprint(s.sprint) if s.sprint else None
            return StoryDetail(
                **c.result_fields(), story=s, epic=c.epic(s.epic),
                depends_on=[ref(d) if d else StoryRef(id=i, title="(not in the backlog)", status="?")
                            for i in s.depends_on for d in [c.story(i)]],
                dependants=[ref(o) for o in c.dependants(s.id)],
                tickets=[TicketRef(id=t.id, status=t.status.value, question=t.question)
                         for t in tickets_of(c).tickets if t.story == s.id],
                sprint_status=sprint.status.value if sprint else None,
                attempts=len(runs.attempts), last_attempt=runs.last)

        detail = await self._read(project, work)
        if history > 0:
            entry = await self.entry(project)
            try:
                found = await asyncio.to_thread(git_history.entries, entry.path, history, 0, detail.story.id)
            except OrchError as exc:  # the story is shown all the same; its history is what failed
                detail.warning = exc.message
            else:
                detail.history = found
        return detail

    async def edit_story(self, project: str, story: str, by: str = "unknown", **fields: object) -> StoryEdited:
        """Change a story's title, description, points, epic or acceptance_criteria: only the fields given (points
        None: unpointed). An edit that changes nothing saves nothing and says so (no `changes`)."""
        if unknown := set(fields) - set(STORY_EDITABLE):
            raise TypeError(f"not editable: {', '.join(sorted(unknown))}")

        def work(c: Change) -> StoryEdited:
            s = story_of(c, story)
            wanted = dict(fields)
            if "epic" in wanted:
                wanted["epic"] = epic_of(c, str(wanted["epic"] or "")).id
            if "acceptance_criteria" in wanted:
                wanted["acceptance_criteria"] = [a.strip() for a in wanted["acceptance_criteria"] or [] if a.strip()]
            edited = validated(lambda: type(s).model_validate({**s.model_dump(), **wanted}))
            changes = _apply_changes(s, edited, STORY_EDITABLE)
            if changes:
                s.updated_at = utcnow()
                c.note(f"{s.id}, {edited.epic}" if "epic" in wanted else s.id,
                       "edit " + "; ".join(_change_text(x) for x in changes))
            return StoryEdited(**c.result_fields(), story=s, changes=changes)

        return await self._change(project, "edit_story", by, work)

    async def list_epics(self, project: str, epic: str | None = None) -> EpicList:
        """Every epic (or the one `epic` names) with its stories counted by status, and its points (all, and done)."""
        def work(c: Change) -> EpicList:
            epics = [epic_of(c, epic)] if epic is not None else c.epics
            summaries = {e.id: EpicSummary(epic=e, stories=0, by_status={}, points=0, done_points=0) for e in epics}
            for s in c.stories():
                if (e := summaries.get(s.epic)) is not None:
                    e.stories += 1
                    e.by_status[s.status.value] = e.by_status.get(s.status.value, 0) + 1
                    e.points += s.points or 0
                    e.done_points += (s.points or 0) if s.status is StoryStatus.done else 0
            return EpicList(**c.result_fields(), epics=list(summaries.values()))

        return await self._read(project, work)

    async def edit_epic(self, project: str, epic: str, title: str | None = None, description: str | None = None,
                        by: str = "unknown") -> EpicEdited:
        """Change an epic's title or description (only those given). Nothing changed: nothing saved, and said."""
        def work(c: Change) -> EpicEdited:
            e = c.edit_head().epic(epic_of(c, epic).id)  # a private copy to change
            wanted = {k: v for k, v in (("title", title), ("description", description)) if v is not None}
            edited = validated(lambda: Epic.model_validate({**e.model_dump(), **wanted}))
            changes = _apply_changes(e, edited, ("title", "description"))
            if changes:
                c.note(e.id, "edit epic " + "; ".join(_change_text(x) for x in changes))
            return EpicEdited(**c.result_fields(), epic=e, changes=changes)

        return await self._change(project, "edit_epic", by, work)

    # -- a project's history, and going back in it ---------------------------------------------------------
    async def project_history(self, project: str, page: int = 1, per_page: int = HISTORY_PAGE) -> ProjectHistory:
        """The project's latest changes (who, what, when) from git, newest first, `per_page` a page."""
        if page < 1 or not 1 <= per_page <= 100:
            raise InvalidInput("page", "must be 1 or more (and per_page 1 to 100).")
        entry = await self.entry(project)
        _check_repo_present(entry)
        found = await asyncio.to_thread(git_history.entries, entry.path, per_page + 1, (page - 1) * per_page)
        return ProjectHistory(project=project, entries=found[:per_page], page=page, has_more=len(found) > per_page)

    async def restore_project(self, project: str, commit: str, by: str = "unknown") -> Restored:
        """Bring .orch-state back to `commit`'s content as a new commit (history is never rewritten); the project's
        state machine takes the restored state. What is on disk is committed first, so nothing is lost. Refused
        while one of the project's stories is worked by an agent (pause the sprint first)."""
        line_of("by", by)
        p = await asyncio.to_thread(self.project, project)
        if running := self._running_here(project):
            raise Busy(f"an agent is working on {', '.join(a.story for a in running)}; nothing was restored.",
                       "Pause the sprint (`sprint pause` stops the agents), then restore.")
        async with p.lock:
            await self.git.recover(p.entry.path)  # what waits for a commit (a hand edit too) goes in first
            if waiting := await asyncio.to_thread(self.git.pending_lines, p.entry.path):
                raise Busy(f"{waiting} change(s) of {project} are not committed yet "
                           f"({self.git.last_outcome.get(p.entry.path)}); nothing was restored.",
                           "Once they are committed (`health` says why they wait), restore again.")
            change, result = await _under_file_lock(p, self._restore, p, commit, by)
        self._changed(p)
        log.info("project=%s command=restore by=%s commit=%s restored=%s state=%s", project, by, result.commit,
                 result.restored, result.state.value)
        return result

    def _restore(self, p: Project, commit: str, by: str) -> tuple[Change, Restored]:
        change, result = restore.restore(p, commit, by)
        self.git.record(p.entry.path, change.lines)  # under the file lock, like every change (see _run)
        return change, result

    # -- stories in a sprint ---------------------------------------------------------------------------
    async def update_story(self, project: str, story: str, status: str | StoryStatus,
                           by: str = "unknown") -> StoryChanged:
        """A person (or an agent) moves a story: todo, in_progress, done or blocked."""
        def work(c: Change) -> StoryChanged:
            c.check()
            new = settable_status_of(status)
            s = story_of(c, story)
            previous = s.status
            if previous is StoryStatus.blocked_awaiting_feedback and new is not StoryStatus.done:
                asked = [t.id for t in tickets_of(c).open_for_story(s.id)] or ["its ticket"]
                raise InvalidInput("status", f"{s.id} waits for an answer to {', '.join(asked)}.",
                                   f'A clear answer to it, or a decision (`ticket resolve {asked[0]} "..."`), '
                                   "unblocks the story.")
            if new is StoryStatus.in_progress and (missing := unmet_dependencies(c, s)):
                raise InvalidInput("status", f"{s.id} depends on {', '.join(missing)}, not done yet.")
            c.transition()
            c.note(s.id, f"status {previous.value} -> {new.value}")
            set_story_status(c, s, new)
            return StoryChanged(**c.result_fields(), action="status", story=s, previous=previous.value,
                                cascade=c.cascade)

        return await self._change(project, "update_story", by, work)

    # -- planning an epic (agents/planning.py holds the rules) ----------------------------------------------
    async def plan_epic(self, project: str, epic: str, feedback: str = "", by: str = "unknown", *,
                        run: bool = True) -> PlanView:
        """Ask the planner for a plan of the epic (a new version). With `run`, this process runs it now (the
        result comes as a "plan" event, or `wait_plan`); else the process that runs the agents takes it."""
        from .agents import planning
        return await self._plan(project, "plan_epic", by, lambda c: planning.request(c, epic, feedback), run)

    async def request_plan_changes(self, project: str, epic: str | None, feedback: str, by: str = "unknown", *,
                                   run: bool = True) -> PlanView:
        """Plan again with the feedback and the previous plan (epic None: the latest proposed plan); the old
        proposals are superseded."""
        from .agents import planning
        return await self._plan(project, "plan_changes", by,
                                lambda c: planning.request(c, epic, feedback, changes=True), run)

    async def _plan(self, project: str, command: str, by: str, work: Callable[[Change], PlanView],
                    run: bool) -> PlanView:
        if not self.planner.command(project):
            raise OrchError(f"No planner is configured for {project}.",
                            "Set [agents] planner_command (or command) in the config.")
        if run:
            await self.agents.runner.check()  # the agent queue is down: say so, and change nothing
        view = await self._change(project, command, by, work)
        if run:
            self.planner.launch(project, view.epic)
        return view

    async def wait_plan(self, project: str, epic: str) -> PlanView:
        """The epic's plan once this process's run of it (if any) has ended."""
        if (task := self.planner.task(project, epic)) is not None:
            await asyncio.wait([task])
        return await self.plan_view(project, epic)

    async def plan_view(self, project: str, epic: str | None = None) -> PlanView:
        """An epic's latest plan (None: the latest plan waiting for a decision)."""
        from .agents import planning
        return await self._read(project, lambda c: planning.view(c, epic))

    async def approve_plan(self, project: str, epic: str | None, items: str | list[str] = "all",  # planning.ALL
                           by: str = "unknown", version: int | None = None) -> PlanView:
        """Turn the chosen proposals (`all`, or keys like P-1) into stories in one change; the rest are rejected.
        With `version` (a button of a posted plan), that version must still be the epic's latest."""
        from .agents import planning
        return await self._change(project, "approve_plan", by, lambda c: planning.approve(c, epic, items, version))

    async def reject_plan(self, project: str, epic: str | None, by: str = "unknown",
                          version: int | None = None) -> PlanView:
        from .agents import planning
        return await self._change(project, "reject_plan", by, lambda c: planning.reject(c, epic, version))

    # -- sprints -------------------------------------------------------------------------------------------
    async def plan_sprint(self, project: str, stories: list[str] | None = None, goal: str | None = None,
                          capacity: int | None = None, by: str = "unknown") -> SprintPlanned:
        """Plan the next sprint: the given stories, or an automatic pick (priority, then satisfied dependencies,
        then age) up to `capacity` points. Again before the start, a re-plan: what is not given (None) is kept,
        including the stories when neither they nor a capacity are given; one that changes nothing writes
        nothing (the result says `unchanged`)."""
        if capacity is not None and capacity < 1:
            raise InvalidInput("capacity", "must be at least 1 point.")

        def work(c: Change) -> SprintPlanned:
            c.check()
            replanning = c.state is State.SPRINT_PLANNED
            if replanning:
                sprint = c.current_sprint()
            else:
                sprint = Sprint(id=sprint_id(next_number(1, c.store.sprint_ids())),
                                length_days=self.config.orchestrator.sprint_days)
            before, old_goal, old_capacity = list(sprint.stories), sprint.goal, sprint.capacity
            new_goal = sprint.goal if goal is None else _clean_goal(sprint.id, goal)
            new_capacity = sprint.capacity if capacity is None else capacity
            if stories:
                chosen = explicit_pick(c, stories, sprint.id)
            elif replanning and capacity is None:  # nothing asked of the stories: they stay
                chosen = [s for sid in before if (s := c.story(sid)) is not None]
            else:  # the sprint's own stories may be picked again
                chosen = auto_pick(c, capacity or DEFAULT_CAPACITY, sprint.id if replanning else None)
            if not chosen:
                raise InvalidInput("stories", "there is no story ready to plan (todo or in progress, in no sprint, "
                                   "dependencies met).",
                                   "Add stories with `backlog add_story`.")
            ids = [s.id for s in chosen]
            joined, left = [i for i in ids if i not in before], [i for i in before if i not in ids]
            if replanning and (ids, new_goal, new_capacity) == (before, old_goal, old_capacity):
                return SprintPlanned(**dict(sprint_view(c, sprint)), replanned=True, unchanged=True)
            sprint.goal, sprint.stories, sprint.capacity = new_goal, ids, new_capacity
            chosen = [c.edit_story(i) for i in ids]
            for s in chosen:
                if s.sprint != sprint.id:
                    s.sprint = sprint.id
                    s.updated_at = utcnow()
            for sid in left:  # left out of the new plan
                if (s := c.edit_story(sid)) is not None:
                    return_to_backlog(s)
            c.save_sprint(sprint)
            c.set_current_sprint(sprint.id)
            c.transition()
            size = f"{plural(len(chosen), 'story')}, {plural(sum(s.points or 0 for s in chosen), 'point')}"
            if replanning:
                what = [f"{', '.join(joined)} joined"] * bool(joined) + [f"{', '.join(left)} left"] * bool(left)
                if new_capacity != old_capacity:
                    what.append(f"capacity {new_capacity}")
                if new_goal != old_goal:
                    what.append(f"goal {quote(new_goal)}" if new_goal else f"goal {quote(old_goal)} dropped")
                c.note(f"{sprint.id}, {', '.join(ids)}", f"re-plan {sprint.id} with {size}"
                       + (f": {'; '.join(what)}" if what else ""))
            else:
                c.note(f"{sprint.id}, {', '.join(ids)}", f"plan {sprint.id} with {size}")
            return SprintPlanned(**dict(sprint_view(c, sprint)), replanned=replanning, joined=joined, left=left)

        return await self._change(project, "plan", by, work)

    async def start_sprint(self, project: str, by: str = "unknown") -> SprintView:
        await self.agents.check(project)  # the agent queue is down: say so, and change nothing

        def work(c: Change) -> SprintView:
            c.check()
            sprint = c.current_sprint()
            sprint.status = SprintStatus.active
            sprint.started_at = utcnow()
            sprint.base_commit = head_commit(c.project.entry.path)  # where the agents' sprint branch starts
            c.save_sprint(sprint)
            c.transition()
            c.note(sprint.id, f"start {sprint.id}")
            settle_sprint(c, sprint)  # its stories may all be blocked (or done) already
            return sprint_view(c, sprint)

        return await self._change(project, "start", by, work)

    async def pause_sprint(self, project: str, by: str = "unknown") -> SprintView:
        """Pause: no story is handed out, and running agents are stopped (their attempts count for nothing)."""
        view = await self._sprint_step(project, "pause", SprintStatus.paused, by)
        await self.agents.stop_project(project)
        return view

    async def resume_sprint(self, project: str, by: str = "unknown") -> SprintView:
        await self.agents.check(project)
        return await self._sprint_step(project, "resume", SprintStatus.active, by)

    async def review_sprint(self, project: str, by: str = "unknown") -> SprintView:
        """End the sprint (early, or when the orchestrator has not done it already) and open its review, naming
        the sprint branch the agents' work was merged into."""
        view = await self._sprint_step(project, "review", SprintStatus.review, by)
        await self.agents.stop_project(project)
        return await self._with_agent_work(project, view)

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
                settle_sprint(c, sprint)  # stories may have been finished or blocked during the pause
            return sprint_view(c, sprint)

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
            sprint.retrospective = validated(lambda: Retrospective(text=text_clean, by=by,
                                                                    changes_requested=changes_requested))
            sprint.status = SprintStatus.closed
            sprint.ended_at = sprint.ended_at or utcnow()
            returned = []
            for sid in sprint.stories:
                s = c.story(sid)
                if s is not None and s.status is not StoryStatus.done:
                    return_to_backlog(c.edit_story(sid))
                    returned.append(s.id)
            c.save_sprint(sprint)
            c.set_current_sprint(None)
            c.transition()
            back = f"; {', '.join(returned)} back to the backlog" if returned else ""
            c.note(sprint.id, f"close {sprint.id} with {'changes requested' if changes_requested else 'feedback'}{back}")
            return sprint_view(c, sprint)

        return await self._change(project, command, by, work)

    async def sprint_status(self, project: str) -> SprintView:
        """The current sprint, or else the latest one."""
        def work(c: Change) -> SprintView:
            ident = c.status.current_sprint or (c.store.sprint_ids() or [None])[-1]
            if ident is None:
                raise NotFound("sprint", "yet", sm.NEXT_STEP[c.state])
            return sprint_view(c, c.sprint(ident))

        return await self._with_agent_work(project, await self._read(project, work))

    async def _with_agent_work(self, project: str, view: SprintView) -> SprintView:
        """The view with the agents running on the project now (in this process), the latest attempt at each story
        (whichever process ran it), and the sprint branch with its commits."""
        from .agents.records import runs_of
        runs = [AgentRun(story=a.story, attempt=a.attempt, phase=a.phase, elapsed_s=round(a.elapsed_s, 1))
                for a in self._running_here(project)]
        latest = await self._read(project, lambda c: {s: r for s in view.sprint.stories
                                                      if (r := runs_of(c, s).last) is not None})
        branch, commits = None, []
        if view.sprint.base_commit:
            from .agents.worktree import sprint_log
            entry = await self.entry(project)
            branch, commits = await asyncio.to_thread(sprint_log, entry.path, view.sprint.id, view.sprint.base_commit)
        return view.model_copy(update={"agents": runs, "branch": branch, "commits": commits,
                                       "latest_attempts": latest})

    def _running_here(self, project: str) -> list[RunningAttempt]:
        """The agents working on the project in this process (none if it never made them: see `agents`)."""
        agents = self._made("agents")
        return agents.running(project) if agents is not None else []

    # -- agents --------------------------------------------------------------------------------------------
    async def retry_story(self, project: str, story: str, by: str = "unknown") -> StoryChanged:
        """A blocked or failed story goes back to the agents with a fresh count of attempts."""
        from .agents import sprint_work

        def work(c: Change) -> StoryChanged:
            s, previous = sprint_work.retry(c, story)
            return StoryChanged(**c.result_fields(), action="retried", story=s, previous=previous.value,
                                cascade=c.cascade)

        return await self._change(project, "retry", by, work)

    async def story_log(self, project: str, story: str, lines: int = 40) -> StoryLog:
        """A story's agent attempts and the tail of the latest one's output."""
        from .agents.records import runs_of
        from .agents.runner import attempt_log_path

        def work(c: Change) -> StoryLog:
            s = story_of(c, story)
            runs = runs_of(c, s.id)
            log_file, tail = None, ""
            if runs.last is not None:
                log_file = attempt_log_path(self.config.orchestrator.data_dir, c.name, s.id, runs.last.id)
                tail = _tail_of(log_file, lines)
            return StoryLog(project=c.name, story=s.id, attempts=runs.attempts, log_tail=tail, log_file=log_file)

        return await self._read(project, work)

    async def state(self, project: str) -> StateView:
        def work(c: Change) -> StateView:
            b = c.backlog
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
    async def health(self, guild_id: int | None = None) -> Health:
        """Every project's health, or (`guild_id`) that of the projects of that Discord server."""
        reports = [await asyncio.to_thread(self._project_health, e) for e in await self.project_entries(guild_id)]
        return Health(ok=all(r.ok for r in reports), projects=reports, runner=await self.agents.runner.status())

    def _project_health(self, entry: ProjectEntry) -> ProjectHealth:
        problems: list[str] = []
        warnings: list[str] = []
        state = None
        transitions = pending = 0
        try:
            _check_repo_present(entry)
            pending = self.git.pending_lines(entry.path)  # known even when a state file is damaged
            problems += [f"{link} is a symlink: the bot refuses to work on this project until it is replaced by "
                         "the real file or removed" for link in symlinks_in(entry.path)]
            store = ProjectStore(entry.path)
            store.validate_all()
            status = store.status()
            state = status.state
            if status.project != entry.name:  # a hand edit, or registered again before names were kept in step
                problems.append(f'its files name the project "{status.project}" (.orch-state/status.json), the '
                                f'registry "{entry.name}": unregister it and register it again as {entry.name} to '
                                "put that name in its files")
            since = utcnow() - TRANSITION_WINDOW
            transitions = sum(1 for t in status.history if t.at >= since)  # the design's transition frequency
            problems += consistency.problems(store)
            if trouble := self.git.trouble(entry.path):  # stuck: failed, refused, or waited too long
                problems.append(trouble)
            elif why := why_commit_waits(entry.path):
                problems.append(f"commits wait: {why}. Fix: {fix_for(entry.path, why)}")
            if edits := self.git.hand_edits(entry.path):
                warnings.append(f"uncommitted hand edits: {listed(edits, 10)}. The next change commits them "
                                f"first, in a commit of their own (`git -C {entry.path} status {STATE_DIR}` shows "
                                "them)")
        except (OrchError, GitFailed, OSError) as exc:
            problems.append(str(exc))
        except Exception as exc:  # whatever it is, it is this project's problem: the others are still reported
            log.exception("project=%s: unexpected error in its health check", entry.name)
            problems.append(f"unexpected {type(exc).__name__} while reading it: {exc}")
        return ProjectHealth(name=entry.name, path=entry.path, ok=not problems, state=state, problems=problems,
                             warnings=warnings, pending_commit_lines=pending,
                             last_commit=self.git.last_outcome.get(entry.path), transitions_last_7_days=transitions)


# -- rules shared by several commands -------------------------------------------------------------------------

def _rename_files(c: Change) -> str | None:
    """The project's name in its files (status.json, backlog.json, tickets.json) becomes the registered one.
    Returns the name status.json had, if another."""
    old = c.status.project
    if old != c.name:
        c.status.project = c.name
        c.dirty["status.json"] = c.status
        c.note(c.name, f"project {quote(old)} is registered as {quote(c.name)} now; its files say so")
    if c.saved().head.project != c.name:  # read first: a writer's head copy is written (and migrates old files)
        c.edit_head().project = c.name
    if (tickets := c.tickets()) is not None and tickets.project != c.name:
        tickets.project = c.name
        touch_tickets(c, tickets)
    return old if old != c.name else None


def _clean_goal(sprint: str, goal: str) -> str:
    return validated(lambda: Sprint(id=sprint, goal=" ".join(goal.split()))).goal


def backlog_stamp(saved: SavedBacklog) -> str:
    """6 hex digits that change with the saved backlog (backlog.json's bytes and the stories folder's signature,
    which every story written changes), without a pass over the stories: a pager button carries them in its
    custom_id (100 characters at most) to tell a stale page."""
    return hashlib.blake2b(saved.head_raw + repr(saved.dir_sig).encode(), digest_size=3).hexdigest()


def _apply_changes(old: Story | Epic, new: Story | Epic, names: tuple[str, ...]) -> list[FieldChange]:
    """Set on `old` the fields of `names` that differ in `new`; returns them, with their values as a person reads
    them."""
    def shown(value: object) -> str:
        if isinstance(value, list):
            return "\n".join(f"- {v}" for v in value)
        return "none" if value is None else str(value)

    changes = [FieldChange(field=n, before=shown(getattr(old, n)), after=shown(getattr(new, n)))
               for n in names if getattr(old, n) != getattr(new, n)]
    for change in changes:
        setattr(old, change.field, getattr(new, change.field))
    return changes


def _change_text(c: FieldChange) -> str:
    """One change in a commit line: short values in full, long texts by name."""
    if c.field in ("description", "acceptance_criteria"):
        return c.field.replace("_", " ")
    if c.field == "title":
        return f"title {quote(c.before, 40)} -> {quote(c.after, 40)}"
    return f"{c.field} {c.before} -> {c.after}"


async def _under_file_lock(project: Project, fn: Callable[..., T], *args: object) -> T:
    """Take the project's file lock on the event loop (a blocking wait, in turn with this process's other
    waiters, up to LOCK_TIMEOUT_S), then run `fn` in a worker thread, which holds it too (filelocks: the context
    is the holder). A held lock thus never keeps one of the worker threads that every project's commands share."""
    try:
        async with filelocks.hold_async(project.store.root / STATE_DIR / LOCK_NAME, LOCK_TIMEOUT_S):
            return await asyncio.to_thread(fn, *args)
    except filelocks.Timeout:
        raise StateLocked(f"Another process is changing {project.entry.name}'s state right now.",
                          "Try again in a few seconds.") from None


def _registration_git(root: Path, *args: str) -> tuple[int, str, str]:
    """A git check of registration, with a short time-out: a .gitignore that is a named pipe hangs git."""
    try:
        return run_git(root, *args, timeout=REGISTER_GIT_TIMEOUT_S, check=False)
    except GitFailed:
        raise InvalidInput("path", f"git did not answer within {REGISTER_GIT_TIMEOUT_S} s in {root}.",
                           "Look for a .gitignore, .git/info/exclude or git config file there that is not a "
                           "plain file (a named pipe, a device) and replace it.") from None


def _check_git_works_in(root: Path) -> None:
    """Refuse a folder git will not work in (with git's reason) and one that is not a work tree's top."""
    status, out, err = _registration_git(root, "rev-parse", "--is-bare-repository", "--show-prefix")
    reason = " ".join(err.split())[:300]
    if status != 0 and "not a git repository" in err:
        raise InvalidInput("path", f"{root} is not the top folder of a git repository.",
                           "Run `git init` there first, or give the repository's top folder.")
    if status != 0:
        raise InvalidInput("path", f"git refuses to work in {root}: {reason}", f"Fix: {fix_for(root, reason)}.")
    bare, prefix = (out.splitlines() + ["", ""])[:2]
    if bare == "true":
        raise InvalidInput("path", f"{root} is a bare repository; it needs a work tree.")
    if prefix or not (root / ".git").exists():
        raise InvalidInput("path", f"{root} is not the top folder of its git repository.")


def _ignored_by_git(root: Path, rel: str) -> bool:
    status, _, err = _registration_git(root, "check-ignore", "--quiet", "--no-index", rel)
    if status not in (0, 1):  # 0: ignored, 1: not ignored, anything else: git could not tell
        raise InvalidInput("path", f"git could not check the ignore rules in {root}: {' '.join(err.split())[:300]}")
    return status == 0


def _adopted_name(existing: ProjectEntry, name: str | None, guild_id: int | None) -> str:
    """Registering a repository that is registered already: a Discord server adopts a project that belongs to
    no server (registered from the CLI), under that project's name. Anything else is refused, and a project of
    another server is not described at all."""
    if guild_id is None or existing.guild_id is not None:
        if existing.seen_from(guild_id):
            raise ProjectExists(existing.name, str(existing.path), existing.channel_id)
        raise ProjectExists(None)
    if name and name.strip() != existing.name:
        raise InvalidInput("name", f'this repository is registered as "{existing.name}" already, and keeps that name.',
                           "Leave the name out, or give that one.")
    return existing.name


def _entry_named(data: RegistryFile, name: str, guild_id: int | None = None) -> ProjectEntry:
    """The project `name` (if Discord server `guild_id` may see it: else it does not exist for that server)."""
    entry = next((p for p in data.projects if p.name == name and p.seen_from(guild_id)), None)
    if entry is None:
        raise ProjectNotFound(name)
    return entry


def _tail_of(path: Path, lines: int, max_bytes: int = 64 * 1024) -> str:
    """The last `lines` lines of a log file (read from its end only)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return printable("\n".join(text.splitlines()[-lines:])) if lines > 0 else ""


def _check_repo_present(entry: ProjectEntry) -> None:
    if not (entry.path / ".git").exists():
        raise OrchError(f"The repository of {entry.name} is no longer at {entry.path}.",
                        "Move it back, or unregister the project and register it where it is now.")


