"""What the cogs share: access to the bot's config and orchestrator, routing, permission checks, autocomplete."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from orchestration.errors import OrchError
from orchestration.inputs import holds_words
from orchestration.service import Orchestrator

from .. import render
from ..permissions import Access, require
from ..routing import channel_id_of, guild_of, project_for

if TYPE_CHECKING:
    from ..client import OrchBot

ALL_STORIES = 10_000  # autocomplete reads the whole backlog in one page


class BaseCog(commands.Cog):
    def __init__(self, bot: OrchBot) -> None:
        self.bot = bot

    @property
    def orch(self) -> Orchestrator:
        return self.bot.orchestrator

    def allow(self, interaction: discord.Interaction, needed: Access) -> None:
        require(interaction, self.bot.config.discord, needed)

    async def project(self, interaction: discord.Interaction, needed: Access) -> str:
        """Check the user's access, then find the channel's project (both raise an OrchError)."""
        self.allow(interaction, needed)
        return await project_for(interaction, self.orch)

    def server_paths(self, interaction: discord.Interaction) -> list[Path]:
        """The folders agents' text may name (the bot's data folder, the project's repository): never shown."""
        return self.bot.server_paths(interaction.extras["path"])

    # -- autocomplete (never raises: a failing autocomplete just offers nothing) ---------------------------
    async def _channel_project(self, interaction: discord.Interaction) -> str | None:
        channel_id = channel_id_of(interaction)
        try:
            entry = await self.orch.project_for_channel(channel_id, guild_of(interaction)) if channel_id else None
        except OrchError:  # e.g. a damaged registry.json, or no server: the command itself will say so
            return None
        return entry.name if entry else None

    async def epic_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        name = await self._channel_project(interaction)
        if name is None:
            return []
        try:
            page = await self.orch.view_backlog(name, per_page=1)
        except OrchError:
            return []
        return matching_choices([(e.id, f"{e.id} · {e.title}") for e in page.epics], current)

    async def story_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        name = await self._channel_project(interaction)
        if name is None:
            return []
        try:
            page = await self.orch.view_backlog(name, per_page=ALL_STORIES)
        except OrchError:
            return []
        return matching_choices([(s.id, f"{s.id} · {s.title} [{s.status.value}]") for s in page.stories], current)


def matching_choices(items: list[tuple[str, str]], current: str) -> list[app_commands.Choice[str]]:
    """The (value, label) pairs whose label holds every word typed (the core's rule for titles), an exact ID first;
    the value sent is the ID."""
    typed = (current or "").strip()
    hits = sorted((pair for pair in items if holds_words(pair[1], typed)),
                  key=lambda pair: pair[0].casefold() != typed.casefold())
    return [app_commands.Choice(name=render.choice_name(label), value=value)
            for value, label in hits[: render.CHOICES_MAX]]
