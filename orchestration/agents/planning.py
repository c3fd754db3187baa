"""Planning an epic: a "plan" agent breaks it into proposed stories that people approve, reject or send back.

What lives where:
- `.orch-state/plans/E-<n>.json` (`PlanFile`): every version of the epic's plan, the latest last, each with its
  status and proposals; `.orch-state/plans/E-<n>.md`: the latest version as a person reads it. Both are written
  by the rules below, inside one unit of work (`Change`), so they are committed like any other change.
- A version's life: requested -> planning (a process claimed it) -> proposed, or waiting (its planner asked a
  question: a ticket on the epic; once no ticket of it is open, the version is requested again, with the
  answers in its input), or failed. Proposed -> approved (some or all proposals become stories, the rest are
  rejected) or rejected, or superseded by a new version (request changes).
- The rules here run inside a `Change` and never run git or processes; planner.py runs the planner (`claim`
  takes a requested plan for a run, `apply_outcome` records what came of it, once per run ID).
"""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Callable

from pydantic import BaseModel, Field

from ..errors import InvalidInput, NotFound
from ..gitlog import quote
from ..inputs import epic_of, id_list, validated
from ..wording import plural
from ..models import (
    CRITERIA_MAX, CRITERION_MAX, TEXT_MAX, Line, Model, Priority, Story, Text, VersionedFile, utcnow,
)
from ..results import Result
from ..ticket_service import new_ticket, tickets_of
from ..tickets import TicketStatus
from . import protocol
from .records import kept, stored_ids
from .runner import Outcome

if TYPE_CHECKING:
    from ..unit_of_work import Change

PLANS_DIR = "plans"
PLAN_KEEP = 20_000  # characters of a plan's markdown kept
PROPOSALS_MAX = 50
AGENT = "planner"  # who opens a planner's tickets
ALL = "all"


class PlanStatus(str, Enum):
    requested = "requested"
    planning = "planning"
    waiting = "waiting"  # for the answer to its planner's question (a ticket)
    proposed = "proposed"
    approved = "approved"
    rejected = "rejected"
    superseded = "superseded"
    failed = "failed"

    @property
    def in_progress(self) -> bool:
        return self in (PlanStatus.requested, PlanStatus.planning, PlanStatus.waiting)


class ProposalStatus(str, Enum):
    proposed = "proposed"
    approved = "approved"
    rejected = "rejected"
    superseded = "superseded"


class Proposal(Model):
    key: str = Field(pattern=r"^P-[0-9]{1,4}$")
    title: Text = Field(min_length=1, max_length=200)
    description: Text = Field("", max_length=TEXT_MAX)
    criteria: list[Text] = Field(default_factory=list)
    points: int | None = Field(None, ge=0, le=100)
    priority: Priority = Priority.medium
    phase: Text = Field("", max_length=200)
    depends_on: list[str] = Field(default_factory=list)
    status: ProposalStatus = ProposalStatus.proposed
    story: str | None = None  # the story it became, once approved


class PlanVersion(Model):
    version: int = Field(ge=1)
    status: PlanStatus = PlanStatus.requested
    requested_by: Line
    requested_at: datetime = Field(default_factory=utcnow)
    feedback: Text = Field("", max_length=TEXT_MAX)
    runs: int = Field(0, ge=0)  # planner runs of this version so far; a run's ID is E-1#v2.3
    tickets: list[str] = Field(default_factory=list)  # the questions its planner asked
    plan: Text = ""
    proposals: list[Proposal] = Field(default_factory=list)
    summary: Text = ""  # why it failed
    decided_by: Line | None = None
    decided_at: datetime | None = None


class PlanFile(VersionedFile):
    epic: str
    versions: list[PlanVersion] = Field(default_factory=list)

    @property
    def current(self) -> PlanVersion | None:
        return self.versions[-1] if self.versions else None


class PlanView(Result):
    """A front-end's view of an epic's latest plan (the result of every plan command)."""
    epic: str
    epic_title: str
    plan: PlanVersion
    action: str = ""  # requested, proposed, waiting, failed, approved, rejected
    created: dict[str, str] = Field(default_factory=dict)  # proposal key -> its new story ID
    dropped: list[str] = Field(default_factory=list)  # "P-3 -> P-2": dependencies on proposals not approved


class PlanOutcome(BaseModel):
    run_id: str
    project: str
    epic: str
    outcome: Outcome
    summary: str = ""
    plan: str = ""
    stories: list[protocol.ProposedStory] = Field(default_factory=list)
    question: str = ""
    options: list[str] = Field(default_factory=list)
    output: str = ""
    duration_s: float = 0.0


def plan_path(epic_id: str, ext: str = "json") -> str:
    return f"{PLANS_DIR}/{epic_id}.{ext}"


def run_id(epic_id: str, version: PlanVersion) -> str:
    return f"{epic_id}#v{version.version}.{version.runs}"


# -- rules on a Change -----------------------------------------------------------------------------------------
def plan_of(c: Change, epic_id: str) -> PlanFile:
    return c.file(plan_path(epic_id), PlanFile) or PlanFile(epic=epic_id)


def _save(c: Change, plan: PlanFile) -> None:
    c.dirty[plan_path(plan.epic)] = plan
    epic = c.epic(plan.epic)
    c.dirty[plan_path(plan.epic, "md")] = markdown(plan.epic, epic.title if epic else "", plan.current)


def _epic(c: Change, epic_id: str | None):
    """The epic named, or (none named) the one whose latest plan waits for a decision, the latest such."""
    if epic_id and epic_id.strip():
        return epic_of(c, epic_id)
    waiting = [(p.current.requested_at, e) for e in c.epics
               if (p := plan_of(c, e.id)).current and p.current.status is PlanStatus.proposed]
    if not waiting:
        raise NotFound("proposed plan", f"in {c.name}", "Plan an epic first (`plan start`), or name the epic.")
    return max(waiting, key=lambda pair: pair[0])[1]


def view(c: Change, epic_id: str | None, action: str = "", **fields) -> PlanView:
    epic = _epic(c, epic_id)
    plan = plan_of(c, epic.id)
    if plan.current is None:
        raise NotFound("plan", f"for {epic.id}", f"`plan start {epic.id}` asks the planner for one.")
    return PlanView(**c.result_fields(), epic=epic.id, epic_title=epic.title, plan=plan.current, action=action,
                    **fields)


def request(c: Change, epic_id: str, feedback: str = "", *, changes: bool = False) -> PlanView:
    """Ask for a (new) plan of the epic: a new version, requested. With `changes` (request changes), there
    must be a plan, the feedback must say something, and the proposals still open are superseded."""
    epic = _epic(c, epic_id)
    plan = plan_of(c, epic.id)
    current = plan.current
    feedback = (feedback or "").strip()
    if current is not None and current.status.in_progress:
        raise InvalidInput("epic", f"{epic.id} is being planned already (version {current.version}, "
                                   f"{current.status.value}).", "Wait for its proposals.")
    if changes and current is None:
        raise InvalidInput("epic", f"{epic.id} has no plan to change.", f"`plan start {epic.id}` makes one.")
    if changes and not feedback:
        raise InvalidInput("feedback", "is empty.", "Say what the planner should change.")
    if current is not None and current.status is PlanStatus.proposed:
        current.status = PlanStatus.superseded
        for p in current.proposals:
            if p.status is ProposalStatus.proposed:
                p.status = ProposalStatus.superseded
    version = validated(lambda: PlanVersion(version=len(plan.versions) + 1, requested_by=c.by, feedback=feedback))
    plan.versions.append(version)
    _save(c, plan)
    what = f"request changes to the plan of {epic.id}: {quote(feedback)}" if changes else f"plan {epic.id}"
    c.note(epic.id, f"{what} (version {version.version})")
    return PlanView(**c.result_fields(), epic=epic.id, epic_title=epic.title, plan=version, action="requested")


def claimable(c: Change) -> list[str]:
    """The epics whose latest plan a process may take now: requested, or waiting with no open ticket left."""
    return [epic for epic in stored_ids(c, PLANS_DIR, "E-*.json") if _claimable(c, plan_of(c, epic).current)]


def _claimable(c: Change, current: PlanVersion | None) -> bool:
    return current is not None and (current.status is PlanStatus.requested or (
        current.status is PlanStatus.waiting and not _open_tickets(c, current)))


def _open_tickets(c: Change, version: PlanVersion) -> list[str]:
    tf = c.tickets()
    return [t.id for t in (tf.tickets if tf else []) if t.id in version.tickets and t.is_open]


def claim(c: Change, epic_id: str,
          context_of: Callable[[Change], protocol.Context]) -> tuple[str, protocol.PlanInput] | None:
    """Take the epic's latest plan for a run here: planning, one more run. None if it is not claimable (another
    process took it, or it is not requested). Returns the run's ID and the planner's input."""
    plan = plan_of(c, epic_id)
    version = plan.current
    epic = c.epic(epic_id)
    if epic is None or not _claimable(c, version):
        return None
    version.status = PlanStatus.planning
    version.runs += 1
    _save(c, plan)
    c.note(epic_id, f"planner run {version.runs} of version {version.version} started")
    earlier = plan.versions[-2] if len(plan.versions) > 1 else None
    tf = c.tickets()
    answers = [protocol.Answer(ticket=t.id, question=t.question, answer=t.resolution or "")
               for t in (tf.tickets if tf else []) if t.id in version.tickets and t.status is TicketStatus.resolved]
    task = protocol.PlanInput(
        project=c.name, epic=protocol.EpicBrief(id=epic.id, title=epic.title, description=epic.description),
        feedback=version.feedback, previous_plan=markdown(epic.id, epic.title, earlier) if earlier else "",
        context=context_of(c), answers=answers,
        backlog=[protocol.BacklogItem(id=s.id, title=s.title, status=s.status.value) for s in c.stories()])
    return run_id(epic_id, version), task


def release_interrupted(c: Change) -> list[str]:
    """Plans a stopped process was running go back to requested (at start, by the process that runs agents)."""
    released = []
    for epic in stored_ids(c, PLANS_DIR, "E-*.json"):
        plan = plan_of(c, epic)
        if plan.current is not None and plan.current.status is PlanStatus.planning:
            plan.current.status = PlanStatus.requested
            _save(c, plan)
            c.note(plan.epic, f"planner run of version {plan.current.version} interrupted by a restart; it runs again")
            released.append(plan.epic)
    return released


def apply_outcome(c: Change, outcome: PlanOutcome) -> PlanView | None:
    """Record a run's outcome (once: a run that is not the plan's current one changes nothing, None)."""
    plan = plan_of(c, outcome.epic)
    version = plan.current
    if version is None or version.status is not PlanStatus.planning or run_id(outcome.epic, version) != outcome.run_id:
        return None
    kind, summary = outcome.outcome, outcome.summary
    if kind is Outcome.done:
        try:
            version.proposals = _proposals(outcome.stories)
            version.plan = kept(outcome.plan, PLAN_KEEP)
        except ValueError as exc:
            kind, summary = Outcome.not_protocol, f"the plan is not valid: {exc}"
    if kind is Outcome.done:
        version.status = PlanStatus.proposed
        c.note(outcome.epic, f"planner proposes {plural(len(version.proposals), 'story')} (version {version.version})")
    elif kind is Outcome.question:
        epic = c.epic(outcome.epic)
        ticket = new_ticket(c, tickets_of(c), kept(outcome.question, 500) or "The planner needs a decision.", None,
                            f"Asked by the planner of {outcome.epic} ({epic.title if epic else ''}); planning goes "
                            f"on with the answer.", [kept(o, 200) for o in outcome.options[:10]], AGENT)
        ticket.epic = outcome.epic
        version.tickets.append(ticket.id)
        version.status = PlanStatus.waiting
        c.note(f"{ticket.id}, {outcome.epic}", f"planner asks {quote(ticket.question)}; planning waits for the answer")
    else:
        version.status = PlanStatus.failed
        version.summary = kept(f"{kind.value}: {summary}", 1000)
        c.note(outcome.epic, f"planner run failed ({kind.value})")
    _save(c, plan)
    return view(c, outcome.epic, version.status.value)


def _proposals(stories: list[protocol.ProposedStory]) -> list[Proposal]:
    if not stories:
        raise ValueError("it proposes no stories")
    if len(stories) > PROPOSALS_MAX:
        raise ValueError(f"{len(stories)} stories, more than {PROPOSALS_MAX}")
    keys = [s.key for s in stories]
    if len(set(keys)) != len(keys):
        raise ValueError("two stories have the same key")
    out = []
    for s in stories:
        criteria = [kept(x, CRITERION_MAX) for x in s.criteria if x.strip()][:CRITERIA_MAX]
        out.append(Proposal(key=s.key, title=" ".join(kept(s.title, 200).split()), criteria=criteria,
                            description=kept(s.description, TEXT_MAX), points=s.points, priority=Priority(s.priority),
                            phase=kept(s.phase, 200),
                            depends_on=[d for d in dict.fromkeys(s.depends_on) if d in keys and d != s.key]))
    _refuse_cycles(out)
    return out


def _refuse_cycles(proposals: list[Proposal]) -> None:
    deps = {p.key: p.depends_on for p in proposals}
    done: set[str] = set()

    def visit(key: str, path: tuple[str, ...]) -> None:
        if key in path:
            raise ValueError(f"its dependencies go round in a circle ({' -> '.join((*path, key))})")
        if key not in done:
            for d in deps[key]:
                visit(d, (*path, key))
            done.add(key)

    for key in deps:
        visit(key, ())


def _decidable(c: Change, epic_id: str | None, number: int | None = None) -> tuple[PlanFile, PlanVersion]:
    """The plan version to decide: the latest (or version `number`, which must still be the latest)."""
    epic = _epic(c, epic_id)
    plan = plan_of(c, epic.id)
    version = plan.current
    if version is None:
        raise InvalidInput("epic", f"{epic.id} has no plan.", f"`plan start {epic.id}` asks the planner for one.")
    if number is not None and 1 <= number <= len(plan.versions):
        version = plan.versions[number - 1]
    if version.status in (PlanStatus.approved, PlanStatus.rejected):
        raise InvalidInput("plan", f"version {version.version} of {epic.id}'s plan was {version.status.value} "
                                   f"already, by {version.decided_by} on {version.decided_at:%Y-%m-%d %H:%M} UTC.")
    if version is not plan.current:
        raise InvalidInput("plan", f"version {version.version} of {epic.id}'s plan was superseded by version "
                                   f"{plan.current.version} ({plan.current.status.value}).", "Decide on that one.")
    if version.status is not PlanStatus.proposed:
        raise InvalidInput("plan", f"version {version.version} of {epic.id}'s plan is {version.status.value}, "
                                   "nothing to decide.",
                           "Wait for its proposals." if version.status.in_progress else
                           f"`plan start {epic.id}` asks the planner again.")
    return plan, version


def approve(c: Change, epic_id: str | None, items: str | list[str], number: int | None = None) -> PlanView:
    """Turn the chosen proposals (all, or keys) into stories of the epic, in one change; the others are rejected.
    A dependency on a proposal not approved is dropped (and listed in the view)."""
    plan, version = _decidable(c, epic_id, number)
    keys = [p.key for p in version.proposals]
    items = id_list(items) if isinstance(items, str) else items  # "P-1, P-3" or "all", as people type them
    chosen = keys if [i.strip().lower() for i in items] == [ALL] else [k.strip().upper() for k in items if k.strip()]
    if not chosen:
        raise InvalidInput("items", "names no proposal.", f"Give `all` or keys such as {', '.join(keys[:3])}.")
    if unknown := [k for k in chosen if k not in keys]:
        raise InvalidInput("items", f"{', '.join(unknown)} is not a proposal of this plan.",
                           f"Its proposals: {', '.join(keys)}.")
    created: dict[str, str] = {}
    stories: list[tuple[Proposal, Story]] = []
    for p in version.proposals:
        if p.key not in chosen:
            p.status = ProposalStatus.rejected
            continue
        number = c.new_story_number()
        story = validated(lambda: Story(id=f"S-{number}", epic=plan.epic, title=p.title, description=p.description,
                                        acceptance_criteria=p.criteria, points=p.points, priority=p.priority,
                                        created_by=c.by))
        story = c.add_story(story)
        created[p.key] = story.id
        stories.append((p, story))
        p.status, p.story = ProposalStatus.approved, story.id
    dropped = []
    for p, story in stories:
        story.depends_on = [created[d] for d in p.depends_on if d in created]
        dropped += [f"{p.key} -> {d}" for d in p.depends_on if d not in created]
    version.status = PlanStatus.approved
    version.decided_by, version.decided_at = c.by, utcnow()
    _save(c, plan)
    c.transition("add_story")  # approved proposals are stories added: the machine's add_story rule
    made = ", ".join(f"{k} -> {v}" for k, v in created.items())
    c.note(f"{plan.epic}, {', '.join(created.values())}", f"approve the plan of {plan.epic} (version "
                                                          f"{version.version}): {made}")
    return PlanView(**c.result_fields(), epic=plan.epic, epic_title=c.epic(plan.epic).title, plan=version,
                    action="approved", created=created, dropped=dropped)


def reject(c: Change, epic_id: str | None, number: int | None = None) -> PlanView:
    plan, version = _decidable(c, epic_id, number)
    for p in version.proposals:
        p.status = ProposalStatus.rejected
    version.status = PlanStatus.rejected
    version.decided_by, version.decided_at = c.by, utcnow()
    _save(c, plan)
    c.note(plan.epic, f"reject the plan of {plan.epic} (version {version.version})")
    return view(c, plan.epic, "rejected")


def markdown(epic_id: str, title: str, version: PlanVersion | None) -> str:
    """The plan as a person reads it: overview (the planner's own text), phases with their stories, success
    criteria."""
    if version is None:
        return ""
    lines = [f"# Plan for {epic_id}: {title}", "",
             f"Version {version.version}, {version.status.value}; requested by {version.requested_by} on "
             f"{version.requested_at:%Y-%m-%d %H:%M} UTC."]
    if version.decided_by:
        lines.append(f"{version.status.value.capitalize()} by {version.decided_by} on "
                     f"{version.decided_at:%Y-%m-%d %H:%M} UTC.")
    if version.feedback:
        lines += ["", f"Changes asked for: {version.feedback}"]
    if version.summary:
        lines += ["", f"Planning failed: {version.summary}"]
    lines += ["", "## Overview", "", version.plan.strip() or "(none yet)", "", "## Phases"]
    phases: dict[str, list[Proposal]] = {}
    for p in version.proposals:
        phases.setdefault(p.phase or "Unphased", []).append(p)
    for phase, proposals in phases.items():
        lines += ["", f"### {phase}", ""]
        for p in proposals:
            deps = f"; after {', '.join(p.depends_on)}" if p.depends_on else ""
            became = f" -> {p.story}" if p.story else ""
            lines.append(f"- **{p.key}** {p.title} ({p.priority.value}, {p.points if p.points is not None else '?'} "
                         f"points{deps}) [{p.status.value}{became}]")
    lines += ["", "## Success criteria"]
    for p in version.proposals:
        lines += ["", f"### {p.key} · {p.title}", ""]
        if p.description:
            lines += [p.description, ""]
        lines += [f"- [ ] {x}" for x in p.criteria] or ["- (none given)"]
    return "\n".join(lines) + "\n"
