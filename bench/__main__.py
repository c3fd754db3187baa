"""`python -m bench`: the orchestrator's speed and memory on this machine, each figure beside its floor.

Drives the public Orchestrator API (and the `orch` CLI, for its start time) over real git repositories in a
temporary folder and prints one markdown table (docs/benchmark.md explains every row):

    python -m bench                                 # defaults: 1,000 stories, 10 projects; under two minutes
    python -m bench --stories 10000                 # the issue's scale
    python -m bench --json                          # the same figures as JSON
    python -m bench --bot [--stories N]             # the Discord front-end through SimCord (bench/bench_bot.py)

Not a test: nothing here asserts; the figures are to be read against the targets (issue 11).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

DEFINITIONS = [
    "p50/p95/p99/max: wall time of one awaited Orchestrator call (its reply), over n calls.",
    "floor W: one orchestration.store.atomic_write (temp file, fsync, rename, fsync folder) of a 1 KB file, "
    "and of a file the size of backlog.json at the end; F: W + `git add` + `git commit` of that file; "
    "R: reading a 1 KB file and json.loads of it; python: `python -c pass`. p50 ÷ floor: the row's p50 over "
    "the floor's p50, all measured in this run.",
    "commit lag: from a command's reply until a commit of the project's repository holding its change exists "
    "(HEAD polled every 5 ms by a separate process; a commit holds add_story's story when its .orch-state "
    "names the story's ID).",
    "commits per command: new commits in the repository over the commands of the run.",
    "repository growth per command: bytes of .git after `git gc`, after the run minus before, over its commands.",
    "throughput: add_story calls back to back, commands over wall time; the projects at once are driven "
    "concurrently from one event loop in one process, each as many calls as the one project.",
    "peak RSS: VmHWM of a process of its own (so peaks do not mix): serving the big project (reads, 20 "
    "add_story, 20 prioritize_story, a plan), or start() + state() of every idle project; live git children: "
    "child processes named git* of that process (or of the benchmark's), 1 s after its last command.",
    "CLI: wall time of whole processes, after a warm-up run, bytecode caching on (as an installed `orch`).",
]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stories", "-n", type=int, default=1000, help="stories in the big project (default 1000)")
    parser.add_argument("--projects", "-p", type=int, default=10, help="projects driven at once (default 10)")
    parser.add_argument("--per-project", type=int, default=100,
                        help="add_story calls per project in the throughput runs (default 100)")
    parser.add_argument("--reads", type=int, default=200,
                        help="calls of each read and one-story change at N stories (default 200)")
    parser.add_argument("--idle", type=int, default=200, help="registered projects of the idle probe (default 200)")
    parser.add_argument("--batch-ms", type=int, default=250, help="commit_batch_ms of the config (default 250)")
    parser.add_argument("--cli-runs", type=int, default=7, help="runs of each CLI measure (default 7)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the markdown table")
    parser.add_argument("--bot", action="store_true", help="benchmark the Discord bot instead (bench/bench_bot.py)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # the benchmark's own subprocesses
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.probe:
        from .core import probe
        print(json.dumps(probe(args.probe, args.config, args.project)))
        return 0
    if args.bot:
        from .bench_bot import main as bot_main
        bot_main(args.stories)
        return 0

    from .core import Bench, table
    work = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    started = time.perf_counter()
    try:
        bench = Bench(work, args.stories, args.projects, args.per_project, args.reads, args.idle, args.batch_ms,
                      args.cli_runs)
        bench.run()
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    took = time.perf_counter() - started
    meta = (f"`python -m bench --stories {args.stories} --projects {args.projects}` on "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} "
            f"at the end, Python {platform.python_version()}, commit_batch_ms {args.batch_ms}; took {took:.0f} s")
    if args.json:
        print(json.dumps({"meta": meta, "notes": bench.notes, "definitions": DEFINITIONS,
                          "rows": [row.cells() | {"samples_ms": [round(s * 1000, 3) for s in row.samples]}
                                   for row in bench.rows]}, indent=1, ensure_ascii=False))
    else:
        print(table(bench, meta))
        print()
        print("\n".join(f"- {d}" for d in DEFINITIONS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
