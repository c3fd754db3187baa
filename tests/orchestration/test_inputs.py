"""What a person or agent types, checked at the core's boundary: control characters and text no encoding holds
are refused for every front-end, sizes are bounded, and new IDs never reuse one that exists."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestration.cli import main
from orchestration.errors import InvalidInput
from orchestration.models import CRITERIA_MAX, CRITERION_MAX
from orchestration.service import Orchestrator

OSC52 = "\x1b]52;c;aGVsbG8=\x07"  # a terminal escape that writes the user's clipboard
CSI_C1 = "\x9b31m"  # the same family, as one C1 character
NOT_UTF8 = os.fsdecode(b"bad \xff byte")  # how Python hands over invalid UTF-8 from a command line: "\udcff"


def state_bytes(orch: Orchestrator, project: str) -> dict[str, bytes]:
    folder = orch.project(project).entry.path / ".orch-state"
    return {p.name: p.read_bytes() for p in folder.rglob("*.json")}


async def ready(orch: Orchestrator, project: str) -> None:
    await orch.create_epic(project, "Checkout", by="po")
    await orch.add_story(project, "E-1", "Cart", points=2, by="po")


async def in_review(orch: Orchestrator, project: str) -> None:
    await ready(orch, project)
    await orch.plan_sprint(project, stories=["S-1"], by="po")
    await orch.start_sprint(project, by="po")
    await orch.update_story(project, "S-1", "done", by="po")


# (field named in the error, what sets the project up, the command with the bad text in one field)
BAD_TEXT = {
    "epic title": ("title", None, lambda o, p, bad: o.create_epic(p, f"Pay {bad}", by="po")),
    "epic description": ("description", None, lambda o, p, bad: o.create_epic(p, "Pay", f"x {bad}", by="po")),
    "story title": ("title", ready, lambda o, p, bad: o.add_story(p, "E-1", f"A {bad}", by="po")),
    "criterion": ("acceptance_criteria.1", ready,
                  lambda o, p, bad: o.add_story(p, "E-1", "A", acceptance_criteria=["fine", f"x {bad}"], by="po")),
    "sprint goal": ("goal", ready, lambda o, p, bad: o.plan_sprint(p, goal=f"ship {bad}", by="po")),
    "feedback": ("text", in_review, lambda o, p, bad: o.feedback(p, f"good {bad}", by="po")),
    "ticket question": ("question", None, lambda o, p, bad: o.open_ticket(p, f"A or B {bad}?", by="po")),
    "ticket context": ("context", None, lambda o, p, bad: o.open_ticket(p, "A or B?", context=bad, by="po")),
    "ticket option": ("options.0", None, lambda o, p, bad: o.open_ticket(p, "A or B?", options=[bad], by="po")),
    "who": ("by", None, lambda o, p, bad: o.create_epic(p, "Pay", by=f"po{bad}")),
}


BAD = {"osc52": OSC52, "c1": CSI_C1, "nul": "nul\x00", "not-utf8": NOT_UTF8}
# Every kind of bad text in one field, and one kind (in turn) in every other field.
CASES = [("epic title", kind) for kind in BAD] + [(case, list(BAD)[n % len(BAD)]) for n, case in enumerate(BAD_TEXT)
                                                  if case != "epic title"]


@pytest.mark.parametrize("case, kind", CASES)
async def test_control_characters_and_invalid_text_are_refused_naming_the_field(orch, project, case, kind):
    bad = BAD[kind]
    field, setup, command = BAD_TEXT[case]
    if setup:
        await setup(orch, project)
    before = state_bytes(orch, project)
    with pytest.raises(InvalidInput) as caught:
        await command(orch, project, bad)
    assert caught.value.field == field
    assert "must not contain" in caught.value.reason
    assert state_bytes(orch, project) == before


async def test_a_name_is_one_line(orch, project):
    with pytest.raises(InvalidInput) as caught:
        await orch.create_epic(project, "Pay", by="po\norch(S-9): forged line")
    assert caught.value.field == "by"
    assert orch.project(project).store.backlog().epics == []


async def test_ticket_answers_refuse_control_characters_and_change_nothing(orch, project):
    await orch.open_ticket(project, "A or B?", by="po")
    before = state_bytes(orch, project)
    with pytest.raises(InvalidInput) as resolved:
        await orch.resolve_ticket(project, "TK-1", f"A {OSC52}", by="po")
    with pytest.raises(InvalidInput) as replied:
        await orch.reply_to_ticket(project, "TK-1", "alice", f"A, because {NOT_UTF8}")
    assert (resolved.value.field, replied.value.field) == ("resolution", "text")
    assert state_bytes(orch, project) == before


async def test_multi_line_text_keeps_newlines_and_tabs(orch, project):
    await orch.create_epic(project, "Pay", "Line one\n\tindented\r\nline three", by="po")
    epic = orch.project(project).store.backlog().epic("E-1")
    assert epic.description == "Line one\n\tindented\nline three"
    story = (await orch.add_story(project, "E-1", "Tabs\tin\na title", acceptance_criteria=["a\nb"], by="po")).story
    assert story.title == "Tabs in a title" and story.acceptance_criteria == ["a\nb"]


async def test_acceptance_criteria_are_bounded_in_count_and_length(orch, project):
    await ready(orch, project)
    before = state_bytes(orch, project)
    with pytest.raises(InvalidInput) as long_one:
        await orch.add_story(project, "E-1", "Big", acceptance_criteria=["x" * 1_000_000] * 5, by="po")
    assert long_one.value.field == "acceptance_criteria"
    assert f"at most {CRITERION_MAX} characters" in long_one.value.reason
    with pytest.raises(InvalidInput) as many:
        await orch.add_story(project, "E-1", "Many", acceptance_criteria=[f"c{i}" for i in range(CRITERIA_MAX + 1)],
                             by="po")
    assert many.value.field == "acceptance_criteria" and f"at most {CRITERIA_MAX}" in many.value.reason
    assert state_bytes(orch, project) == before
    most = [chr(ord("a") + i) * CRITERION_MAX for i in range(CRITERIA_MAX)]
    assert (await orch.add_story(project, "E-1", "Most", acceptance_criteria=most, by="po")).story.acceptance_criteria == most


async def test_per_page_below_one_is_refused(orch, project):
    await ready(orch, project)
    for per_page in (0, -3):
        with pytest.raises(InvalidInput) as caught:
            await orch.view_backlog(project, per_page=per_page)
        assert caught.value.field == "per_page"


async def test_a_lower_hand_edited_counter_never_reuses_an_id(orch, project):
    await ready(orch, project)
    await orch.add_story(project, "E-1", "Receipt", by="po")
    await orch.open_ticket(project, "A or B?", by="po")
    folder = orch.project(project).entry.path / ".orch-state"
    for name, counter in (("backlog.json", "next_story"), ("backlog.json", "next_epic"),
                          ("tickets.json", "next_ticket")):
        data = json.loads((folder / name).read_text())
        data[counter] = 1  # a hand edit (or a restore of an older file)
        (folder / name).write_text(json.dumps(data))

    assert (await orch.create_epic(project, "Accounts", by="po")).epic.id == "E-2"
    assert (await orch.add_story(project, "E-1", "Refund", by="po")).story.id == "S-3"
    assert (await orch.open_ticket(project, "C or D?", by="po")).ticket.id == "TK-2"
    assert orch.project(project).store.backlog().next_epic == 3  # the counter moves past what exists again
    assert (await orch.add_story(project, "E-1", "Invoice", by="po")).story.id == "S-4"


# -- the command line: no terminal escape reaches the terminal, whatever a file holds -------------------------
def run(cfg: Path, capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", str(cfg), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_refuses_invalid_utf8_as_input_not_as_an_unexpected_error(cfg, capsys, make_repo):
    repo = make_repo("shop")
    assert run(cfg, capsys, "project", "register", str(repo))[0] == 0
    code, out, err = run(cfg, capsys, "epic", NOT_UTF8, "-p", "shop")
    assert code == 1 and err.startswith("orch: error: title must not contain") and "unexpected" not in err
    assert "\udcff" not in err  # shown escaped, so printing it cannot fail either


def test_cli_prints_no_escape_read_from_files(cfg, capsys, make_repo, tmp_path):
    repo = make_repo("shop")
    assert run(cfg, capsys, "project", "register", str(repo))[0] == 0
    # Hand edits: an escape in a title (the store refuses the file as damaged) and in a registered path.
    backlog = repo / ".orch-state" / "backlog.json"
    data = json.loads(backlog.read_text())
    data["epics"] = [{"id": "E-1", "title": f"Pay {OSC52}"}]
    backlog.write_text(json.dumps(data))
    registry = tmp_path / "data" / "registry.json"
    reg = json.loads(registry.read_text())
    reg["projects"].append({**reg["projects"][0], "name": "evil", "path": f"/nowhere/{OSC52}{CSI_C1}"})
    registry.write_text(json.dumps(reg))

    code, out, err = run(cfg, capsys, "backlog", "-p", "shop")
    assert code == 1 and "damaged" in err
    code, out, err = run(cfg, capsys, "project", "list")
    assert code == 0 and "evil" in out
    code, json_out, _ = run(cfg, capsys, "project", "list", "--json")
    assert [p["path"] for p in json.loads(json_out)][1] == f"/nowhere/{OSC52}{CSI_C1}"  # JSON keeps the value
    for text in (err, out, json_out):
        assert not any(ch in text for ch in "\x1b\x07\x9b")
