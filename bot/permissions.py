"""Who may run what: the one place the bot decides admin / member / everyone.

Admins: the Manage Server permission, or the configured `admin_role`. Members: the configured `member_role`,
or admins; with no `member_role` configured, everyone is a member. A role is named in the config by its
name or its id. Checked inside each command, not only through Discord's default permissions, which a
server admin can change.
"""
from __future__ import annotations

from enum import Enum
from typing import Callable

import discord

from orchestration.config import DiscordSettings
from orchestration.errors import OrchError


class Access(str, Enum):
    everyone = "everyone"
    member = "member"
    admin = "admin"


class NotPermitted(OrchError):
    def __init__(self, needed: Access, settings: DiscordSettings) -> None:
        if needed is Access.admin:
            who = "server admins (Manage Server)" + (f" and the `{settings.admin_role}` role" if settings.admin_role else "")
        else:
            who = f"the `{settings.member_role}` role and admins" if settings.member_role else "members"
        super().__init__(f"Only {who} may run this command.", "Ask a server admin for the role.")
        self.needed = needed


def _has_role(user: discord.abc.User, role: str | None) -> bool:
    if not role or not isinstance(user, discord.Member):
        return False
    return any(r.name == role or str(r.id) == role for r in user.roles)


def is_admin(interaction: discord.Interaction, settings: DiscordSettings) -> bool:
    # interaction.permissions is what Discord computed for this user here (owner and Administrator included).
    return interaction.permissions.manage_guild or _has_role(interaction.user, settings.admin_role)


def is_member(interaction: discord.Interaction, settings: DiscordSettings) -> bool:
    return _member_rule(interaction.user, lambda: is_admin(interaction, settings), settings)


def author_is_member(author: discord.abc.User, settings: DiscordSettings) -> bool:
    """The member rule for the author of a message (no interaction: their server-wide permissions count)."""
    def admin() -> bool:
        manages = isinstance(author, discord.Member) and author.guild_permissions.manage_guild
        return manages or _has_role(author, settings.admin_role)
    return _member_rule(author, admin, settings)


def _member_rule(user: discord.abc.User, admin: Callable[[], bool], settings: DiscordSettings) -> bool:
    if not settings.member_role:
        return True
    return _has_role(user, settings.member_role) or admin()


def require(interaction: discord.Interaction, settings: DiscordSettings, needed: Access) -> None:
    """Raise NotPermitted unless the user has the `needed` access level."""
    allowed = {
        Access.everyone: lambda: True,
        Access.member: lambda: is_member(interaction, settings),
        Access.admin: lambda: is_admin(interaction, settings),
    }[needed]()
    if not allowed:
        raise NotPermitted(needed, settings)
