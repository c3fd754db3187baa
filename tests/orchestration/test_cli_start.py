"""`orch` imports what its command needs: Discord, Pillow, Celery, GitPython and the agents' modules only where
they are used, so the everyday commands start fast. (How fast is for `python -m bench` to say, not a test.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.cli import main

# Third-party packages no everyday command needs (the bot, burndown charts, the Celery runner, git objects).
HEAVY = ["discord", "PIL", "celery", "kombu", "redis", "git", "simcord"]
# Of the agents' package, only the attempt records a story's log shows (results.StoryLog).
AGENTS_NEEDED = {"orchestration.agents", "orchestration.agents.records"}
SCRIPT = """
import json, sys
from orchestration.cli import main
code = main(sys.argv[1:]) if len(sys.argv) > 1 else 0
loaded = [m for m in sys.modules if m.split(".")[0] in {heavy} or m.startswith("orchestration.agents")]
print(json.dumps({{"code": code, "loaded": sorted(loaded)}}))
""".format(heavy=HEAVY)


def loaded_by(*argv: str) -> list[str]:
    """The heavy or agent modules a fresh process has imported once `orch ARGV` ends (no ARGV: the import)."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, check=True).stdout
    report = json.loads(out.splitlines()[-1])
    assert report["code"] == 0, out
    return report["loaded"]


@pytest.mark.parametrize("argv", [[], ["state"], ["backlog"], ["backlog", "add-story", "--epic", "E-1", "More"],
                                  ["sprint", "plan"], ["sprint", "status"]])
def test_everyday_commands_import_no_heavy_module(cfg: Path, make_repo, capsys, argv: list[str]):
    repo = make_repo("shop")
    for setup in (["project", "register", str(repo)], ["epic", "Checkout"],
                  ["backlog", "add-story", "--epic", "E-1", "Cart"]):
        assert main(["--config", str(cfg), *setup]) == 0, capsys.readouterr().err
    if argv == ["sprint", "status"]:
        assert main(["--config", str(cfg), "sprint", "plan"]) == 0

    loaded = loaded_by(*(["--config", str(cfg), *argv] if argv else []))
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    assert set(loaded) <= AGENTS_NEEDED, sorted(set(loaded) - AGENTS_NEEDED)
