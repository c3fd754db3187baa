"""/project register | list | unregister."""
from __future__ import annotations

import discord

from tests.bot.conftest import channel_named, deferrals, embed_of, field, open_project_commands, register, reply
from tests.conftest import git


async def test_register_creates_the_channel_and_the_registry_entry(world, make_repo, orch):
    repo = make_repo("demo")
    result, channel = await register(world, repo)

    assert deferrals(world.env) == [64]  # deferred (ephemeral flag 64): the admin's confirmation is private
    assert reply(result).ephemeral
    assert channel is not None
    category = channel_named(world, "Projects")
    assert category is not None and world.env.bot.get_channel(channel.id).category_id == category.id
    entry = orch.registry.get("demo")
    assert entry is not None and entry.channel_id == channel.id and entry.guild_id == world.guild.id
    assert (await orch.project_for_channel(channel.id, world.guild.id)).name == "demo"
    assert "Registered demo" in embed_of(result).title and channel.mention in embed_of(result).description
    welcome = channel.last_message.embeds[0]  # the welcome message in the new channel: state + next command
    assert welcome.title == "Welcome to demo"
    assert field(welcome, "State") == "`IDLE`" and "`/epic create`" in field(welcome, "Allowed now")
    await orch.flush()
    assert "orch(demo)" in git(repo, "log", "-1", "--format=%s")


async def test_a_second_register_of_the_same_repo_says_where_its_channel_is(world, make_repo, orch):
    repo = make_repo("demo")
    _, channel = await register(world, repo)
    channels_before = len(world.guild.channels)

    again, _ = await register(world, repo, name="other")

    assert reply(again).ephemeral
    assert channel.mention in embed_of(again).description
    assert len(world.guild.channels) == channels_before and len(await orch.list_projects()) == 1


async def test_a_refused_registration_creates_no_channel(world, projects_root, tmp_path, orch):
    not_a_repo = projects_root / "plain"
    not_a_repo.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for path in (not_a_repo, outside, projects_root / "missing"):
        result, channel = await register(world, path)
        assert reply(result).ephemeral and embed_of(result).title == "Not done"
        assert channel is None
    assert channel_named(world, "Projects") is None and await orch.list_projects() == []


async def test_channel_creation_failure_registers_nothing(world, make_repo, orch):
    world.env.inject_error("POST", "/guilds/*/channels", status=403, code=50013, message="Missing Permissions",
                           times=None)
    result, channel = await register(world, make_repo("demo"))
    assert channel is None and await orch.list_projects() == []
    embed = embed_of(result)
    assert reply(result).ephemeral and "nothing was registered" in embed.description
    assert "Manage Channels" in field(embed, "Hint")


async def test_registration_failure_removes_the_new_channel(world, make_repo, orch):
    repo = make_repo("demo")
    (repo / ".orch-state").mkdir()
    (repo / ".orch-state" / "status.json").write_text("{ not json")  # passes the checks, fails to adopt
    result, channel = await register(world, repo)
    assert "damaged" in embed_of(result).description
    assert channel is None and await orch.list_projects() == []
    created = [r for r in world.env.http_requests if r.method == "POST" and r.json and r.json.get("name") == "proj-demo"]
    deleted = [r for r in world.env.http_requests if r.method == "DELETE" and r.path.startswith("/channels/")]
    assert len(created) == 1 and len(deleted) == 1  # made, then removed when the registration failed
    assert (repo / ".orch-state" / "status.json").read_text() == "{ not json"  # never overwritten


async def test_project_commands_are_shown_to_admins_and_still_refuse_others(world, make_repo, orch):
    [synced] = [c for r in world.env.http_requests if r.method == "PUT" and r.path.endswith("/commands")
                for c in r.json if c["name"] == "project"]
    assert int(synced["default_member_permissions"]) == discord.Permissions(manage_guild=True).value
    assert "project register" in world.admin.available_commands(world.general)
    assert not {"project register", "project unregister"} & set(world.alice.available_commands(world.general))

    await open_project_commands(world, world.alice)  # a server admin shows /project to alice: she is still no admin
    result = await world.alice.slash(world.general, "project register", path=str(make_repo("demo")))
    assert reply(result).ephemeral and "Only server admins" in embed_of(result).description
    assert await orch.list_projects() == [] and channel_named(world, "proj-demo") is None


async def test_admin_role_from_the_config_counts_as_admin(world, make_repo, orch):
    world.env.bot.config.discord.admin_role = "scrum-masters"
    role = world.guild.create_role("scrum-masters")
    bob = world.guild.add_member(world.env.create_user("bob"), roles=[role])
    await open_project_commands(world, role)  # as docs/bot.md says to, for a role without Manage Server
    result = await bob.slash(world.general, "project register", path=str(make_repo("demo")))
    assert not embed_of(result).title == "Not done"
    assert orch.registry.get("demo") is not None


async def test_list_and_unregister(world, demo, orch):
    repo, channel = demo
    await open_project_commands(world, world.alice)  # a server that lets everyone list the projects
    listed = await world.alice.slash(world.general, "project list")
    assert "**demo**" in embed_of(listed).description and channel.mention in embed_of(listed).description

    refused = await world.alice.slash(world.general, "project unregister", name="demo")
    assert reply(refused).ephemeral and orch.registry.get("demo") is not None

    choices = await world.admin.autocomplete(world.general, "project unregister", "name", "de")
    assert [c["value"] for c in choices] == ["demo"]
    done = await world.admin.slash(world.general, "project unregister", name="demo")
    assert "Unregistered demo" in embed_of(done).title
    assert orch.registry.get("demo") is None
    assert (repo / ".orch-state" / "backlog.json").exists()  # the files stay

    # the channel stays too, and a new registration of the repo takes it back rather than making another
    again, _ = await register(world, repo)
    assert orch.registry.get("demo").channel_id == channel.id
    assert sum(1 for c in world.guild.channels.values() if c.name == "proj-demo") == 1
