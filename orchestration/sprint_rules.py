"""The rules of a sprint that several commands share: what a story's new status sets off (dependants ready,
burndown, automatic review, BLOCKED in and out), how stories are picked for a sprint, and the sprint's view."""
from __future__ import annotations

from datetime import date, timedelta

from .errors import InvalidInput
from .inputs import known_ids
from .models import BurndownPoint, Sprint, SprintStatus, State, Story, StoryStatus, utcnow
from .queue import unmet_dependencies
from .results import SprintView
from .ticket_service import close_tickets_of_done_story
from .unit_of_work import Change

DEFAULT_CAPACITY = 20  # points, when /sprint plan picks stories itself and no capacity is given
UNPOINTED = 1  # a story without points counts as 1 point towards capacity


def return_to_backlog(story: Story) -> None:
    """A story leaves its sprint unfinished (the sprint closed, or a re-plan left it out): work on it stops, so
    in_progress becomes todo; blocked stays blocked."""
    story.sprint = None
    if story.status is StoryStatus.in_progress:
        story.status = StoryStatus.todo
    story.updated_at = utcnow()


def set_story_status(c: Change, story: Story, new: StoryStatus) -> None:
    """Change a story's status (`story`: the writer's copy, from c.edit_story) and everything that follows
    from it: dependants that become ready, the sprint's burndown, BLOCKED in and out, and the automatic review
    when every story is done."""
    story.status = new
    story.updated_at = utcnow()
    if new is StoryStatus.done:
        c.cascade.stories_ready += [o.id for o in c.dependants(story.id)
                                    if o.status is StoryStatus.todo and not unmet_dependencies(c, o)]
        close_tickets_of_done_story(c, story)  # tickets that still asked about it are no longer needed
    if not (story.sprint and story.sprint == c.status.current_sprint):
        return
    sprint = c.current_sprint()
    if sprint.status is SprintStatus.active:
        settle_sprint(c, sprint)


def settle_sprint(c: Change, sprint: Sprint) -> None:
    """What an active sprint's stories imply: its burndown, the automatic review once every story is done,
    and BLOCKED in and out."""
    record_burndown(c, sprint)
    members = [c.story(i) for i in sprint.stories]
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
    open_stories = [s for i in sprint.stories if (s := c.story(i)) and s.status is not StoryStatus.done]
    all_blocked = bool(open_stories) and all(s.status.is_blocked for s in open_stories)
    if all_blocked and c.state is State.SPRINT_ACTIVE:
        c.transition("block", by="orchestrator")
    elif not all_blocked and c.state is State.BLOCKED:
        c.transition("unblock", by="orchestrator")


def record_burndown(c: Change, sprint: Sprint) -> None:
    members = [s for i in sprint.stories if (s := c.story(i))]
    open_ = [s for s in members if s.status is not StoryStatus.done]
    point = BurndownPoint(day=utcnow().date(), remaining_points=sum(s.points or 0 for s in open_),
                          remaining_stories=len(open_))
    sprint.burndown = [p for p in sprint.burndown if p.day != point.day] + [point]
    c.save_sprint(sprint)


def sprint_view(c: Change, sprint: Sprint) -> SprintView:
    stories = [s for i in sprint.stories if (s := c.story(i))]
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


PLANNABLE = (StoryStatus.todo, StoryStatus.in_progress)  # outside any sprint, and to be worked


def _cost(s: Story) -> int:
    return s.points if s.points is not None else UNPOINTED


def auto_pick(c: Change, capacity: int, replanned: str | None = None) -> list[Story]:
    """Stories for a sprint up to `capacity` points: each time the first one in the queue's order that fits and
    whose dependencies are done or picked (read only: the caller edits them). The stories of `replanned` (the
    sprint being planned again) count as outside any sprint. One pass over the maintained order; the stories
    passed over for their dependencies are looked at again after each pick (they come first: earlier in the
    order), and a story passed over because it did not fit never fits later (`used` only grows)."""
    chosen: list[Story] = []
    used = 0
    picked: set[str] = set()
    waiting: list[Story] = []

    def fits(s: Story) -> bool:
        return used + _cost(s) <= capacity

    def take(s: Story) -> None:
        nonlocal used
        chosen.append(s)
        picked.add(s.id)
        used += _cost(s)

    for s in c.ordered():
        if s.status not in PLANNABLE or (s.sprint is not None and s.sprint != replanned):
            continue
        if not fits(s):
            continue
        if unmet_dependencies(c, s, picked):
            waiting.append(s)
            continue
        take(s)
        while ready := next((w for w in waiting if fits(w) and not unmet_dependencies(c, w, picked)), None):
            waiting.remove(ready)
            take(ready)
    return chosen


def explicit_pick(c: Change, ids: list[str], sprint: str) -> list[Story]:
    chosen: list[Story] = []
    for raw in dict.fromkeys(i.strip().upper() for i in ids if i.strip()):
        s = c.story(raw)
        if s is None:
            shown = [x.id for _, x in zip(range(20), c.stories())]
            raise InvalidInput("stories", f"there is no story {raw}.", known_ids("Stories", shown))
        if s.status is StoryStatus.done:
            raise InvalidInput("stories", f"{s.id} is already done.")
        if s.sprint and s.sprint != sprint:
            raise InvalidInput("stories", f"{s.id} is already in {s.sprint}.")
        chosen.append(s)
    ids_chosen = {s.id for s in chosen}
    for s in chosen:
        if missing := unmet_dependencies(c, s, ids_chosen):
            raise InvalidInput("stories", f"{s.id} depends on {', '.join(missing)}, neither done nor in this sprint.",
                               "Add those stories to the sprint too, or leave this one for later.")
    return chosen
