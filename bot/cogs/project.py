"""/project register | list | unregister | history | restore. Registering creates the project's channel; the two
succeed together. History and restore act on the channel's project: its latest changes from git, and going back to
one of them (admins) as a new commit."""
import asyncio
import logging

import discord
from discord import app_commands
from discord.ext import commands

from orchestration.errors import OrchError

from .. import render
from ..handling import defer, handled, send
from ..permissions import Access
from ..routing import guild_of
from ._shared import BaseCog, matching_choices

log = logging.getLogger(__name__)


class ChannelNotCreated(OrchError):
    pass


@app_commands.guild_only()  # projects live in server channels: the commands are not offered in DMs
# Shown only to those with Manage Server unless a server admin opens it to others (Server Settings → Integrations).
# Discord sets this per top-level command only, so it covers the whole group, /project list too; the checks in the
# commands still decide who may do what.
@app_commands.default_permissions(manage_guild=True)
class ProjectCog(BaseCog, commands.GroupCog, group_name="project",
                 group_description="Register the git repositories this bot drives"):
    def __init__(self, bot) -> None:
        super().__init__(bot)
        # One registration at a time: two at once could both pick the same free channel, and the loser's
        # rollback would then delete the winner's channel.
        self._registering = asyncio.Lock()

    @app_commands.command(name="register", description="Register a git repository and create its channel (admins)")
    @app_commands.describe(path="The repository's folder on the bot's machine",
                           name="Project name (lowercase letters, digits, hyphens); default: the folder's name")
    @handled
    async def register(self, interaction: discord.Interaction, path: str, name: str | None = None) -> None:
        self.allow(interaction, Access.admin)
        guild_of(interaction)  # a server's, never a direct message's
        await defer(interaction, ephemeral=True)
        async with self._registering:
            await self._register(interaction, path, name)

    async def _register(self, interaction: discord.Interaction, path: str, name: str | None) -> None:
        # Validate first (fast, changes nothing): a refused registration creates no channel.
        _resolved, slug = await self.orch.check_registration(path, name, interaction.guild.id)
        interaction.extras["project"] = slug
        channel, created = await self._channel_for(interaction.guild, slug)
        try:
            result = await self.orch.register_project(path, slug, by=interaction.user.name,
                                                      guild_id=interaction.guild.id, channel_id=channel.id)
        except BaseException:
            if created:  # the registration failed: the channel goes too
                await _delete_quietly(channel)
            raise
        try:
            await channel.send(embed=render.welcome(result, interaction.user.name), allowed_mentions=render.NO_MENTIONS)
        except discord.HTTPException as exc:  # the project works without its welcome message
            log.warning("welcome message in %s failed: %s", channel.id, exc)
        await send(interaction, embed=render.registered(result, channel), ephemeral=True)

    async def _channel_for(self, guild: discord.Guild, slug: str) -> tuple[discord.TextChannel, bool]:
        """(channel, created): a new channel under the category, or a free one of that name left by an
        earlier registration (unregister keeps channels)."""
        settings = self.bot.config.discord
        channel_name = f"{settings.channel_prefix}{slug}"
        try:
            category = discord.utils.get(guild.categories, name=settings.channel_category)
            if category is None:
                category = await guild.create_category(settings.channel_category, reason="orch: project channels")
            taken = {p.channel_id for p in await self.orch.project_entries()}
            existing = next((c for c in category.text_channels if c.name == channel_name and c.id not in taken), None)
            if existing is not None:
                return existing, False
            channel = await guild.create_text_channel(
                channel_name, category=category, topic=f"Scrum cycle of project {slug} (orch bot)",
                reason=f"orch: /project register {slug}")
        except discord.HTTPException as exc:
            raise ChannelNotCreated(f"The channel #{channel_name} could not be created ({exc.text or exc.status}); "
                                    "nothing was registered.",
                                    "The bot needs the Manage Channels permission in this server.") from None
        return channel, True

    @app_commands.command(name="list", description="The registered projects and their channels")
    @handled
    async def list_(self, interaction: discord.Interaction) -> None:
        self.allow(interaction, Access.everyone)
        await send(interaction, embed=render.project_list(await self.orch.list_projects(guild_of(interaction))))

    @app_commands.command(name="unregister", description="Stop driving a project; its files stay (admins)")
    @app_commands.describe(name="The project's name")
    @handled
    async def unregister(self, interaction: discord.Interaction, name: str) -> None:
        self.allow(interaction, Access.admin)
        interaction.extras["project"] = name
        result = await self.orch.unregister_project(name, by=interaction.user.name, guild_id=guild_of(interaction))
        await send(interaction, embed=render.unregistered(result))

    @app_commands.command(name="history", description="This project's latest changes: who, what, when (from git)")
    @app_commands.describe(page="Page number (10 changes a page)")
    @handled
    async def history(self, interaction: discord.Interaction, page: app_commands.Range[int, 1, 1000] = 1) -> None:
        project = await self.project(interaction, Access.everyone)
        await send(interaction, embed=render.project_history(await self.orch.project_history(project, page)))

    @app_commands.command(name="restore", description="Bring this project's state back to a commit's, as a new "
                          "commit (admins)")
    @app_commands.describe(commit="The commit (its ID; `/project history` lists them)")
    @handled
    async def restore(self, interaction: discord.Interaction, commit: str) -> None:
        project = await self.project(interaction, Access.admin)
        await defer(interaction)  # it commits what waits first, then reads the commit's files: it may take a while
        result = await self.orch.restore_project(project, commit, by=interaction.user.name)
        await send(interaction, embed=render.restored(result))

    @restore.autocomplete("commit")
    async def _commits(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        name = await self._channel_project(interaction)
        try:
            found = (await self.orch.project_history(name, per_page=render.CHOICES_MAX)).entries if name else []
        except OrchError:
            return []
        return matching_choices([(e.sha, f"{e.sha[:10]} · {e.at:%Y-%m-%d %H:%M} · {e.lines[0]}") for e in found],
                                current)

    @unregister.autocomplete("name")
    async def _project_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        try:
            names = [p.name for p in await self.orch.project_entries(guild_of(interaction)) if current.lower() in p.name]
        except OrchError:  # a damaged registry.json, or no server: offer nothing (the command itself says why)
            return []
        return [app_commands.Choice(name=n, value=n) for n in names[: render.CHOICES_MAX]]


async def _delete_quietly(channel: discord.abc.GuildChannel) -> None:
    try:
        await channel.delete(reason="orch: registration failed")
    except discord.HTTPException as exc:
        log.warning("could not remove channel %s after a failed registration: %s", channel.id, exc)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(ProjectCog(bot))
