"""Consistency of a project's state across its files, as the design's health checks have it.

Each file validating against its model (store.validate_all) is not enough: a hand edit, or a restore of one file
from an older commit, can leave files that each parse but disagree (a story in a sprint that does not exist, a
state that does not match its sprint). `problems` lists such disagreements in words a person can act on; `/health`
and `orch health` show them. Commands never "repair" them silently.
"""
from __future__ import annotations

from .models import SprintStatus, State, StoryStatus, id_number
from .queue import dependency_problems
from .store import TEMPLATES, ProjectStore, read_state_file

# The sprint status each state implies for the current sprint (None: there is no current sprint).
SPRINT_STATUS_OF_STATE: dict[State, SprintStatus | None] = {
    State.IDLE: None,
    State.BACKLOG_READY: None,
    State.SPRINT_PLANNED: SprintStatus.planned,
    State.SPRINT_ACTIVE: SprintStatus.active,
    State.BLOCKED: SprintStatus.active,
    State.SPRINT_PAUSED: SprintStatus.paused,
    State.SPRINT_REVIEW: SprintStatus.review,
}


def problems(store: ProjectStore) -> list[str]:
    """Every disagreement between the project's files (the files themselves must validate first)."""
    backlog, status = store.saved_backlog(full=True).view(), store.status()  # every file as it is now
    found = dependency_problems(backlog)

    for kind, ids in (("epic", [e.id for e in backlog.epics]), ("story", [s.id for s in backlog.stories])):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        found += [f"{kind} ID {i} is used twice" for i in dupes]
    # next_story may be lower than a story's number: a new story's number is above every story file anyway
    # (the counter keeps the numbers of removed stories from being reused).
    highest_epic = max((id_number(e.id) for e in backlog.epics), default=0)
    if backlog.next_epic <= highest_epic:
        found.append(f"next_epic is {backlog.next_epic}, but E-{highest_epic} exists: a new epic would reuse an ID")

    epics = {e.id for e in backlog.epics}
    sprints = set(store.sprint_ids())
    for s in backlog.stories:
        if s.epic not in epics:
            found.append(f"{s.id} belongs to {s.epic}, which does not exist")
        if s.sprint and s.sprint not in sprints:
            found.append(f"{s.id} is in {s.sprint}, which has no file")

    expected = SPRINT_STATUS_OF_STATE[status.state]
    current = store.sprint(status.current_sprint) if status.current_sprint else None
    if status.current_sprint and current is None:
        found.append(f"status.json names {status.current_sprint} as current, which has no file")
    elif expected is None and current is not None:
        found.append(f"the state is {status.state.value}, yet {current.id} is still current")
    elif expected is not None and current is None:
        found.append(f"the state is {status.state.value}, but there is no current sprint")
    elif current is not None and current.status is not expected:
        found.append(f"the state is {status.state.value}, but {current.id} is {current.status.value}")
    if current is not None:
        for sid in current.stories:
            story = backlog.story(sid)
            if story is None:
                found.append(f"{current.id} lists {sid}, which is not in the backlog")
            elif story.sprint != current.id:
                found.append(f"{current.id} lists {sid}, but {sid} says it is in {story.sprint or 'no sprint'}")

    found += _unignored_working_files(store)

    tickets = store.tickets()
    for t in tickets.tickets if tickets else []:
        if not (t.story and t.is_open):
            continue  # an answered ticket is history, even once its story has been removed
        story = backlog.story(t.story)
        if story is None:
            found.append(f"{t.id} is about {t.story}, which is not in the backlog")
        elif story.status is not StoryStatus.blocked_awaiting_feedback:
            found.append(f"{t.id} is open, but {story.id} is {story.status.value}, not waiting for it")
    return found


def _unignored_working_files(store: ProjectStore) -> list[str]:
    """The bot's working files (lock, temp files, commit queue) must stay out of commits: .orch-state/.gitignore
    has to keep every pattern of the templates' .gitignore."""
    def patterns(text: str) -> set[str]:
        return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}

    try:
        ours = read_state_file(store.root, ".gitignore").decode("utf-8", "replace")
    except FileNotFoundError:
        ours = ""
    missing = sorted(patterns((TEMPLATES / ".gitignore").read_text(encoding="utf-8")) - patterns(ours))
    return [f".orch-state/.gitignore lacks {', '.join(missing)}: the bot's working files would be committed"] \
        if missing else []
