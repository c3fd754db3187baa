"""What a person typed, checked: story IDs, choices, names and model fields. Each failure is an InvalidInput that
names the field and says what would do."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, TypeVar

from pydantic import ValidationError

from .errors import InvalidInput
from .models import Priority, Story, StoryStatus, plain_text

if TYPE_CHECKING:
    from .unit_of_work import Change

T = TypeVar("T")


def id_list(*texts: str | None) -> list[str]:
    """IDs as people type them, separated by spaces, commas or semicolons, in one text or several:
    "S-1, S-2 S-3" -> ["S-1", "S-2", "S-3"]. Both front-ends read story lists with it."""
    return [part for text in texts for part in re.split(r"[\s,;]+", text or "") if part]


def story_of(c: Change, ident: str) -> Story:
    """The story named, as a writer's private copy to change (a reader's: shared, never to change)."""
    ident = (ident or "").strip()
    if not c.writer:
        c.refresh([ident.upper()])  # what is shown is what the file holds now
    s = c.edit_story(ident) if c.writer else c.story(ident)
    if s is None:
        raise InvalidInput("story", f"there is no story {ident!r} in {c.name}.", "`backlog view` lists the stories.")
    return s


E = TypeVar("E", Priority, StoryStatus)


def choice_of(kind: type[E], value: str | E, field_name: str, allowed: tuple[E, ...] | None = None) -> E:
    """Parse one of an enum's values (or of `allowed`), case-insensitively; anything else is an InvalidInput
    listing the values that would do."""
    allowed = allowed or tuple(kind)
    try:
        parsed = kind(value.lower() if isinstance(value, str) else value)
    except ValueError:
        parsed = None
    if parsed not in allowed:
        raise InvalidInput(field_name, f"{value!r} is not a {field_name}.",
                           "Use one of: " + ", ".join(v.value for v in allowed) + ".")
    return parsed


def priority_of(value: str | Priority) -> Priority:
    return choice_of(Priority, value, "priority")


def status_of(value: str | StoryStatus) -> StoryStatus:
    return choice_of(StoryStatus, value, "status")


# What a person may set by hand; blocked_awaiting_feedback comes and goes with a ticket.
SETTABLE_STATUSES = (StoryStatus.todo, StoryStatus.in_progress, StoryStatus.done, StoryStatus.blocked)


def settable_status_of(value: str | StoryStatus) -> StoryStatus:
    if str(getattr(value, "value", value)).lower() == StoryStatus.blocked_awaiting_feedback.value:
        raise InvalidInput("status", "blocked_awaiting_feedback is set by opening a ticket.",
                           "Use one of: " + ", ".join(s.value for s in SETTABLE_STATUSES) + ".")
    return choice_of(StoryStatus, value, "status", SETTABLE_STATUSES)


def validated(build: Callable[[], T]) -> T:
    """Run a model constructor; a validation error becomes an InvalidInput naming the field."""
    try:
        return build()
    except ValidationError as exc:
        raise invalid_input(exc) from None


def invalid_input(exc: ValidationError) -> InvalidInput:
    err = exc.errors(include_url=False)[0]
    field_name = ".".join(str(p) for p in err["loc"]) or "input"
    return InvalidInput(field_name, err["msg"].removeprefix("Value error, "))


def line_of(field_name: str, value: str) -> str:
    """One line that is not a model field (who runs a command, a path), checked by the models' rule."""
    try:
        return plain_text(value, multi_line=False)
    except ValueError as exc:
        raise InvalidInput(field_name, str(exc)) from None


def known_ids(kind: str, ids: list[str]) -> str:
    return f"{kind} here: {', '.join(ids)}." if ids else f"There are no {kind.lower()} yet."


def slugify(name: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", name.lower())).strip("-")[:40] or "project"
