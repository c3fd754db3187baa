"""`orch plan ...`: planning an epic from a terminal, with a real planner process (fixtures/planner.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestration.cli import main
from tests.conftest import backlog_json
from tests.orchestration.agents.conftest import PLANNER


@pytest.fixture
def orch_cli(tmp_path: Path, projects_root: Path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[orchestrator]\ndata_dir = "data"\nallowed_roots = ["{projects_root}"]\n'
                   'commit_author = "Orch Test <orch@test>"\ncommit_batch_ms = 20\n'
                   f'[agents]\nplanner_command = {json.dumps([*PLANNER, "plan"])}\ntimeout_s = 10\n', encoding="utf-8")

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--config", str(cfg), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_plan_approve_some_request_changes_and_reject_from_the_terminal(orch_cli, make_repo):
    repo = make_repo("shop")
    assert orch_cli("project", "register", str(repo))[0] == 0
    assert orch_cli("epic", "Shop")[0] == 0

    code, out, err = orch_cli("plan", "start", "E-1", "--wait")
    assert code == 0, err
    assert 'Plan of E-1 "Shop", version 1: proposed.' in out and "Plan for Shop." in out
    assert "  P-3 [proposed] Checkout (low, 8 points, after P-2) · Phase 2: buy" in out
    assert "orch plan approve E-1 [P-1,P-2|all]" in out

    code, out, err = orch_cli("plan", "approve", "E-1", "P-1,P-3")
    assert code == 0, err
    assert "Stories: P-1 -> S-1, P-3 -> S-2." in out
    assert "Dependencies dropped (on proposals not approved): P-3 -> P-2." in out
    assert "State: BACKLOG_READY." in out

    code, _, err = orch_cli("plan", "approve", "E-1")
    assert code == 1 and "approved already, by" in err and err.count("\n") == 1

    code, out, err = orch_cli("plan", "request-changes", "E-1", "Use PayPal", "--wait")
    assert code == 0, err
    assert "version 2: proposed." in out and "Checkout with PayPal" in out
    code, out, err = orch_cli("plan", "reject", "E-1")
    assert code == 0 and "version 2: rejected." in out

    assert orch_cli("epic", "Admin")[0] == 0
    code, out, err = orch_cli("plan", "start", "E-2")  # no --wait: the process running the agents takes it
    assert code == 0 and "version 1: requested." in out and "orch plan show E-2" in out
    backlog = backlog_json(repo)
    assert [s["title"] for s in backlog["stories"]] == ["Product list", "Checkout"]
