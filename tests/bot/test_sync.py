"""The command tree is synced once, and again only when it changes."""
from __future__ import annotations

from bot.client import TREE_HASH_FILE, create_bot

EXPECTED = {"project register", "project list", "project unregister", "epic create", "backlog view", "backlog add_story",
            "backlog prioritize", "backlog remove", "backlog depend", "backlog next", "story update", "sprint plan",
            "sprint start", "sprint status", "sprint pause", "sprint resume", "sprint review", "feedback", "state",
            "health", "story retry", "story log"}


def syncs(env) -> list:
    return [r for r in env.http_requests if r.method == "PUT" and r.path.endswith("/commands")]


async def test_the_synced_tree_holds_the_public_commands(world):
    assert EXPECTED <= set(world.admin.available_commands(world.general))  # (features such as tickets add more)
    assert set(world.alice.available_commands(world.general)) & EXPECTED == {c for c in EXPECTED if not c.startswith("project ")}


async def test_sync_happens_once_and_not_again_on_restart(world, config, orch):
    env = world.env
    assert len(syncs(env)) == 1 and env.bot.synced is True
    hash_file = config.orchestrator.data_dir / TREE_HASH_FILE
    fingerprint = hash_file.read_text().strip()
    assert len(fingerprint) == 64

    restarted = create_bot(config, orch)
    await env.restart_bot(restarted)

    assert len(syncs(env)) == 1 and restarted.synced is False
    assert hash_file.read_text().strip() == fingerprint
    assert EXPECTED <= set(world.admin.available_commands(world.general))  # still usable after the restart


async def test_a_changed_tree_syncs_again(world, config, orch):
    env = world.env
    hash_file = config.orchestrator.data_dir / TREE_HASH_FILE
    hash_file.write_text("0" * 64 + "\n")  # what an older version of the commands left

    restarted = create_bot(config, orch)
    await env.restart_bot(restarted)

    assert len(syncs(env)) == 2 and restarted.synced is True
    assert hash_file.read_text().strip() == restarted.tree_fingerprint()


async def test_with_guild_id_the_tree_goes_to_that_guild(simcord_env, config, orch):
    env = simcord_env
    guild = env.create_guild("Pinned")
    config.discord.guild_id = guild.id
    bot = create_bot(config, orch)
    await env.restart_bot(bot)
    [guild_sync] = [r for r in syncs(env) if f"/guilds/{guild.id}/" in r.path]
    assert {"project", "epic", "backlog", "story", "sprint", "feedback", "state", "health"} <= \
        {c["name"] for c in guild_sync.json}


async def test_project_commands_are_not_offered_in_direct_messages(world):
    dm = world.env.create_user("carol")
    assert not EXPECTED & set(dm.available_commands())


async def test_a_refused_sync_is_one_warning_and_the_bot_runs_on(world, config, orch, caplog):
    """Discord refusing the sync (no applications.commands scope, an outage) must not stop the bot with a
    traceback: the last synced commands keep working, and the next start tries again."""
    env = world.env
    hash_file = config.orchestrator.data_dir / TREE_HASH_FILE
    hash_file.write_text("0" * 64 + "\n")
    env.inject_error("PUT", "/applications/*/commands", status=403, code=50001, message="Missing Access")

    restarted = create_bot(config, orch)
    await env.restart_bot(restarted)

    assert restarted.synced is False and hash_file.read_text().strip() == "0" * 64  # tried again next start
    [warning] = [r for r in caplog.records if r.name == "bot" and r.levelname == "WARNING"]
    assert "applications.commands" in warning.getMessage() and not warning.exc_info
    answered = await world.admin.slash(world.general, "project list")
    assert answered.response is not None  # the bot runs on
