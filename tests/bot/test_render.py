"""Discord's limits, enforced in bot/render.py whatever the input."""
from __future__ import annotations

import json
from datetime import date, timedelta

import discord

from bot import render
from bot.chart import burndown_png, remaining_per_day
from orchestration.agents.records import AttemptRecord
from orchestration.agents.scheduler import StoryProgress
from orchestration.errors import CommandNotAllowed
from orchestration.results import StoryLog

from tests.bot.conftest import open_project_commands


def test_cut_keeps_the_limit_and_says_what_was_cut():
    assert render.cut("short", 10) == "short"
    for size, limit in [(5000, 4096), (2001, 2000), (300, 256), (10, 1), (10, 5)]:
        out = render.cut("a" * size, limit)
        assert len(out) <= limit
    out = render.cut("a" * 5000, 4096)
    kept = out.index("…")
    assert out.endswith(f"(+{5000 - kept} chars cut)")


def test_fit_brings_any_embed_within_limits():
    embed = discord.Embed(title="t" * 1000, description="d" * 10_000)
    for n in range(40):
        embed.add_field(name="n" * 300, value="v" * 2000)
    embed.set_footer(text="f" * 3000)
    fitted = render.fit(embed)
    assert len(fitted.title) <= 256 and len(fitted.description) <= 4096
    assert len(fitted.fields) <= 25 and all(len(f.name) <= 256 and len(f.value) <= 1024 for f in fitted.fields)
    assert render._embed_size(fitted) <= 6000


def test_bar():
    assert render.bar(7, 10) == "███████░░░ 70%"
    assert render.bar(0, 0) == "░░░░░░░░░░ 0%"


def test_refusal_maps_triggers_to_slash_commands():
    error = CommandNotAllowed("SPRINT_REVIEW", "plan", ["feedback", "request_changes", "prioritize"],
                              "Close the sprint with `feedback`.")
    embed = render.error_embed(error)
    allowed = next(f.value for f in embed.fields if f.name == "Allowed now")
    assert allowed == "`/feedback`, `/feedback changes_requested:True`, `/backlog prioritize`"
    assert next(f.value for f in embed.fields if f.name == "Hint") == "Close the sprint with `/feedback`."
    assert render.slashed("`git checkout -- x`") == "`git checkout -- x`"  # only our own command names


async def test_every_slash_name_of_the_command_table_is_a_command_of_the_synced_tree(world):
    """orchestration/commands.py names the slash commands; the bot must really have them."""
    from orchestration.commands import COMMANDS, DISCORD

    await open_project_commands(world, world.alice)  # /project is shown to admins alone by default
    synced = set(world.alice.available_commands(world.general))
    named = {c.name(DISCORD) for c in COMMANDS} - {None, "reply", "the plan's Reject button"}
    assert {n.removeprefix("/").split(" changes_requested:")[0] for n in named} <= synced


async def test_the_burndown_chart_is_a_png(orch, project):
    await orch.create_epic(project, "E", by="t")
    await orch.add_story(project, "E-1", "A", points=3, by="t")
    await orch.plan_sprint(project, by="t")
    view = await orch.start_sprint(project, by="t")
    days, values, unit = remaining_per_day(view)
    assert unit == "points" and values == [3] and len(days) == 14  # sprint_days, from the config's default
    assert view.sprint.planned_end == days[-1]
    png = burndown_png(view)
    assert png.startswith(b"\x89PNG") and 1000 < len(png) < 200_000


async def test_burndown_carries_days_forward_and_leaves_the_future_empty(orch, project):
    await orch.create_epic(project, "E", by="t")
    await orch.add_story(project, "E-1", "A", points=3, by="t")
    await orch.plan_sprint(project, by="t")
    await orch.start_sprint(project, by="t")
    # A sprint that started four days ago (a hand edit of its file, as a restore from git would be).
    path = orch.project(project).store.dir / "sprints" / "sprint-001.json"
    data = json.loads(path.read_text())
    start = date.today() - timedelta(days=4)
    data["started_at"] = f"{start.isoformat()}T09:00:00Z"
    data["burndown"] = [{"day": start.isoformat(), "remaining_points": 3, "remaining_stories": 1},
                        {"day": (start + timedelta(days=2)).isoformat(), "remaining_points": 1, "remaining_stories": 1}]
    path.write_text(json.dumps(data))
    view = await orch.sprint_status(project)
    days, values, unit = remaining_per_day(view)
    assert (len(days), view.elapsed_days, values) == (14, 5, [3, 3, 1, 1, 1])
    assert burndown_png(view).startswith(b"\x89PNG")


def test_agent_text_is_shown_within_limits_and_without_server_paths(tmp_path):
    data = tmp_path / "data"
    said = f"wrote {data}/worktrees/shop/S-1/cart.py " + "x" * 10_000
    progress = StoryProgress(story="S-1", title="t" * 500, sprint="sprint-001", phase="blocked", attempt=3,
                             max_attempts=3, summary=said, tests_passed=0, tests_failed=2, branch="orch/S-1",
                             duration_s=4000)
    embed = render.story_run("shop", progress, None, [data])
    assert render._embed_size(embed) <= 6000 and len(embed.title) <= 256
    assert str(data) not in json.dumps(embed.to_dict()) and "…/data/worktrees" in embed.fields[0].value
    assert embed.description.startswith("⛔ Blocked after 3 failed attempts")

    attempts = [AttemptRecord(id=f"S-1#{n}", attempt=n, sprint="sprint-001", outcome="tests_failed", summary=said,
                              tests_passed=1, tests_failed=1, duration_s=2.5) for n in range(1, 51)]
    tail = "```\nnot the end of the block\n" + f"{data}/logs/x.log\n" * 5000 + "the last line"
    log = render.story_log(StoryLog(project="shop", story="S-1", attempts=attempts, log_tail=tail,
                                    log_file=data / "logs" / "x.log"), [data])
    assert render._embed_size(log) <= 6000 and len(log.description) <= 4096
    assert str(data) not in json.dumps(log.to_dict())
    assert log.description.endswith("the last line\n```") and log.description.count("```") == 2  # one closed block
    assert log.fields[-1].name == "Attempt 50 · tests_failed" and log.author.name == "the last 8 of 50 attempts"


async def test_the_sprint_branch_and_its_commits_are_listed_without_server_paths(orch, project, tmp_path):
    await orch.create_epic(project, "E", by="t")
    await orch.add_story(project, "E-1", "A", points=3, by="t")
    await orch.plan_sprint(project, by="t")
    view = (await orch.start_sprint(project, by="t")).model_copy(update={
        "branch": "orch/sprint-001",
        "commits": [f"{'a' * 40} Merge S-1 into orch/sprint-001",
                    f"{'b' * 40} {tmp_path}/data/worktrees/demo/S-1: cart total " + "x" * 300] * 30})
    for embed in (render.sprint_view(view, "review", True, [tmp_path]), render.review_ready(view, [tmp_path])):
        text = json.dumps(embed.to_dict(), ensure_ascii=False)
        assert str(tmp_path) not in text and "`aaaaaaaaaa` Merge S-1 into orch/sprint-001" in text
        assert "… and" in text and render._embed_size(embed) <= 6000  # 60 commits: as many as fit, and a note
    assert "Commits on" not in json.dumps(render.sprint_view(view).to_dict())  # /sprint status: the count only
    assert render.review_ready(view).title == "sprint-001 is ready for review: branch orch/sprint-001"
