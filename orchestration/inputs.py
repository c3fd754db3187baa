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
    s = c.backlog.story((ident or "").strip())
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
    """The first problem pydantic found, said in our words ("points must be 0 or more"), never pydantic's."""
    err = exc.errors(include_url=False)[0]
    field_name = ".".join(str(p) for p in err["loc"]) or "input"
    return InvalidInput(field_name, pydantic_reason(err))


def pydantic_reason(err: dict) -> str:
    """What a pydantic error means, for a person: "must be 0 or more", "must be a whole number", ..."""
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "value_error":  # our own validators' sentences
        return str(ctx.get("error", err["msg"].removeprefix("Value error, ")))
    limit = next((ctx[k] for k in ("ge", "gt", "le", "lt", "min_length", "max_length") if k in ctx), None)
    reasons = {
        "greater_than_equal": f"must be {limit} or more",
        "greater_than": f"must be more than {limit}",
        "less_than_equal": f"must be {limit} or less",
        "less_than": f"must be less than {limit}",
        "string_too_short": "must not be empty" if limit == 1 else f"must be at least {limit} characters long",
        "string_too_long": f"must be at most {limit} characters long",
        "too_short": f"must have at least {limit} item{'s' if limit != 1 else ''}",
        "too_long": f"must have at most {limit} item{'s' if limit != 1 else ''}",
        "int_parsing": "must be a whole number", "int_type": "must be a whole number",
        "int_from_float": "must be a whole number", "float_parsing": "must be a number",
        "bool_parsing": "must be true or false", "string_type": "must be text", "missing": "is required",
        "extra_forbidden": "is not a known field", "enum": f"must be one of {ctx.get('expected', '')}",
        "literal_error": f"must be one of {ctx.get('expected', '')}",
        "datetime_parsing": "must be a date and time (2026-01-31T12:00:00Z)",
        "date_parsing": "must be a date (2026-01-31)", "string_pattern_mismatch": "has characters that are not allowed",
    }
    return reasons.get(kind, "is not valid")


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
