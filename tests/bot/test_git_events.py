"""Commits that stop are not silent in Discord: the project's channel is told once, /health turns red."""
from __future__ import annotations

from bot import render
from tests.bot.conftest import embed_of
from tests.conftest import git


async def test_stuck_commits_are_told_once_in_the_projects_channel_and_health_is_red(world, demo, orch):
    repo, channel = demo
    orch.git.retry_s = 60  # retries come as SimCord's clock advances
    (repo / ".git" / "index").write_bytes(b"this is not an index")
    before = len(channel.history())

    await world.alice.slash(channel, "epic create", title="Broken index")
    for _ in range(3):  # the first commit fails, and then each retry
        await world.env.advance_time(61)

    told = channel.history()[before + 1:]
    assert len(told) == 1
    embed = told[0].embeds[0]
    assert embed.title == "⚠️ Commits stopped · demo" and embed.colour == render.COLOR_ERROR
    assert "index file smaller than expected" in embed.description
    assert str(repo) not in embed.description  # the server's paths are for admins (/health), not the channel

    health = embed_of(await world.admin.slash(channel, "health"))
    assert health.colour == render.COLOR_ERROR and "commits fail" in health.fields[-1].value

    (repo / ".git" / "index").unlink()
    git(repo, "reset", "-q")
    await world.env.advance_time(61)
    assert channel.history()[-1].embeds[0].title == "✅ Commits resumed · demo"
