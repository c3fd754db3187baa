"""Bot fixtures: the real bot over the real orchestrator (tests/conftest.py), driven by SimCord."""
from __future__ import annotations

from dataclasses import dataclass

import discord
import pytest

from bot.client import create_bot


@pytest.fixture
def simcord_bot(config, orch):
    return create_bot(config, orch)


@dataclass
class World:
    env: object
    guild: object
    general: object
    admin: object  # Manage Server
    alice: object  # a plain member


@pytest.fixture
def world(simcord_env) -> World:
    env = simcord_env
    guild = env.create_guild("Team")
    general = guild.create_text_channel("general")
    managers = guild.create_role("managers", permissions=discord.Permissions(manage_guild=True))
    admin = guild.add_member(env.create_user("ada"), roles=[managers])
    alice = guild.add_member(env.create_user("alice"))
    return World(env, guild, general, admin, alice)


async def register(world: World, repo, name: str | None = None):
    """/project register as the admin; returns (result, project channel handle)."""
    options = {"path": str(repo)}
    if name:
        options["name"] = name
    result = await world.admin.slash(world.general, "project register", **options)
    channel = next((c for c in world.guild.channels.values() if c.name == f"proj-{name or repo.name}"), None)
    return result, channel
