"""Many changes at once, from one process and from two, and changes made behind the orchestrator's back."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from orchestration.models import Backlog, Story
from orchestration.service import Orchestrator
from tests.conftest import backlog_of, git, story_file


def committed_backlog(repo: Path) -> Backlog:
    """The backlog as HEAD holds it: backlog.json and stories/S-<n>.json."""
    backlog = Backlog.model_validate_json(git(repo, "show", "HEAD:.orch-state/backlog.json"))
    names = git(repo, "ls-tree", "--name-only", "HEAD", ".orch-state/stories/").split()
    stories = [Story(**{k: v for k, v in json.loads(git(repo, "show", f"HEAD:{n}")).items() if k != "schema_version"})
               for n in names if n.endswith(".json")]
    return backlog.model_copy(update={"stories": sorted(stories, key=lambda s: int(s.id[2:]))})


async def test_50_concurrent_add_story_calls_lose_nothing(orch: Orchestrator, project: str):
    repo = orch.registry.get(project).path
    await orch.create_epic(project, "Load", by="alice")

    results = await asyncio.gather(*(orch.add_story(project, "E-1", f"Story {i}", by=f"user{i}") for i in range(50)))

    ids = [r.story.id for r in results]
    assert sorted(ids, key=lambda i: int(i[2:])) == [f"S-{n}" for n in range(1, 51)]
    on_disk = backlog_of(repo)
    assert {s.title for s in on_disk.stories} == {f"Story {i}" for i in range(50)}
    await orch.flush()
    assert git(repo, "status", "--porcelain") == ""
    assert len(committed_backlog(repo).stories) == 50
    log = git(repo, "log", "--format=%B", "--", ".orch-state")
    assert all(f"orch(S-{n}, E-1): add story" in log for n in range(1, 51))


SECOND_PROCESS = """
import asyncio, sys
from orchestration.config import Config
from orchestration.service import Orchestrator

async def main():
    orch = Orchestrator(Config.model_validate_json(sys.argv[1]))
    print("ready", flush=True)
    sys.stdin.readline()  # start together with the test process
    await asyncio.gather(*(orch.add_story("demo", "E-1", f"cli {i}", by="cli") for i in range(25)))
    await orch.close()

asyncio.run(main())
"""


async def test_two_processes_adding_25_stories_each_lose_nothing(config, orch: Orchestrator, project: str):
    repo = orch.registry.get(project).path
    await orch.create_epic(project, "Shared", by="alice")
    await orch.flush()
    cli = subprocess.Popen([sys.executable, "-c", SECOND_PROCESS, config.model_dump_json()],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert (await asyncio.to_thread(cli.stdout.readline)).strip() == "ready"
        cli.stdin.write("go\n")
        cli.stdin.flush()
        await asyncio.gather(*(orch.add_story(project, "E-1", f"bot {i}", by="bot") for i in range(25)))
        assert await asyncio.to_thread(cli.wait, 60) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
    await orch.flush()

    backlog = backlog_of(repo)  # valid, and complete
    assert sorted(s.id for s in backlog.stories) == sorted(f"S-{n}" for n in range(1, 51))
    assert {s.title for s in backlog.stories} == {f"bot {i}" for i in range(25)} | {f"cli {i}" for i in range(25)}
    assert git(repo, "status", "--porcelain") == ""
    assert committed_backlog(repo).stories == backlog.stories


async def test_a_hand_edit_is_seen_by_the_next_command_and_kept(orch: Orchestrator, project: str):
    repo = orch.registry.get(project).path
    await orch.create_epic(project, "Edits", by="alice")
    await orch.add_story(project, "E-1", "Typo heer", by="alice")
    await orch.view_backlog(project)  # the parsed backlog is now cached
    time.sleep(0.05)  # a person edits later than the bot wrote

    data = json.loads(story_file(repo, "S-1").read_text())
    data["title"] = "Typo here"  # the same size, in place: only the file's mtime tells it changed
    story_file(repo, "S-1").write_text(json.dumps(data, indent=2) + "\n")

    assert (await orch.view_backlog(project)).stories[0].title == "Typo here"
    await orch.add_story(project, "E-1", "Next", by="alice")
    assert [s.title for s in backlog_of(repo).stories] == [
        "Typo here", "Next"]


async def test_a_git_checkout_of_an_older_state_is_seen_by_the_next_command(orch: Orchestrator, project: str):
    repo = orch.registry.get(project).path
    await orch.create_epic(project, "History", by="alice")
    await orch.add_story(project, "E-1", "Kept", by="alice")
    await orch.flush()
    older = git(repo, "rev-parse", "HEAD").strip()
    await orch.add_story(project, "E-1", "Rolled back", by="alice")
    await orch.plan_sprint(project, by="alice")
    await orch.flush()
    assert (await orch.state(project)).state.value == "SPRINT_PLANNED"

    # Files added since (a story, the sprint) go too: `git checkout older -- .orch-state` would keep them.
    git(repo, "restore", f"--source={older}", "--staged", "--worktree", "--", ".orch-state")

    assert (await orch.state(project)).state.value == "BACKLOG_READY"
    page = await orch.view_backlog(project)
    assert [s.title for s in page.stories] == ["Kept"]
    again = await orch.add_story(project, "E-1", "After the rollback", by="alice")
    assert again.story.id == "S-2"
    await orch.flush()
    assert [s.title for s in committed_backlog(repo).stories] == ["Kept", "After the rollback"]


async def test_a_project_first_used_by_many_commands_at_once_is_one_project(config, project: str):
    """Commands look their project up in worker threads: the first ones to arrive together must still share one
    Project, and so one lock, or their changes would not wait for each other."""
    fresh = Orchestrator(config)  # nothing loaded yet
    try:
        found = await asyncio.gather(*(asyncio.to_thread(fresh.project, project) for _ in range(16)))
        assert len({id(p) for p in found}) == 1
        results = await asyncio.gather(*(fresh.create_epic(project, f"Epic {i}") for i in range(8)))
        assert sorted(r.epic.id for r in results) == sorted(f"E-{n}" for n in range(1, 9))
    finally:
        await fresh.close()
