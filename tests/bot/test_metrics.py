"""The bot's metrics (bot/metrics.py), fed by @handled and shown by /health within Discord's limits."""
from __future__ import annotations

import json
import math
import re
from datetime import timedelta

from bot import render
from bot.metrics import LATENCY_WINDOW, Metrics, percentile
from orchestration.models import utcnow
from orchestration.results import Health, ProjectHealth
from orchestration.wording import plural
from tests.bot.conftest import assert_within_limits, embed_of, field, load, reply


def _latencies(line: str) -> tuple[float, float]:
    p50, p95 = re.search(r"p50 ([\d.]+) ms · p95 ([\d.]+) ms", line).groups()
    return float(p50), float(p95)


async def test_health_shows_counts_error_rate_and_latencies(world, demo):
    repo, channel = demo  # /project register: 1 command, ok
    await world.alice.slash(channel, "epic create", title="Checkout")  # ok; IDLE -> BACKLOG_READY
    await world.alice.slash(channel, "epic create", title="Refunds")  # ok
    refused = await world.alice.slash(channel, "sprint start")  # refused: nothing is planned
    assert embed_of(refused).title == "Not possible now"
    world.env.inject_error("POST", "/interactions/*/callback", status=500, times=1)
    crashed = await world.alice.slash(channel, "epic create", title="Anyone there?")  # the reply fails: an error
    assert embed_of(crashed).title == "Something went wrong"
    assert len(world.env.errors) == 1  # the tree's on_error logged it (acknowledged here)

    result = await world.alice.slash(world.general, "health")

    message = reply(result)
    assert_within_limits(message)
    embed = embed_of(result)
    assert embed.title == "Healthy"
    assert "gateway latency 0.0 ms" in embed.description  # SimCord's heartbeat round trip is 0
    assert "5 commands since start · 1 error · 1 refused" in embed.description  # /health itself not yet
    assert "Agents:" not in embed.description  # where agents run is for admins
    assert re.search(r"Bot up \d+ s", embed.description)
    lines = field(embed, "Commands (most used)").splitlines()
    assert lines[0].startswith("`/epic create` ×3 ·") and "errors 33%" in lines[0]  # most used first
    epic_p50, epic_p95 = _latencies(lines[0])
    assert 0 < epic_p50 <= epic_p95 < 5000
    [start] = [line for line in lines if line.startswith("`/sprint start`")]
    assert "×1" in start and "errors 0%" in start and "1 refused" in start
    assert any(line.startswith("`/project register` ×1") for line in lines)
    history = load(repo, "status.json")["history"]
    assert history  # the first epic moved the project on
    demo_lines = field(embed, "✅ demo").splitlines()
    assert demo_lines[0] == f"state `BACKLOG_READY` · {plural(len(history), 'state change')} in 7 days"
    assert demo_lines[1] == "5 commands since start · 1 error · 1 refused"

    again = embed_of(await world.alice.slash(world.general, "health"))  # the first /health counts now
    assert "6 commands since start · 1 error · 1 refused" in again.description
    assert any(line.startswith("`/health` ×1") for line in field(again, "Commands (most used)").splitlines())
    admin = embed_of(await world.admin.slash(world.general, "health"))
    assert "Agents: local: 0/2 attempts running" in admin.description


async def test_health_stays_within_embed_limits_with_many_projects(world, make_repo, orch):
    for i in range(30):
        await orch.register_project(str(make_repo(f"project-{i:02}")), by="ada", guild_id=world.guild.id)
    damaged = [f"project-{i:02}" for i in range(29, 5, -2)]  # 12, with long problems: past 6,000 chars in all
    for name in damaged:
        (orch.registry.get(name).path / ".orch-state" / "status.json").write_text("{ not json" + "x" * 3000)
    for _ in range(12):
        await world.admin.slash(world.general, "project list")
    await world.alice.slash(world.general, "state")  # refused: no project in #general

    result = await world.alice.slash(world.general, "health")

    message = reply(result)
    assert_within_limits(message)
    embed = embed_of(result)
    assert embed.title == "Needs attention"
    assert embed.fields[0].name == "Commands (most used)"
    assert embed.fields[0].value.startswith("`/project list` ×12 ·")
    own = [f.name for f in embed.fields[1:-1]]
    assert own[: len(damaged)] == [f"⚠️ {name}" for name in sorted(damaged)]  # problems first, each in full
    assert embed.fields[-1].name == f"{30 - len(own)} more projects"  # the rest, one compact line each
    text = " ".join(f"{f.name} {f.value}" for f in embed.fields)
    assert all(f"project-{i:02}" in text for i in range(30))


def test_latency_window_stays_bounded_over_many_samples():
    metrics = Metrics()
    for i in range(10_000):
        metrics.record("epic", "demo", "refused:CommandNotAllowed" if i % 10 == 0 else "ok", i / 1000)
    assert metrics.window_size("epic") == LATENCY_WINDOW == 500
    [epic] = metrics.snapshot().commands
    assert (epic.count, epic.ok, epic.refused, epic.errors) == (10_000, 9_000, 1_000, 0)
    # Only the last 500 samples (9,500 … 9,999 ms) count: nearest-rank p50 and p95 of those.
    assert (epic.p50_ms, epic.p95_ms) == (9749.0, 9974.0)
    assert metrics.snapshot().projects["demo"].commands == 10_000


def test_metrics_outcomes_projects_and_uptime():
    now = [100.0]
    metrics = Metrics(clock=lambda: now[0])
    metrics.record("sprint start", "demo", "refused:CommandNotAllowed", 0.01)
    metrics.record("epic", "demo", "error", 0.02)
    metrics.record("epic", None, "ok", 0.03)  # no project (e.g. a refusal outside any project channel)
    now[0] = 160.5
    snap = metrics.snapshot()
    assert [c.name for c in snap.commands] == ["epic", "sprint start"]
    assert snap.commands[0].error_rate == 0.5 and (snap.total, snap.errors, snap.refused) == (3, 1, 1)
    assert snap.projects == {"demo": snap.projects["demo"]} and snap.projects["demo"].commands == 2
    assert snap.uptime_s == 60.5
    assert math.isnan(percentile([], 50)) and percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_health_renders_an_unknown_gateway_latency_as_na():
    """bot.latency is NaN until the first heartbeat."""
    metrics = Metrics()
    report = Health(ok=True, projects=[ProjectHealth(name="demo", path="/tmp/demo", ok=True, transitions_last_7_days=2)])
    embed = render.health(report, metrics.snapshot(), math.nan)
    assert "gateway latency n/a" in embed.description
    assert field(embed, "Commands (most used)") == "none yet"
    assert render.duration(3725) == "1 h 2 min" and render.duration(2 * 86400 + 7200) == "2 d 2 h"


async def test_health_counts_the_state_changes_of_the_last_7_days(orch, project):
    """Transition frequency comes from status.json's history (no second record in the bot)."""
    await orch.create_epic(project, "Checkout", by="alice")  # IDLE -> BACKLOG_READY
    [before] = (await orch.health()).projects
    assert before.transitions_last_7_days == 1
    path = orch.registry.get(project).path / ".orch-state" / "status.json"
    status = json.loads(path.read_text())
    status["history"][0]["at"] = (utcnow() - timedelta(days=8)).isoformat()
    path.write_text(json.dumps(status))
    [after] = (await orch.health()).projects
    assert after.ok and after.transitions_last_7_days == 0
