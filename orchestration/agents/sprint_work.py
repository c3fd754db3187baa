"""The rules of agent work on a project's state, run inside one unit of work (`Change`, under the project's locks):
which stories are ready for an agent, what starting an attempt records, and what an attempt's outcome does to
its story. The scheduler (scheduler.py) calls them through `Orchestrator.change`; they never run git or agents.

What an outcome does to its story (only while the story is still in progress: a person who moved it meanwhile
has the last word, and the attempt is only recorded):
- done: the story is done (its dependants become ready; the sprint goes to review when it was the last one).
- question: a ticket on the story, opened by the agent; the story waits for the answer, then runs again with
  the answer in its input.
- cancelled (pause) or interrupted (a restart): back to todo; not a failed attempt.
- anything else is a failed attempt: back to todo for the next one, whose input carries this one's error;
  after `max_attempts` of them the story is held by a ticket carrying the last error (and gets a fresh count
  once that ticket is answered). A merge conflict or a policy breach makes the next attempt start over on the
  current sprint branch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InvalidInput, OrchError
from ..gitlog import quote
from ..inputs import story_of
from ..models import State, SprintStatus, Story, StoryStatus, TEXT_MAX, utcnow
from ..queue import queue_order, unmet_dependencies
from ..sprint_rules import set_story_status
from ..store import read_state_file
from ..ticket_service import close_open_tickets, new_ticket, tickets_of
from ..tickets import QUESTION_MAX, TicketStatus
from . import protocol
from .records import (
    INTERRUPTED, OUTPUT_KEEP, RUNS_DIR, SUMMARY_KEEP, AttemptRecord, StoryRuns, attempt_id, kept, record_id, runs_of,
    runs_path, stored_ids,
)
from .runner import AttemptOutcome, Outcome

if TYPE_CHECKING:
    from ..unit_of_work import Change

AGENT = "agent"  # who opens an agent's tickets
PREVIOUS_KEEP = 3  # earlier attempts passed to the next one
CONTEXT_KEEP = 20_000  # characters of architecture.md / best-practices.md passed to an agent
# Outcomes after which the next attempt starts over on the current sprint branch, not on this attempt's work.
START_OVER = {Outcome.conflict.value, Outcome.policy.value}


def _save(c: Change, runs: StoryRuns) -> None:
    c.dirty[runs_path(runs.story)] = runs


def ready_stories(c: Change) -> list[str]:
    """The active sprint's stories an agent may take now: todo, dependencies done, not running; by priority, then
    age."""
    if c.status.state is not State.SPRINT_ACTIVE or not c.status.current_sprint:
        return []
    sprint = c.current_sprint()
    if sprint.status is not SprintStatus.active:
        return []
    ready = [s for i in sprint.stories if (s := c.story(i)) is not None and s.status is StoryStatus.todo
             and not unmet_dependencies(c, s)]
    return [s.id for s in sorted(ready, key=queue_order) if runs_of(c, s.id).running is None]


def begin_attempt(c: Change, story_id: str) -> tuple[StoryRuns, AttemptRecord, protocol.CodeInput] | None:
    """Record the start of the story's next attempt and move it to in_progress. None if it is not ready any more
    (a person moved it, the sprint was paused): then nothing changes."""
    if story_id not in ready_stories(c):
        return None
    sprint = c.current_sprint()
    story = c.edit_story(story_id)
    runs = runs_of(c, story_id)
    number = len(runs.attempts) + 1
    record = AttemptRecord(id=attempt_id(story_id, number), attempt=number, sprint=sprint.id,
                           branch=f"orch/{story_id}")
    runs.attempts.append(record)
    _save(c, runs)
    set_story_status(c, story, StoryStatus.in_progress)
    c.note(f"{story_id}, {sprint.id}", f"agent attempt {number} at {story_id} started")
    return runs, record, _input(c, story, runs, number, sprint.id)


def _input(c: Change, story: Story, runs: StoryRuns, number: int, sprint: str) -> protocol.CodeInput:
    epic = c.epic(story.epic)
    earlier = [a for a in runs.attempts[:-1] if a.outcome not in (None, Outcome.done.value)][-PREVIOUS_KEEP:]
    tf = c.store.tickets()
    answered = [t for t in (tf.tickets if tf else []) if t.story == story.id and t.status is TicketStatus.resolved]
    return protocol.CodeInput(
        project=c.name, sprint=sprint, attempt=number, workdir="", branch=f"orch/{story.id}",
        story=protocol.Story(id=story.id, title=story.title, description=story.description,
                             criteria=list(story.acceptance_criteria), points=story.points,
                             priority=story.priority.value,
                             epic=protocol.Epic(id=epic.id, title=epic.title) if epic else None),
        context=context_of(c),
        previous=[protocol.Previous(attempt=a.attempt, outcome=a.outcome or "", summary=a.summary, output=a.output)
                  for a in earlier],
        answers=[protocol.Answer(ticket=t.id, question=t.question, answer=t.resolution or "") for t in answered])


def context_of(c: Change) -> protocol.Context:
    """The notes every agent reads first (architecture.md, best-practices.md), read like every state file:
    never through a symlink."""
    def text(name: str) -> str:
        try:
            return read_state_file(c.store.root, name).decode("utf-8", "replace")[:CONTEXT_KEEP]
        except (OSError, OrchError):
            return ""

    return protocol.Context(architecture=text("architecture.md"), best_practices=text("best-practices.md"))


def apply_outcome(c: Change, outcome: AttemptOutcome, max_attempts: int) -> str | None:
    """Apply an attempt's outcome (idempotent: an outcome whose attempt is not the story's running one, a
    duplicate or a late delivery, changes nothing and gives None). Returns what became of the story: done,
    waiting (a ticket), retrying, blocked (a ticket after max_attempts) or stopped (cancelled, interrupted), or
    recorded (a person moved the story meanwhile)."""
    runs = runs_of(c, outcome.story)
    record = runs.running
    if record is None or record.id != record_id(outcome.attempt_id):
        return None
    kind = outcome.outcome
    record.outcome = kind.value
    record.ended_at = utcnow()
    record.summary = kept(outcome.summary, SUMMARY_KEEP)
    record.question = kept(outcome.question, QUESTION_MAX)
    record.tests_passed, record.tests_failed = outcome.tests_passed, outcome.tests_failed
    record.duration_s = outcome.duration_s
    record.commit = outcome.commit
    record.output = kept(outcome.output, OUTPUT_KEEP, "tail")
    record.counted = kind.counts_as_failure
    _save(c, runs)
    story = c.edit_story(outcome.story)
    ids = f"{outcome.story}, {record.sprint}"
    tests = _tests_text(record)
    if story is None or story.status is not StoryStatus.in_progress:
        c.note(ids, f"agent attempt {record.attempt}: {kind.value}{tests} (the story was moved meanwhile)")
        return "recorded"
    if kind is Outcome.done:
        runs.fresh = False
        c.note(ids, f"agent attempt {record.attempt}: done{tests}")
        set_story_status(c, story, StoryStatus.done)
        return "done"
    if kind is Outcome.cancelled:
        c.note(ids, f"agent attempt {record.attempt} stopped")
        set_story_status(c, story, StoryStatus.todo)
        return "stopped"
    set_story_status(c, story, StoryStatus.todo)  # a ticket then holds it from todo, where it returns
    if kind is Outcome.question:
        ticket = new_ticket(c, tickets_of(c), record.question or "The agent needs a decision.", story,
                            f"Asked by the agent in attempt {record.attempt} at {story.id}. {record.summary}",
                            list(outcome.options), AGENT)
        c.note(f"{ticket.id}, {ids}", f"agent attempt {record.attempt} asks {quote(ticket.question)}; "
                                      f"{story.id} waits for the answer")
        return "waiting"
    runs.failures += 1
    runs.fresh = runs.fresh or kind.value in START_OVER
    if runs.failures < max_attempts:
        c.note(ids, f"agent attempt {record.attempt} failed ({kind.value}{tests}); try "
                    f"{runs.failures + 1} of {max_attempts} next")
        return "retrying"
    runs.failures = 0  # the ticket's answer brings a fresh count
    question = (f"{story.id} failed {max_attempts} agent attempts in a row. How should it go on? (Answer here, "
                f"or `/story retry {story.id}` to try again as it is.)")
    context = f"Last error ({kind.value}{tests}): {record.summary}\n\n{record.output}"[:TEXT_MAX]
    ticket = new_ticket(c, tickets_of(c), question, story, context, [], AGENT)
    c.note(f"{ticket.id}, {ids}", f"agent attempt {record.attempt} failed ({kind.value}{tests}); {story.id} is "
                                  f"blocked after {max_attempts} failed attempts")
    return "blocked"


def close_interrupted(c: Change) -> list[str]:
    """Close the attempts a stopped process left running (their stories go back to todo, nothing counted).
    Called when agents start, by the one process that runs them. Returns their attempt IDs."""
    closed = []
    for story_id in stored_ids(c, RUNS_DIR, "S-*.json"):
        runs = runs_of(c, story_id)
        record = runs.running
        if record is None:
            continue
        record.outcome, record.ended_at = INTERRUPTED, utcnow()
        record.summary = "the process running this attempt stopped before it finished"
        _save(c, runs)
        story = c.edit_story(runs.story)
        if story is not None and story.status is StoryStatus.in_progress:
            set_story_status(c, story, StoryStatus.todo)
        c.note(f"{runs.story}, {record.sprint}", f"agent attempt {record.attempt} interrupted by a restart; "
                                                 f"{runs.story} runs again")
        closed.append(record.id)
    return closed


def retry(c: Change, story_id: str) -> tuple[Story, StoryStatus]:
    """`/story retry`: a blocked or failed story goes back to the agents with a fresh count of attempts; the
    tickets that held it are closed (it will be tried as it is)."""
    story = story_of(c, story_id)
    runs = runs_of(c, story.id)
    if runs.running is not None:
        raise InvalidInput("story", f"{story.id} is being worked on by an agent right now (attempt "
                                    f"{runs.running.attempt}).", "Wait for it, or `/sprint pause` first.")
    if story.status is StoryStatus.done:
        raise InvalidInput("story", f"{story.id} is done already.")
    if not story.status.is_blocked and not runs.failures:
        raise InvalidInput("story", f"{story.id} is neither blocked nor failed, so there is nothing to retry.",
                           "It runs when its turn comes.")
    close_open_tickets(c, story, f"{story.id} was retried by {c.by} as it is.")
    runs.failures = 0
    _save(c, runs)
    previous = story.status
    if previous is not StoryStatus.todo:
        set_story_status(c, story, StoryStatus.todo)
    c.note(story.id, f"retry {story.id} with a fresh count of agent attempts ({previous.value} -> todo)")
    return story, previous


def _tests_text(record: AttemptRecord) -> str:
    if record.tests_passed is None and record.tests_failed is None:
        return ""
    return f"; tests {record.tests_passed or 0} passed, {record.tests_failed or 0} failed"
