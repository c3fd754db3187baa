"""The work queue, as the design has it: which story is next, and which stories wait for which.

- A story is *ready* when it is `todo` and every story it depends on is `done`.
- The next story is the ready one with the highest priority; among equals, the oldest (IDs grow with age).
  While a sprint is under way the queue is that sprint's stories; otherwise it is the whole backlog.
- Finishing a story makes its dependants ready (sprint_rules.set_story_status reports them in the cascade).
- A dependency must name an existing story other than itself and must not close a cycle.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol

from pydantic import Field

from .errors import InvalidInput
from .inputs import story_of
from .models import Backlog, SprintStatus, Story, StoryStatus, utcnow
from .results import Result, StoryChanged
from .store import story_key

if TYPE_CHECKING:
    from .unit_of_work import Change


class Stories(Protocol):
    """Whatever finds a story by ID: a Change (its index) or a Backlog."""
    def story(self, ident: str) -> Story | None: ...


class _ById:
    def __init__(self, stories: Iterable[Story]) -> None:
        self.by_id = {s.id: s for s in stories}

    def story(self, ident: str) -> Story | None:
        return self.by_id.get(ident)


queue_order = story_key  # priority first, then age (IDs grow with age)


def unmet_dependencies(b: Stories, s: Story, also_done: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """The stories `s` depends on that are not done (nor counted as done through `also_done`)."""
    return [d for d in s.depends_on
            if d not in also_done and ((o := b.story(d)) is None or o.status is not StoryStatus.done)]


def is_ready(b: Stories, s: Story) -> bool:
    return s.status is StoryStatus.todo and not unmet_dependencies(b, s)


def ready_stories(b: Stories, stories: Iterable[Story]) -> list[Story]:
    """The ready stories among `stories`, next first."""
    return sorted((s for s in stories if is_ready(b, s)), key=queue_order)


def find_cycle(b: Stories, story: str, depends_on: list[str]) -> list[str] | None:
    """If `story` depending on `depends_on` closes a cycle, the cycle as a path (S-1, S-3, S-1); else None.
    Walks only what `depends_on` reaches."""
    path: list[str] = [story]
    seen: set[str] = set()

    def deps_of(node: str) -> list[str]:
        if node == story:
            return depends_on
        found = b.story(node)
        return found.depends_on if found is not None else []

    def visit(node: str) -> list[str] | None:
        for dep in deps_of(node):
            if dep == story:
                return path + [dep]
            if dep in seen:
                continue
            seen.add(dep)
            path.append(dep)
            if found := visit(dep):
                return found
            path.pop()
        return None

    return visit(story)


def dependency_problems(b: Backlog) -> list[str]:
    """Consistency check of the whole backlog: dependencies on missing stories, and cycles."""
    problems = []
    lookup = _ById(b.stories)
    for s in b.stories:
        problems += [f"{s.id} depends on {d}, which does not exist" for d in s.depends_on if d not in lookup.by_id]
        if (cycle := find_cycle(lookup, s.id, s.depends_on)) and min(cycle) == s.id:  # report each cycle once
            problems.append("dependency cycle: " + " -> ".join(cycle))
    return problems


class QueueView(Result):
    scope: str = Field(description="the sprint whose stories make the queue, or 'backlog'")
    next: Story | None
    ready: list[Story] = Field(default_factory=list, description="every ready story, next first")
    waiting: dict[str, list[str]] = Field(default_factory=dict, description="todo story -> stories it waits for")
    blocked: list[str] = Field(default_factory=list)
    in_progress: list[str] = Field(default_factory=list)


def queue_view(c: Change) -> QueueView:
    scope = "backlog"
    stories = [s for s in c.ordered() if s.status is not StoryStatus.done]
    if c.status.current_sprint:
        sprint = c.store.sprint(c.status.current_sprint)
        if sprint is not None and sprint.status in (SprintStatus.planned, SprintStatus.active, SprintStatus.paused):
            scope = sprint.id
            stories = sorted((s for i in sprint.stories if (s := c.story(i)) and s.status is not StoryStatus.done),
                             key=queue_order)
    ready = [s for s in stories if is_ready(c, s)]
    return QueueView(
        **c.result_fields(), scope=scope, next=ready[0] if ready else None, ready=ready,
        waiting={s.id: unmet for s in stories
                 if s.status is StoryStatus.todo and (unmet := unmet_dependencies(c, s))},
        blocked=[s.id for s in stories if s.status.is_blocked],
        in_progress=[s.id for s in stories if s.status is StoryStatus.in_progress])


def checked_dependencies(c: Change, story_id: str, depends_on: list[str]) -> list[str]:
    """The IDs `story_id` may depend on, cleaned: each an existing story other than itself, closing no cycle."""
    deps = list(dict.fromkeys(d.strip().upper() for d in depends_on if d and d.strip()))
    if not deps:
        return deps
    for dep in deps:
        if dep == story_id:
            raise InvalidInput("depends_on", f"{story_id} cannot depend on itself.")
        if c.story(dep) is None:
            raise InvalidInput("depends_on", f"there is no story {dep} in {c.name}.", "`backlog view` lists the stories.")
    if cycle := find_cycle(c, story_id, deps):
        raise InvalidInput("depends_on", f"that would make a cycle: {' -> '.join(cycle)}.",
                           "A story cannot wait, directly or through others, for itself. Drop one of those links.")
    return deps


def set_dependencies(c: Change, story: str, depends_on: list[str]) -> StoryChanged:
    s = story_of(c, story)
    deps = checked_dependencies(c, s.id, depends_on)
    previous = list(s.depends_on)
    was_waiting = bool(unmet_dependencies(c, s))
    s.depends_on = deps
    s.updated_at = utcnow()
    if was_waiting and is_ready(c, s):
        c.cascade.stories_ready.append(s.id)
    c.note(s.id, f"depends on {', '.join(deps) or 'nothing'} (was {', '.join(previous) or 'nothing'})")
    return StoryChanged(**c.result_fields(), action="dependencies", story=s, previous=", ".join(previous) or None,
                        cascade=c.cascade)
