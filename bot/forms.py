"""Forms (Discord modals) for long text: opened as a command's first answer, prefilled with the current values;
their submit is answered like a command (bot/handling.py: a refusal is an ephemeral reply, a crash is logged and
apologised for, one log line). An edit form passes on only the fields the person changed (`changed`), so an edit
made by someone else while the form was open is not undone by its stale values; a form making something new takes
them all (`values`)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord

from orchestration.errors import OrchError

from . import render
from .handling import handled, send
from .permissions import Access

if TYPE_CHECKING:
    from .cogs._shared import BaseCog

log = logging.getLogger("bot.forms")

FORM_TIMEOUT_S = 3600  # a form left open this long is forgotten (Discord never says it was closed)
INPUT_MAX = 4000  # Discord's limit for a text input's value
LABEL_MAX = 45  # and for a form's title and an input's label


class Form(discord.ui.Modal):
    """A form for one command (`command`, its name in the log) on one project."""

    command = "?"

    def __init__(self, title: str, cog: BaseCog, project: str) -> None:
        super().__init__(title=render.one_line(title, LABEL_MAX), timeout=FORM_TIMEOUT_S)
        self.cog, self.project = cog, project
        self.shown: dict[str, str] = {}

    def field(self, key: str, label: str, value: str, *, long: bool = False, required: bool = False,
              max_length: int = INPUT_MAX, placeholder: str | None = None) -> None:
        """A text input (custom_id `key`) showing `value`; a value too long for Discord is shown cut (and counts as
        changed only if the person changes it)."""
        shown = (value or "")[:max_length]
        self.shown[key] = shown
        self.add_item(discord.ui.TextInput(
            custom_id=key, label=label[:LABEL_MAX], default=shown or None, required=required, max_length=max_length,
            style=discord.TextStyle.paragraph if long else discord.TextStyle.short, placeholder=placeholder))

    def values(self) -> dict[str, str]:
        """Every input's value as submitted: key -> value."""
        return {item.custom_id: item.value for item in self.children if isinstance(item, discord.ui.TextInput)}

    def changed(self) -> dict[str, str]:
        """The inputs whose value the person changed: key -> the new value."""
        return {key: value for key, value in self.values().items() if value != self.shown.get(key)}

    @handled
    async def on_submit(self, interaction: discord.Interaction) -> None:
        interaction.extras.update(project=self.project, command=self.command)  # for the log line, even if refused
        # Routed and checked again as a command is (a form may stay open an hour): this also notes the project's
        # path, so that an error is shown to a non-admin without it.
        if await self.cog.project(interaction, Access.member) != self.project:
            raise OrchError(f"This channel is no longer {self.project}'s: the form was not applied.")
        await self.submitted(interaction, self.changed())

    async def submitted(self, interaction: discord.Interaction, changed: dict[str, Any]) -> None:
        raise NotImplementedError

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        log.error("form %s of %s failed: %r", self.command, self.project, error, exc_info=error)
        await send(interaction, embed=render.crash_embed(), ephemeral=True)
