"""What a person typed, checked: story IDs, choices, names and model fields. Each failure is an InvalidInput that
names the field and says what would do."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Iterable, TypeVar

from pydantic import ValidationError

from .errors import InvalidInput
from .models import POINTS_MAX, Epic, Priority, Story, StoryStatus, id_number, plain_text
from .wording import plural

if TYPE_CHECKING:
    from .unit_of_work import Change

T = TypeVar("T")

_WORD = re.compile(r"[\w-]+")  # a word of a title, as typed and as matched (IDs like S-12 are one word)
MATCHES_SHOWN = 10  # candidates named when words of a title match several


def id_list(*texts: str | None) -> list[str]:
    """IDs as people type them, separated by spaces, commas or semicolons, in one text or several:
    "S-1, S-2 S-3" -> ["S-1", "S-2", "S-3"]. Both front-ends read story lists with it."""
    return [part for text in texts for part in re.split(r"[\s,;]+", text or "") if part]


def criteria_list(text: str | None, semicolons: bool = True) -> list[str]:
    """Acceptance criteria as typed: one a line, and (a slash option has no line breaks) separated by semicolons,
    unless `semicolons` is False (a form's paragraph field, where a criterion may hold one). A "- " or "* " in
    front (a typed list) is not part of the criterion."""
    parts = (p.strip() for p in re.split(r"[\n;]" if semicolons else r"\n", text or ""))
    return [p.removeprefix("- ").removeprefix("* ").strip() for p in parts if p]


def points_of(text: str) -> int | None:
    """Points as typed in a text field: a whole number (the model checks its range), or nothing: not estimated."""
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise InvalidInput("points", f"{text!r} is not a number of points.",
                           f"Give 0 to {POINTS_MAX}, or leave it empty.")
    return int(text)


def holds_words(text: str, typed: str) -> bool:
    """Whether each word typed begins a word of `text`, case aside ("log pa" holds for "Login page", "2" not for
    "S-12"): how titles are found by lookup and autocomplete alike."""
    folded, wanted = text.casefold(), _WORD.findall(typed.casefold())
    if not all(t in folded for t in wanted):  # the cheap test first: most titles fail it
        return False
    words = _WORD.findall(folded)
    return all(any(w.startswith(t) for w in words) for t in wanted)


def titled(items: Iterable[T], typed: str) -> list[T]:
    """The stories or epics whose title `typed` names: the one(s) whose whole title it is (case and spacing aside),
    else those whose title holds every word of it. Kept small and apart so an index can back it later."""
    if not _WORD.search(typed):
        return []
    words = typed.casefold().split()
    hits = [i for i in items if holds_words(i.title, typed)]  # type: ignore[attr-defined]
    whole = [i for i in hits if i.title.casefold().split() == words]  # type: ignore[attr-defined]
    return whole or hits


def _one_titled(kind: str, items: list[T], typed: str, name: str, hint: str) -> T:
    """The one item whose title `typed` names; none or several is an InvalidInput naming the candidates."""
    found = sorted(titled(items, typed), key=lambda i: id_number(i.id))  # type: ignore[attr-defined]
    if len(found) == 1:
        return found[0]
    if not found:
        raise InvalidInput(kind, f"there is no {kind} {typed!r} in {name} (by ID or title).", hint)
    shown = "; ".join(f"{i.id} {i.title}" for i in found[:MATCHES_SHOWN])  # type: ignore[attr-defined]
    more = f"; and {len(found) - MATCHES_SHOWN} more" if len(found) > MATCHES_SHOWN else ""
    raise InvalidInput(kind, f"{typed!r} matches {plural(len(found), kind)}: {shown}{more}.",
                       "Give the ID, or more words of the title.")


def story_of(c: Change, ident: str, hint: str = "`backlog view` lists the stories.") -> Story:
    """The story `ident` names: its ID (always first), else words of its title that match exactly one story. A
    writer gets its private copy to change; a reader the shared one (never to change), as its file holds it now."""
    typed = (ident or "").strip()
    if not c.writer:
        c.refresh([typed.upper()])  # what is shown is what the file holds now
    found = c.edit_story(typed) if c.writer else c.story(typed)
    if found is None:
        found = _one_titled("story", c.stories(), typed, c.name, hint)
        if c.writer:
            found = c.edit_story(found.id)
    return found  # type: ignore[return-value]


def epic_of(c: Change, ident: str) -> Epic:
    """The epic `ident` names: its ID (always first), else words of its title that match exactly one epic (shared:
    to change it, take it from `c.edit_head()`)."""
    typed = (ident or "").strip()
    return c.epic(typed) or _one_titled("epic", c.epics, typed, c.name, known_ids("Epics", [e.id for e in c.epics]))


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
        "too_short": f"must have at least {plural(limit, 'item')}",
        "too_long": f"must have at most {plural(limit, 'item')}",
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
