"""What the benchmark measures besides wall time: percentiles, memory, child processes, repository size, and
when commits appear (a poller in a process of its own, so that it takes nothing from the measured one)."""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false",
       "-c", "core.hooksPath=/dev/null"]
ROOT = str(Path(__file__).resolve().parent.parent)  # this checkout: the benchmark's subprocesses run from it
POLL_S = 0.005  # how often the poller looks at each repository's HEAD
STORY = re.compile(rb'"S-(\d+)"')


def pct(samples: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of samples."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM of its own address space (ru_maxrss would include the
    parent's at fork time, which Linux keeps across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children() -> list[str]:
    """The names of the live child processes of this process, from /proc."""
    pid = os.getpid()
    names = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        comm, _, rest = stat.partition(" (")[2].rpartition(") ")
        if int(rest.split()[1]) == pid:
            names.append(comm)
    return names


def git_children() -> int:
    return sum(1 for name in children() if name.startswith("git"))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(GIT + list(args), cwd=repo, capture_output=True, text=True, check=True).stdout


def commit_count(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def git_dir_bytes(repo: Path) -> int:
    """The size of .git after `git gc` (what the repository costs on disk and in every clone)."""
    git(repo, "gc", "--quiet")
    total = 0
    for folder, _, files in os.walk(repo / ".git"):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


def head_of(git_dir: Path) -> str | None:
    """The commit HEAD names, read from the files (no git process): None before the first commit."""
    try:
        head = (git_dir / "HEAD").read_text().strip()
        return (git_dir / head[5:]).read_text().strip() if head.startswith("ref: ") else head
    except FileNotFoundError:
        return None


class CommitWatch:
    """Notes when each new commit of the given repositories appears, from a process of its own."""

    def __init__(self, repos: list[Path], out: Path) -> None:
        self.repos, self.out = repos, out
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.probes", str(out), *map(str, repos)], cwd=ROOT)
        while not out.exists() or not out.read_text():  # the poller has read every HEAD once
            time.sleep(POLL_S)

    def stop(self) -> dict[Path, list[tuple[float, str]]]:
        """(time.monotonic() when seen, commit) for each repository, oldest first."""
        time.sleep(3 * POLL_S)
        self.proc.terminate()
        self.proc.wait()
        seen: dict[Path, list[tuple[float, str]]] = {repo: [] for repo in self.repos}
        for line in self.out.read_text().splitlines()[1:]:
            at, index, sha = line.split()
            seen[self.repos[int(index)]].append((float(at), sha))
        return seen


def story_lags(repo: Path, replies: dict[int, float], seen: list[tuple[float, str]]) -> list[float]:
    """Commit lag of each add_story: from its reply (time.monotonic()) until the first commit seen whose
    .orch-state holds its story (found by its ID, "S-<n>", in any file: whatever the layout). Stories are
    numbered in the order they were added, and commits keep that order, so a commit holding S-n holds every
    earlier story too."""
    pending = sorted(replies)
    lags: list[float] = []
    for at, sha in seen:
        out = subprocess.run(GIT + ["grep", "-h", "-o", "-E", '"S-[0-9]+"', sha, "--", ".orch-state"], cwd=repo,
                             capture_output=True, check=False).stdout
        top = max((int(n) for n in STORY.findall(out)), default=0)
        while pending and pending[0] <= top:
            lags.append(max(0.0, at - replies[pending.pop(0)]))
    return lags


def _poll(out: Path, repos: list[Path]) -> None:
    """The poller: one line per new HEAD, "monotonic_time repo_index sha"; a first line once started."""
    git_dirs = [repo / ".git" for repo in repos]
    last = [head_of(d) for d in git_dirs]
    with open(out, "w") as fh:
        fh.write("started\n")
        fh.flush()
        while True:
            for i, git_dir in enumerate(git_dirs):
                sha = head_of(git_dir)
                if sha is not None and sha != last[i]:
                    last[i] = sha
                    fh.write(f"{time.monotonic()} {i} {sha}\n")
                    fh.flush()
            time.sleep(POLL_S)


if __name__ == "__main__":
    _poll(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
