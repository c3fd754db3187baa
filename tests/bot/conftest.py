"""Bot fixtures: the real bot over the real orchestrator (tests/conftest.py), driven by SimCord through
discord.py's real dispatch. Replies are read where discord.py sent them over (simulated) HTTP."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest

from bot import render
from bot.client import create_bot
from tests.conftest import backlog_json


@pytest.fixture
def simcord_bot(config, orch):
    return create_bot(config, orch)


@dataclass
class World:
    env: Any
    guild: Any
    general: Any  # a channel that belongs to no project
    admin: Any  # has Manage Server
    alice: Any  # a plain member of the server


@pytest.fixture
def world(simcord_env) -> World:
    env = simcord_env
    guild = env.create_guild("Team")
    general = guild.create_text_channel("general")
    managers = guild.create_role("managers", permissions=discord.Permissions(manage_guild=True))
    admin = guild.add_member(env.create_user("ada"), roles=[managers])
    alice = guild.add_member(env.create_user("alice"))
    return World(env, guild, general, admin, alice)


def channel_named(world: World, name: str):
    return next((c for c in world.guild.channels.values() if c.name == name), None)


async def register(world: World, repo: Path, name: str | None = None):
    """/project register as the admin; returns (interaction result, the project's channel or None)."""
    options = {"path": str(repo)}
    if name:
        options["name"] = name
    result = await world.admin.slash(world.general, "project register", **options)
    return result, channel_named(world, f"proj-{name or repo.name}")


@pytest.fixture
async def demo(world, make_repo):
    """A registered project "demo": (repo path, channel handle)."""
    repo = make_repo("demo")
    result, channel = await register(world, repo)
    assert channel is not None, result
    return repo, channel


async def open_project_commands(world: World, *who) -> None:
    """What a server admin may do in Server Settings → Integrations: show /project (to Manage Server holders only
    by default) to these members or roles too."""
    [project] = [c for c in await world.env.bot.tree.fetch_commands() if c.name == "project"]
    world.guild.set_command_permissions(project, {w: True for w in who})


def reply(result):
    """The message that answered an interaction (the response, or the first follow-up after a deferral)."""
    return result.response or result.followups[0]


def embed_of(result) -> discord.Embed:
    return reply(result).embeds[0]


def field(embed: discord.Embed, name: str) -> str:
    return next(f.value for f in embed.fields if f.name == name)


def assert_within_limits(message) -> None:
    """Discord's limits on one message: content, and each embed's parts and total."""
    assert len(message.content or "") <= render.CONTENT_MAX
    for e in message.embeds:
        assert len(e.title or "") <= 256
        assert len(e.description or "") <= 4096
        assert len(e.fields) <= 25
        for f in e.fields:
            assert len(f.name) <= 256 and len(f.value) <= 1024
        assert len(e.footer.text or "") <= 2048
        assert render._embed_size(e) <= 6000


def deferrals(env) -> list[int]:
    """The flags of every deferred interaction response the bot sent (type 5), in order."""
    return [r.json["data"].get("flags", 0) if r.json.get("data") else 0 for r in env.http_requests
            if r.method == "POST" and r.path.endswith("/callback") and r.json.get("type") == 5]


def load(repo: Path, rel: str) -> dict:
    """A state file's JSON; backlog.json with its stories (see tests/conftest.backlog_json)."""
    return backlog_json(repo) if rel == "backlog.json" else json.loads((repo / ".orch-state" / rel).read_text())
