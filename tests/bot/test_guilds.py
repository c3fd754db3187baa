"""Two Discord servers share the bot: neither sees nor touches the other's projects, only admins of the owning
server see server paths, and with `[discord] guild_id` set the bot serves that server alone."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import discord
import pytest

from bot.client import create_bot
from tests.bot.conftest import channel_named, embed_of, register, reply


@dataclass
class Other:
    """Server B: its own channel, its admin (Manage Server) and a plain member."""
    guild: Any
    general: Any
    admin: Any
    member: Any


@pytest.fixture
def b(world) -> Other:
    env = world.env
    guild = env.create_guild("Other")
    managers = guild.create_role("managers", permissions=discord.Permissions(manage_guild=True))
    return Other(guild, guild.create_text_channel("general"),
                 guild.add_member(env.create_user("mallory"), roles=[managers]), guild.add_member(env.create_user("bob")))


def text_of(result) -> str:
    """Everything the reply shows: its content and its embeds."""
    message = reply(result)
    return " ".join([message.content or ""] + [str(e.to_dict()) for e in message.embeds])


def channel_named_in(server: Other, name: str):
    return next((c for c in server.guild.channels.values() if c.name == name), None)


async def test_another_server_lists_and_health_checks_none_of_the_projects(world, demo, b):
    listed = await b.admin.slash(b.general, "project list")  # (/project is shown to admins only)
    assert "demo" not in text_of(listed) and "No project is registered" in embed_of(listed).description
    for user in (b.admin, b.member):
        health = await user.slash(b.general, "health")
        assert "demo" not in text_of(health) and "No project is registered" in embed_of(health).description
    own = await world.admin.slash(world.general, "project list")  # server A still sees its own
    assert "**demo**" in embed_of(own).description


async def test_another_servers_admin_cannot_unregister_nor_autocomplete_the_project(world, demo, b, orch):
    repo, _ = demo
    assert await b.admin.autocomplete(b.general, "project unregister", "name", "de") == []
    refused = await b.admin.slash(b.general, "project unregister", name="demo")
    assert reply(refused).ephemeral and "No project" in embed_of(refused).description
    assert str(repo) not in text_of(refused)
    assert orch.registry.get("demo").guild_id == world.guild.id


async def test_another_server_cannot_register_the_same_repository(world, demo, b, orch):
    repo, channel = demo
    refused = await b.admin.slash(b.general, "project register", path=str(repo), name="stolen")
    text = text_of(refused)
    assert reply(refused).ephemeral and "already registered" in text
    assert "demo" not in text and str(channel.id) not in text and str(world.guild.id) not in text
    assert channel_named_in(b, "proj-stolen") is None and channel_named_in(b, "Projects") is None
    assert [p.name for p in (await orch.list_projects())] == ["demo"]


async def test_a_channel_of_another_server_never_routes_to_the_project(world, demo, b, orch):
    """Routing checks the server as well as the channel: even a registry entry pointing at a channel of
    server B (hand-edited, or stale) does not let B act on A's project."""
    await orch.set_channel("demo", world.guild.id, b.general.id)
    refused = await b.admin.slash(b.general, "epic create", title="Hijack")
    assert reply(refused).ephemeral and "belongs to no project" in embed_of(refused).description
    assert "demo" not in text_of(refused)
    state = await b.member.slash(b.general, "state")
    assert "belongs to no project" in embed_of(state).description
    assert await b.member.autocomplete(b.general, "story update", "story", "") == []
    assert (await orch.view_backlog("demo")).epics == []


async def test_only_admins_of_the_owning_server_see_server_paths_in_health(world, demo, tmp_path):
    repo, _ = demo
    repo.rename(tmp_path / "moved")  # a problem whose text names the path
    member_view = text_of(await world.alice.slash(world.general, "health"))
    assert "no longer at" in member_view and str(repo) not in member_view and str(tmp_path) not in member_view
    admin_view = text_of(await world.admin.slash(world.general, "health"))
    assert str(repo) in admin_view


async def test_only_admins_see_server_paths_in_errors(world, demo, tmp_path):
    repo, channel = demo
    repo.rename(tmp_path / "moved")
    member_view = text_of(await world.alice.slash(channel, "state"))
    assert "no longer at …/demo" in member_view and str(repo) not in member_view
    admin_view = text_of(await world.admin.slash(channel, "state"))
    assert str(repo) in admin_view


async def test_a_cli_registered_project_is_in_no_server_until_an_admin_registers_it(world, b, make_repo, orch):
    repo = make_repo("tool")
    await orch.register_project(str(repo), by="operator")  # `orch project register`: bound to no server
    for server_user, where in ((world.admin, world.general), (b.admin, b.general)):
        assert "tool" not in text_of(await server_user.slash(where, "project list"))
        assert "tool" not in text_of(await server_user.slash(where, "health"))

    adopted, channel = await register(world, repo)
    assert "Registered tool" in embed_of(adopted).title and channel is not None
    assert orch.registry.get("tool").guild_id == world.guild.id
    assert "**tool**" in embed_of(await world.admin.slash(world.general, "project list")).description
    taken = await b.admin.slash(b.general, "project register", path=str(repo))
    assert "already registered" in text_of(taken) and orch.registry.get("tool").guild_id == world.guild.id


# -- [discord] guild_id set: one server only ----------------------------------------------------------------------

def leaves(env) -> list[str]:
    return [r.path for r in env.http_requests if r.method == "DELETE" and r.path.startswith("/users/@me/guilds/")]


async def pinned_to(world, config, orch):
    config.discord.guild_id = world.guild.id
    bot = create_bot(config, orch)
    await world.env.restart_bot(bot)
    return bot


async def test_a_pinned_bot_leaves_other_servers_at_start_and_when_invited(world, b, config, orch, caplog):
    with caplog.at_level(logging.INFO, logger="bot"):
        bot = await pinned_to(world, config, orch)
        assert leaves(world.env) == [f"/users/@me/guilds/{b.guild.id}"]
        assert {g.id for g in bot.guilds} == {world.guild.id}

        late = world.env.create_guild("Late")  # invited afterwards
        await world.env.settle()
    assert leaves(world.env)[-1] == f"/users/@me/guilds/{late.id}"
    assert {g.id for g in bot.guilds} == {world.guild.id}
    left = [r.getMessage() for r in caplog.records if "left server" in r.getMessage()]
    assert len(left) == 2 and str(late.id) in left[1]


async def test_a_pinned_bot_whose_server_is_missing_leaves_nothing(world, b, config, orch, caplog):
    """A mistyped guild_id must not make the bot leave the server it was meant for."""
    config.discord.guild_id = 4242
    with caplog.at_level(logging.ERROR, logger="bot"):
        await world.env.restart_bot(create_bot(config, orch))
    assert leaves(world.env) == []
    assert any("4242" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


@pytest.mark.simcord(strict_sync=False)  # B still has the globally synced commands of an earlier start
async def test_a_pinned_bot_refuses_interactions_from_other_servers(world, b, config, orch, make_repo):
    world.env.inject_error("DELETE", "/users/@me/guilds/*", status=500, message="try later", times=None)
    await pinned_to(world, config, orch)  # could not leave B
    _, channel = await register(world, make_repo("demo"))

    refused = await b.admin.slash(b.general, "project register", path=str(make_repo("mine")))
    assert reply(refused).ephemeral and "only serves" in text_of(refused)
    assert orch.registry.get("mine") is None and channel_named_in(b, "Projects") is None
    assert "only serves" in text_of(await b.member.slash(b.general, "state"))
    assert await b.admin.autocomplete(b.general, "project unregister", "name", "") == []
    assert channel_named(world, "proj-demo") is not None
    assert "**demo**" in embed_of(await world.admin.slash(world.general, "project list")).description
