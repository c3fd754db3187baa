"""Seeing and editing stories and epics from Discord, and a project's history and restore: real dispatch through
SimCord, forms (modals) submitted as Discord submits them, real files and git underneath."""
from __future__ import annotations

from typing import Any

import pytest

from tests.bot.conftest import assert_within_limits, embed_of, field, reply
from tests.conftest import git


def form_values(shown, **changes: str) -> dict[str, Any]:
    """What Discord sends when a form is submitted: every input's value (prefilled ones as they were shown), with
    the person's `changes`."""
    values = {}
    for row in shown.modal["components"]:
        for control in row.get("components") or [row.get("component")]:
            values[control["custom_id"]] = control.get("value") or ""
    assert set(changes) <= set(values), (changes, values)
    return {**values, **changes}


def inputs(shown) -> dict[str, dict]:
    return {c["custom_id"]: c for row in shown.modal["components"] for c in row.get("components") or [row["component"]]}


def mentions_off(env) -> bool:
    """Every message the bot sent that echoes "@everyone" pings nobody (a form shows text, it sends no message)."""
    sent = [r for r in env.http_requests if r.method == "POST" and "@everyone" in str(r.json)
            and r.json.get("type") != 9]
    return bool(sent) and all(r.json.get("data", r.json)["allowed_mentions"] == {"parse": []} for r in sent)


@pytest.fixture
async def shop(world, demo, orch):
    """Epics E-1, E-2; S-1 with criteria, S-2 waiting for it; a ticket about S-2."""
    repo, channel = demo
    await orch.create_epic("demo", "Checkout", by="ada")
    await orch.create_epic("demo", "Accounts", by="ada")
    await orch.flush()
    await orch.add_story("demo", "E-1", "Cart @everyone", description="Lists what you buy", points=3,
                         acceptance_criteria=["shows each item", "shows the total"], by="ada")
    await orch.add_story("demo", "E-1", "Pay", points=5, depends_on=["S-1"], by="ada")
    await orch.open_ticket("demo", "Which currencies?", story="S-2", by="ada")
    await orch.flush()
    return repo, channel


async def test_story_show_has_everything_within_discord_limits(world, shop):
    repo, channel = shop
    result = await world.alice.slash(channel, "story show", story="S-1")
    embed = embed_of(result)
    assert embed.title == "S-1 · Cart @everyone" and embed.description == "Lists what you buy"
    assert field(embed, "Acceptance criteria (2)") == "☐ shows each item\n☐ shows the total"
    assert "**S-2** Pay" in field(embed, "Waited for by") and field(embed, "Epic") == "E-1 · Checkout"
    assert "ada: orch(S-1, E-1): add story" in field(embed, "History")
    assert_within_limits(reply(result))
    assert mentions_off(world.env)  # the title is echoed: no ping
    s2 = embed_of(await world.alice.slash(channel, "story show", story="S-2"))
    assert "TK-1" in field(s2, "Tickets") and "**S-1**" in field(s2, "Depends on")
    refused = await world.alice.slash(channel, "story show", story="S-9")
    assert reply(refused).ephemeral and "no story 'S-9'" in embed_of(refused).description
    choices = await world.alice.autocomplete(channel, "story show", "story", "pay")
    assert [c["value"] for c in choices] == ["S-2"]


async def test_story_edit_opens_a_prefilled_form_and_saves_what_was_changed(world, shop, orch):
    repo, channel = shop
    shown = await world.alice.slash(channel, "story edit", story="S-1")
    assert shown.modal is not None and shown.response is None  # the form is the first answer
    fields = inputs(shown)
    assert fields["title"]["value"] == "Cart @everyone" and fields["points"]["value"] == "3"
    assert fields["criteria"]["value"] == "shows each item\nshows the total" and fields["criteria"]["style"] == 2
    assert fields["description"]["style"] == 2  # paragraphs for long text

    await orch.prioritize_story("demo", "S-1", "high", by="bob")  # meanwhile: the form's values do not undo it
    submitted = await world.alice.submit_modal(shown, form_values(
        shown, title="Cart page", points="", criteria="- shows each item\n- shows the total\n- can be emptied"))
    embed = embed_of(submitted)
    assert embed.author.name == "Edited" and field(embed, "Title") == "Cart @everyone → Cart page"
    assert field(embed, "Points") == "3 → none" and "can be emptied" in field(embed, "Acceptance criteria")
    assert {f.name for f in embed.fields} == {"Title", "Points", "Acceptance criteria"}  # only what was changed
    detail = await orch.story_detail("demo", "S-1")
    assert detail.story.priority.value == "high" and detail.story.description == "Lists what you buy"
    assert detail.story.acceptance_criteria == ["shows each item", "shows the total", "can be emptied"]
    await orch.flush()
    assert ('orch(S-1): edit title "Cart @everyone" -> "Cart page"; points 3 -> none; acceptance criteria '
            "(/story edit by alice)") in git(repo, "log", "-1", "--format=%B")
    assert mentions_off(world.env)

    again = await world.alice.slash(channel, "story edit", story="S-1")  # submitted as shown: nothing to do
    head = git(repo, "rev-parse", "HEAD")
    unchanged = embed_of(await world.alice.submit_modal(again, form_values(again)))
    assert unchanged.author.name == "Nothing to change"
    await orch.flush()
    assert git(repo, "rev-parse", "HEAD") == head

    bad = await world.alice.slash(channel, "story edit", story="S-1")
    refused = await world.alice.submit_modal(bad, form_values(bad, points="lot"))
    assert reply(refused).ephemeral and "points" in embed_of(refused).description
    bad = await world.alice.slash(channel, "story edit", story="S-1")
    refused = await world.alice.submit_modal(bad, form_values(bad, epic="E-9"))
    assert reply(refused).ephemeral and "no epic 'E-9'" in embed_of(refused).description
    moving = await world.alice.slash(channel, "story edit", story="S-1")
    moved = embed_of(await world.alice.submit_modal(moving, form_values(moving, epic="e-2")))
    assert field(moved, "Epic") == "E-1 → E-2" and len(moved.fields) == 1


async def test_a_forms_submit_is_routed_again_and_a_member_sees_no_server_path(world, shop, tmp_path):
    repo, channel = shop
    shown = await world.alice.slash(channel, "story edit", story="S-1")
    repo.rename(tmp_path / "moved")  # while the form is open: a problem whose text names the path
    refused = await world.alice.submit_modal(shown, form_values(shown, title="Basket"))
    text = str(embed_of(refused).to_dict())
    assert reply(refused).ephemeral and "no longer at …/demo" in text and str(repo) not in text


async def test_epic_create_list_and_edit(world, shop, orch):
    repo, channel = shop
    created = await world.alice.slash(channel, "epic create", title="Search", description="Find things")
    assert embed_of(created).title == "E-3 · Search"
    await orch.update_story("demo", "S-1", "done", by="ada")
    listing = embed_of(await world.alice.slash(channel, "epic list"))
    lines = listing.description.splitlines()
    assert lines[0].startswith("**E-1** Checkout · 2 stories") and lines[0].endswith("3/8 pt done")
    assert lines[2] == "**E-3** Search · 0 stories · 0/0 pt done"

    shown = await world.alice.slash(channel, "epic edit", epic="E-1")
    assert inputs(shown)["title"]["value"] == "Checkout" and inputs(shown)["description"]["style"] == 2
    edited = embed_of(await world.alice.submit_modal(shown, form_values(shown, description="Buying, paying")))
    assert edited.title == "E-1 · Checkout" and field(edited, "Description") == "(empty) → Buying, paying"
    assert (await orch.list_epics("demo", "E-1")).epics[0].epic.description == "Buying, paying"
    refused = await world.alice.slash(channel, "epic edit", epic="E-9")
    assert reply(refused).ephemeral and "no epic 'E-9'" in embed_of(refused).description


async def test_project_history_and_restore_by_an_admin(world, shop, orch):
    repo, channel = shop
    history = embed_of(await world.admin.slash(channel, "project history"))
    lines = history.description.splitlines()
    assert lines[0].endswith("(+2 more)") and "ada: orch(S-1, E-1): add story" in lines[0]  # one commit, 3 changes
    assert 'ada: orch(E-1): create epic "Checkout" (/epic create by ada) (+1 more)' in lines[1]
    assert lines[-1].endswith("(/project register by ada)") and "restore commit:" in history.footer.text
    target = git(repo, "log", "-1", "--format=%H", "--grep", "create epic").strip()
    choices = await world.admin.autocomplete(channel, "project restore", "commit", target[:7])
    assert [c["value"] for c in choices] == [target]

    await world.alice.slash(channel, "sprint plan")
    await orch.flush()
    before = git(repo, "rev-parse", "HEAD").strip()
    result = await world.admin.slash(channel, "project restore", commit=target[:8])
    embed = embed_of(result)
    assert not reply(result).ephemeral and embed.title == f"Restored demo to {target[:10]}"
    assert field(embed, "Stories gone") == "S-1, S-2" and field(embed, "State") == "SPRINT_PLANNED → BACKLOG_READY"
    assert field(embed, "Current sprint") == "sprint-001 → none" and before[:10] in field(embed, "Undo")
    assert_within_limits(reply(result))
    await orch.flush()
    assert git(repo, "rev-parse", "HEAD:.orch-state") == git(repo, "rev-parse", f"{target}:.orch-state")
    assert (await world.alice.slash(channel, "state")).response is not None
    plan = await world.alice.slash(channel, "sprint plan")  # the bot's state machine is at the restored state
    assert reply(plan).ephemeral and "no story ready" in embed_of(plan).description

    undone = embed_of(await world.admin.slash(channel, "project restore", commit=before))
    assert field(undone, "Stories back") == "S-1, S-2" and field(undone, "State") == "BACKLOG_READY → SPRINT_PLANNED"


async def test_restore_is_for_admins_and_refuses_a_bad_commit(world, shop, orch):
    repo, channel = shop
    head = git(repo, "rev-parse", "HEAD")
    # Whether or not /project is hidden from members by default, a server admin may show it to them: the command
    # itself still refuses them.
    [project] = [c for c in await world.env.bot.tree.fetch_commands() if c.name == "project"]
    world.guild.set_command_permissions(project, {world.alice: True})
    refused = await world.alice.slash(channel, "project restore", commit=head[:8])
    assert reply(refused).ephemeral and "Only server admins" in embed_of(refused).description
    for commit, said in [("nonsense", "not a commit ID"), ("abcdef12", "no commit abcdef12")]:
        answer = await world.admin.slash(channel, "project restore", commit=commit)
        assert reply(answer).ephemeral and said in embed_of(answer).description
    await orch.flush()
    assert git(repo, "rev-parse", "HEAD") == head


async def test_the_largest_story_and_history_stay_within_discord_limits(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "E" * 200, by="ada")
    await orch.add_story("demo", "E-1", "T" * 200, description="d" * 4000, points=100,
                         acceptance_criteria=[f"{n} " + "c" * 396 for n in range(20)], by="ada" * 30)
    for n in range(12):
        await orch.add_story("demo", "E-1", f"{n} " + "w" * 190, depends_on=["S-1"], by="ada")
        await orch.edit_story("demo", "S-1", by="b" * 80, title=f"{n} " + "T" * 190)
        await orch.flush()
    shown = await world.alice.slash(channel, "story show", story="S-1")
    assert_within_limits(reply(shown))
    embed = embed_of(shown)
    assert "… and" in field(embed, "Acceptance criteria (20)") and len(field(embed, "History").splitlines()) >= 3
    form = await world.alice.slash(channel, "story edit", story="S-1")
    assert len(inputs(form)["criteria"]["value"]) == 4000  # cut to Discord's limit: unchanged, it is not passed on
    head = git(repo, "rev-parse", "HEAD")
    assert embed_of(await world.alice.submit_modal(form, form_values(form))).author.name == "Nothing to change"
    await orch.flush()
    assert git(repo, "rev-parse", "HEAD") == head
    for command in ("project history", "epic list"):
        assert_within_limits(reply(await world.admin.slash(channel, command)))
