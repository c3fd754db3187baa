"""docs/cli.md's walk-through is what the product prints: every ```console block of the page, run in order by a
shell with the INSTALLED `orch` first on its PATH, in a fresh home whose ~/projects/shop is a real git repository,
and compared line by line (dates, times and commit hashes normalised; the home shown as ~).

After a change of wording, `ORCH_UPDATE_DOCS=1 pytest tests/orchestration/test_docs_walkthrough.py` writes what the
product prints now into the page (then read the diff before committing it)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import git

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
BLOCK = re.compile(r"^```console\n(.*?)^```\n", re.S | re.M)
VARIABLE = [(re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<date>"), (re.compile(r"\b\d{2}:\d{2}(:\d{2})?\b"), "<time>"),
            (re.compile(r"\b[0-9a-f]{7,40}\b"), "<sha>")]


def steps(block: str) -> list[tuple[str, str]]:
    """A console block -> [(command, its expected output)]: a line "$ command", then what it prints."""
    found: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        else:
            assert found, f"output before any command in docs/cli.md: {line!r}"
            found[-1][1].append(line)
    return [(command, "\n".join(out)) for command, out in found]


def normalised(text: str) -> str:
    for pattern, placeholder in VARIABLE:
        text = pattern.sub(placeholder, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def test_the_documented_cli_walkthrough_prints_what_the_page_says(tmp_path):
    home = tmp_path / "home"
    repo = home / "projects" / "shop"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# shop\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "first commit")
    config = home / "config.toml"
    config.write_text(f'[orchestrator]\ndata_dir = "{home / "data"}"\nallowed_roots = ["{home / "projects"}"]\n'
                      'commit_batch_ms = 20\n', encoding="utf-8")
    installed = Path(sys.executable).parent
    assert (installed / "orch").exists(), "pip install -e . installs the orch console script"
    env = {"PATH": f"{installed}{os.pathsep}{os.environ['PATH']}", "HOME": str(home), "USER": "alice",
           "LOGNAME": "alice", "ORCH_CONFIG": str(config), "LANG": "C.UTF-8", "COLUMNS": "120",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}

    page = DOC.read_text(encoding="utf-8")
    blocks = BLOCK.findall(page)
    assert len(blocks) >= 3, "docs/cli.md holds its walk-through in ```console blocks"
    ran, updated = 0, page
    for block in blocks:
        printed = []
        for command, expected in steps(block):
            done = subprocess.run(["bash", "-c", command], cwd=home, env=env, capture_output=True, text=True,
                                  timeout=60)
            actual = (done.stdout + done.stderr).replace(str(home), "~").rstrip("\n")
            if not os.environ.get("ORCH_UPDATE_DOCS"):
                assert normalised(actual) == normalised(expected), f"docs/cli.md: $ {command}"
            printed.append(f"$ {command}\n" + (actual + "\n" if actual else ""))
            ran += 1
        updated = updated.replace(f"```console\n{block}```", "```console\n" + "".join(printed) + "```", 1)
    assert ran >= 10
    if os.environ.get("ORCH_UPDATE_DOCS"):
        DOC.write_text(updated, encoding="utf-8")
