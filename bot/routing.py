"""Which project a command belongs to: the channel it was run in (a thread counts as its parent channel)."""
from __future__ import annotations

import discord

from orchestration.errors import OrchError
from orchestration.service import Orchestrator


class WrongChannel(OrchError):
    """A project command outside any project's channel. Carries the map of project channels."""

    def __init__(self, projects: list[tuple[str, int | None]]) -> None:
        listed = [f"<#{cid}> → {name}" for name, cid in projects if cid]
        hint = ("Project channels: " + ", ".join(listed) + ".") if listed else \
            "No project is registered yet: an admin runs `/project register` first."
        super().__init__("This channel belongs to no project, so nothing was changed.", hint)
        self.projects = projects


def guild_of(interaction: discord.Interaction) -> int:
    """The server an interaction comes from: every project, list and health view is scoped to it (the rule
    itself is orchestration's ProjectEntry.seen_from)."""
    if interaction.guild_id is None:
        raise OrchError("Projects live in server channels: run this in a server, not in a direct message.")
    return interaction.guild_id


def channel_id_of(interaction: discord.Interaction) -> int | None:
    channel = interaction.channel
    if isinstance(channel, discord.Thread):
        return channel.parent_id
    return interaction.channel_id


async def project_for(interaction: discord.Interaction, orchestrator: Orchestrator) -> str:
    """The project of the interaction's channel, if it is one of this server's; also noted in
    interaction.extras, its name for the command's log line and its path for hiding it from non-admins."""
    guild_id = guild_of(interaction)
    channel_id = channel_id_of(interaction)
    entry = await orchestrator.project_for_channel(channel_id, guild_id) if channel_id else None
    if entry is None:
        raise WrongChannel([(p.name, p.channel_id) for p in await orchestrator.project_entries(guild_id)])
    interaction.extras["project"] = entry.name
    interaction.extras["path"] = entry.path
    return entry.name
