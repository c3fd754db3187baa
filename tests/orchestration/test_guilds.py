"""Per-server isolation in the core: a project belongs to the Discord server (guild) it was registered in, and
whatever is asked on behalf of another server neither sees nor touches it. The CLI (no guild) sees them all."""
from __future__ import annotations

import pytest

from orchestration.errors import InvalidInput, ProjectExists, ProjectNotFound
from orchestration.service import Orchestrator

A, B = 1001, 2002


@pytest.fixture
async def in_a(orch: Orchestrator, make_repo):
    """Project "demo", registered from server A (channel 11)."""
    repo = make_repo("demo")
    await orch.register_project(str(repo), by="ada", guild_id=A, channel_id=11)
    return repo.resolve()


async def test_lists_and_health_show_only_the_servers_own_projects(orch: Orchestrator, in_a, make_repo):
    await orch.register_project(str(make_repo("cli-only")), by="operator")  # from the CLI: no server
    assert [p.name for p in (await orch.list_projects(guild_id=A))] == ["demo"]
    assert (await orch.list_projects(guild_id=B)) == []
    assert [p.name for p in (await orch.health(guild_id=A)).projects] == ["demo"]
    assert (await orch.health(guild_id=B)).projects == []
    # The CLI, run by the machine's operator, sees every project.
    assert {p.name for p in (await orch.list_projects())} == {"demo", "cli-only"}
    assert len((await orch.health()).projects) == 2


async def test_routing_by_channel_checks_the_server(orch: Orchestrator, in_a):
    assert (await orch.project_for_channel(11, guild_id=A)).name == "demo"
    assert (await orch.project_for_channel(11, guild_id=B)) is None


async def test_another_server_cannot_unregister_a_project(orch: Orchestrator, in_a):
    with pytest.raises(ProjectNotFound):
        await orch.unregister_project("demo", by="mallory", guild_id=B)
    assert orch.registry.get("demo") is not None
    await orch.unregister_project("demo", by="ada", guild_id=A)
    assert orch.registry.get("demo") is None


async def test_registering_another_servers_repository_says_only_that_it_is_taken(orch: Orchestrator, in_a):
    before = orch.registry.file.read_bytes()
    with pytest.raises(ProjectExists) as checked:
        (await orch.check_registration(str(in_a), "mine", guild_id=B))
    with pytest.raises(ProjectExists) as registered:
        await orch.register_project(str(in_a), "mine", by="mallory", guild_id=B, channel_id=22)
    for refused in (checked, registered):
        text = str(refused.value)
        assert "already registered" in text
        assert "demo" not in text and str(in_a) not in text and "11" not in text
    assert orch.registry.file.read_bytes() == before
    # Its own server still hears the name and the channel.
    with pytest.raises(ProjectExists, match='"demo".*<#11>'):
        (await orch.check_registration(str(in_a), guild_id=A))


async def test_a_cli_registered_project_is_adopted_by_the_first_server_that_registers_it(orch: Orchestrator,
                                                                                        make_repo):
    repo = make_repo("tool")
    await orch.register_project(str(repo), by="operator")
    await orch.create_epic("tool", "Kept", by="operator")
    assert (await orch.list_projects(guild_id=A)) == []

    with pytest.raises(InvalidInput, match='registered as "tool"'):  # adopting keeps the project's name
        await orch.register_project(str(repo), "other", by="ada", guild_id=A, channel_id=11)
    result = await orch.register_project(str(repo), by="ada", guild_id=A, channel_id=11)

    assert result.project == "tool" and result.adopted
    entry = orch.registry.get("tool")
    assert (entry.guild_id, entry.channel_id) == (A, 11)
    assert [p.name for p in (await orch.list_projects(guild_id=A))] == ["tool"]
    assert (await orch.view_backlog("tool")).epics[0].title == "Kept"
    with pytest.raises(ProjectExists, match="already registered"):  # from now on it is A's
        await orch.register_project(str(repo), by="mallory", guild_id=B, channel_id=22)
