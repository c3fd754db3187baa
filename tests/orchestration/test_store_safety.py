"""The state files under attack and bad luck: one damaged project never stops the others."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestration.cli import main
from orchestration.errors import StateCorrupt
from orchestration.service import Orchestrator


@pytest.fixture
def orch_cli(tmp_path: Path, projects_root: Path, capsys):
    """orch_cli("epic", "Title") -> (exit code, stdout, stderr)."""
    cfg = tmp_path / "cli-config.toml"
    cfg.write_text(f'[orchestrator]\ndata_dir = "cli-data"\nallowed_roots = ["{projects_root}"]\n'
                   'commit_author = "Orch Test <orch@test>"\ncommit_batch_ms = 20\n', encoding="utf-8")

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--config", str(cfg), *argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


# -- item 6: one damaged project never stops the others ---------------------------------------------------------

DEEP = '{"schema_version": 1, "project": "demo", "tickets": ' + "[" * 100_000 + "]" * 100_000 + "}"
HUGE = '{"schema_version": 1, "project": "demo", "next_story": ' + "9" * 5000 + "}"


@pytest.mark.parametrize("rel,content,problem", [("tickets.json", DEEP, "nested"),
                                                 ("backlog.json", HUGE, "5000 digits")])
async def test_absurd_nesting_or_numbers_are_a_damaged_file(orch: Orchestrator, project: str, rel, content, problem):
    (orch.project(project).store.dir / rel).write_text(content)
    read = orch.list_tickets(project) if rel == "tickets.json" else orch.view_backlog(project)
    with pytest.raises(StateCorrupt) as err:
        await read
    assert err.value.file == f".orch-state/{rel}" and problem in err.value.problem
    assert "git checkout -- " in err.value.how_to_recover


async def test_a_damaged_registry_nested_too_deeply_is_a_clear_error(orch: Orchestrator, config):
    config.orchestrator.data_dir.mkdir(parents=True)
    orch.registry.file.write_text('{"projects": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(StateCorrupt, match="registry.json"):
        await orch.list_projects()


async def test_one_damaged_project_leaves_health_list_and_hand_off_to_the_others(orch: Orchestrator, make_repo):
    for name in ("broken", "naive", "fine"):
        await orch.register_project(str(make_repo(name)), by="admin", channel_id=len(name))
        await orch.open_ticket(name, "Which colour?", by="agent")
    (orch.project("broken").store.dir / "tickets.json").write_text(DEEP)
    # A hand edit that validates but breaks a comparison later (a timestamp without a time zone): an error
    # nobody foresaw while reading that project must stay that project's problem too.
    status = orch.project("naive").store.dir / "status.json"
    data = json.loads(status.read_text())
    data["history"] = [{"command": "epic", "source": "IDLE", "dest": "IDLE", "by": "x", "at": "2026-01-01T00:00:00"}]
    status.write_text(json.dumps(data))

    health = await orch.health()
    by_name = {p.name: p for p in health.projects}
    assert not health.ok and by_name["fine"].ok
    assert not by_name["broken"].ok and "nested" in by_name["broken"].problems[0]
    assert not by_name["naive"].ok and "unexpected" in by_name["naive"].problems[0]
    assert {p.name for p in await orch.list_projects()} == {"broken", "naive", "fine"}
    assert ("fine", "TK-1") in [(p, t.id) for p, t in await orch.tickets_awaiting_thread()]


def test_cli_health_reports_the_damaged_project_and_the_others(orch_cli, projects_root, make_repo):
    for name in ("broken", "fine"):
        assert orch_cli("project", "register", str(make_repo(name)))[0] == 0
    (projects_root / "broken/.orch-state/backlog.json").write_text(HUGE)
    code, out, _ = orch_cli("health")
    assert code == 1 and "FAIL broken" in out and "5000 digits" in out and "OK   fine" in out
