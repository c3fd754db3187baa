"""What an agent may do, enforced: its environment, the checks after an attempt, and secrets kept out.

- Environment: an agent gets PATH, HOME and LANG, the task variables (ORCH_PROJECT, ORCH_STORY, ...) and the
  variables named in the config's `env`; nothing else of the bot's environment, never DISCORD_TOKEN.
- Secrets: the values of the bot's secrets (DISCORD_TOKEN and every variable named like a secret) are
  replaced by *** in everything the agent printed before it is logged or stored (`Scrubber`), and a story
  whose files or commits hold one is refused (it would leak through git).
- After an attempt (`check_attempt`, with a `snapshot` taken before it), the attempt is refused with a reason
  ("policy") when:
  - its branch or its worktree touches .orch-state/ (only the orchestrator writes there);
  - a ref other than its own branch moved in a way only the agent explains: deleted, now holding the story's
    commits, or (except other stories' branches, which the orchestrator resets) rewound;
  - the user's checked-out branch, index or working tree (outside .orch-state/, which the orchestrator
    commits meanwhile) changed, or the repository's config or hooks changed.
  Limits: the agent runs as the bot's user, so a determined one can still read what that user can (e.g.
  /proc/<bot pid>/environ) and write outside its worktree where no check looks (other folders); run the bot
  as a user of its own, or its agents in containers, when agents are not trusted.

Everything here blocks (git): call it from a worker thread.
"""
from __future__ import annotations

import codecs
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ..config import BOT_SECRETS, SECRET_NAME
from ..store import STATE_DIR
from .protocol import CodeInput, PlanInput
from .worktree import run_git

BASE_ENV = ("PATH", "HOME", "LANG")
MIN_SECRET_LEN = 8  # shorter values ("1", "true") are not worth replacing everywhere
MASK = "***"


# -- environment -----------------------------------------------------------------------------------------------
def task_vars(task: CodeInput | PlanInput) -> dict[str, str]:
    if isinstance(task, PlanInput):
        return {"ORCH_PROJECT": task.project, "ORCH_EPIC": task.epic.id, "ORCH_WORKDIR": task.workdir,
                "ORCH_ROLE": task.role}
    return {"ORCH_PROJECT": task.project, "ORCH_SPRINT": task.sprint, "ORCH_STORY": task.story.id,
            "ORCH_ATTEMPT": str(task.attempt), "ORCH_WORKDIR": task.workdir, "ORCH_BRANCH": task.branch,
            "ORCH_ROLE": task.role}


def agent_env(pass_names: Iterable[str], task: Mapping[str, str],
              environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The whole environment of an agent process (and of its test run): the allowlist, nothing more."""
    env = {name: environ[name] for name in (*BASE_ENV, *pass_names)
           if name in environ and name not in BOT_SECRETS}
    env.update(task)
    return env


# -- secrets ---------------------------------------------------------------------------------------------------
def secret_values(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The values to keep out of logs, records and commits; longest first, so a secret that contains another
    is replaced whole."""
    values = {value.strip() for name, value in environ.items()
              if name in BOT_SECRETS or SECRET_NAME.search(name)}
    return sorted((v for v in values if len(v) >= MIN_SECRET_LEN and "\n" not in v), key=len, reverse=True)


class Scrubber:
    """Replaces secret values by ***. `scrub(text)` for a whole text; `feed(chunk)`/`end()` for a stream of
    bytes, where a secret may be cut between two chunks: the last few characters wait for the next chunk."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if s]
        self._hold = max((len(s) for s in self.secrets), default=1) - 1
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def feed(self, chunk: bytes) -> str:
        text = self.scrub(self._pending + self._decoder.decode(chunk))
        cut = max(len(text) - self._hold, 0)
        out, self._pending = text[:cut], text[cut:]
        return out

    def end(self) -> str:
        out, self._pending = self.scrub(self._pending + self._decoder.decode(b"", final=True)), ""
        return out


# -- snapshots and checks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """What an agent must not change in the user's repository, taken before and after an attempt."""
    refs: dict[str, str]  # every ref -> the object it points at
    head: str  # the user's checked-out branch (refs/heads/...), or the commit of a detached HEAD
    index: frozenset[tuple[str, str]]  # (path, "mode object stage") of the user's index outside .orch-state
    tree: frozenset[tuple[str, str]]  # (path, "status size mtime") of changed/untracked files outside it
    admin: str  # a hash of the repository's config and hooks


def snapshot(repo: Path, env: dict[str, str]) -> Snapshot:
    git = lambda *args: run_git(repo, *args, env=env).stdout  # noqa: E731
    refs = dict(reversed(line.split(" ", 1)) for line in
                git("for-each-ref", "--format=%(objectname) %(refname)").splitlines())
    head = run_git(repo, "symbolic-ref", "--quiet", "HEAD", env=env, check=False).stdout.strip()
    head = head or git("rev-parse", "--verify", "--quiet", "HEAD").strip()
    index = frozenset((path, entry) for entry, _, path in
                      (e.partition("\t") for e in git("ls-files", "--stage", "-z").split("\0") if e)
                      if not _in_state(path))
    tree = set()
    for entry in git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames").split("\0"):
        path = entry[3:]
        if entry and not _in_state(path):
            try:
                st = (repo / path).lstat()
                tree.add((path, f"{entry[:2]} {st.st_size} {st.st_mtime_ns}"))
            except FileNotFoundError:
                tree.add((path, entry[:2]))
    common = Path(repo, git("rev-parse", "--git-common-dir").strip())
    return Snapshot(refs, head, index, frozenset(tree), _admin_hash(common))


def check_worktree(workdir: Path, base: str, secrets: list[str], env: dict[str, str]) -> str | None:
    """Before the orchestrator commits what the agent left: nothing under .orch-state/ (ignored files too)
    and no secret value in the files the story changed. The reason, or None."""
    wt = lambda *args: run_git(workdir, *args, env=env).stdout  # noqa: E731
    touched = wt("status", "--porcelain", "--ignored", "--untracked-files=all", "--", STATE_DIR).split("\n")
    if touched := [line[3:] for line in touched if line]:
        return f"the agent wrote {STATE_DIR}/ ({_names(touched)}), which only the orchestrator writes"
    fork = wt("merge-base", base, "HEAD").strip()  # the sprint branch may have moved on meanwhile
    changed = {*wt("diff", "--name-only", "-z", fork).split("\0"),
               *wt("ls-files", "--others", "--exclude-standard", "-z").split("\0")} - {""}
    if secrets and (found := [rel for rel in sorted(changed) if _holds_secret(workdir / rel, secrets)]):
        return f"the story's files hold a secret of the bot ({_names(found)})"
    return None


def check_attempt(repo: Path, before: Snapshot, *, workdir: Path, branch: str, base: str, secrets: list[str],
                  env: dict[str, str]) -> str | None:
    """After an attempt: the first policy breach found, as a reason a person reads, or None.
    `branch` is the story's branch, `base` the sprint branch it was made from."""
    wt = lambda *args: run_git(workdir, *args, env=env).stdout  # noqa: E731
    if state := [p for p in wt("diff", "--name-only", f"{base}...{branch}", "--", STATE_DIR).split("\n") if p]:
        return f"the story's branch changes {STATE_DIR}/ ({_names(state)}), which only the orchestrator writes"
    if reason := check_worktree(workdir, base, secrets, env):
        return reason
    if secrets and (where := _secret_in_history(wt("log", "-p", "--format=", f"{base}..{branch}"), secrets)):
        return f"the story's commits hold a secret of the bot ({where})"
    if secrets and (messages := wt("log", "--format=%B", f"{base}..{branch}")) and any(s in messages for s in secrets):
        return "a commit message of the story holds a secret of the bot"
    after = snapshot(repo, env)
    if moved := _moved_refs(repo, before.refs, after.refs, branch, base, env):
        ref, reason = moved
        return f"{reason} ({_put_back(repo, ref, before.refs.get(ref), after.refs.get(ref), env)})"
    if before.head != after.head:
        return f"the checked-out HEAD of the project changed ({_short(before.head)} -> {_short(after.head)})"
    if before.index != after.index:
        return f"the project's index changed ({_names(_paths(before.index, after.index))})"
    if before.tree != after.tree:
        return f"files in the project's working tree changed ({_names(_paths(before.tree, after.tree))})"
    if before.admin != after.admin:
        return "the repository's git config or hooks changed"
    return None


def check_read_only(repo: Path, before: Snapshot, *, workdir: Path, head: str, env: dict[str, str]) -> str | None:
    """After a run in a read-only worktree (a plan): the first change it made, as a reason, or None. A ref it
    moved is put back first, as after a story's attempt."""
    after = snapshot(repo, env)
    for ref in sorted(before.refs.keys() | after.refs.keys()):
        old, now = before.refs.get(ref), after.refs.get(ref)
        if old == now or ref.startswith("refs/heads/orch/"):  # the agents' own branches move meanwhile
            continue
        # A ref moved forward by commits of .orch-state/ alone is the orchestrator (or a person) at work.
        forward = old and now and run_git(repo, "merge-base", "--is-ancestor", old, now, env=env,
                                          check=False).returncode == 0
        if not forward or run_git(repo, "diff", "--name-only", old, now, "--", ".", f":!{STATE_DIR}", env=env).stdout:
            return f"it moved {_short(ref)} ({_put_back(repo, ref, old, now, env)})"
    if changed := run_git(workdir, "status", "--porcelain", "--untracked-files=all", env=env).stdout.splitlines():
        return f"it changed files in its read-only checkout ({_names([line[3:] for line in changed])})"
    if (now := run_git(workdir, "rev-parse", "HEAD", env=env).stdout.strip()) != head:
        return f"it committed in its read-only checkout ({_short(head)} -> {_short(now)})"
    if (before.head, before.index, before.tree, before.admin) != (after.head, after.index, after.tree, after.admin):
        return "it changed the project's checkout, index, working tree, git config or hooks"
    return None


def _put_back(repo: Path, ref: str, old: str | None, now: str | None, env: dict[str, str]) -> str:
    """Undo what an agent did to a ref (only if it still points where the agent left it): the user's branch
    is back where it was, whatever the agent did to it."""
    if old is None:
        args = ["update-ref", "-d", ref, now or ""]
    else:
        args = ["update-ref", ref, old, now or ""]  # now "" = the ref must not exist (the agent deleted it)
    done = run_git(repo, *args, env=env, check=False)
    return "put back where it was" if done.returncode == 0 else "it moved again meanwhile: check it"


def _moved_refs(repo: Path, before: dict[str, str], after: dict[str, str], branch: str, base: str,
                env: dict[str, str]) -> tuple[str, str] | None:
    """The first ref other than the story's own that the attempt moved wrongly, with the reason."""
    own = f"refs/heads/{branch}"
    changed = sorted(r for r in before.keys() | after.keys() if r != own and before.get(r) != after.get(r))
    if not changed:
        return None
    # The story's own new commits, oldest first: a ref holding any of them holds one of these roots.
    lines = run_git(repo, "rev-list", "--parents", f"{base}..{own}", env=env).stdout.split("\n")
    new = {line.split()[0]: line.split()[1:] for line in lines if line}
    roots = [c for c, parents in new.items() if not any(p in new for p in parents)]
    is_ancestor = lambda a, b: run_git(repo, "merge-base", "--is-ancestor", a, b, env=env,  # noqa: E731
                                       check=False).returncode == 0
    for ref in changed:
        old, now = before.get(ref), after.get(ref)
        if now is None:
            return ref, f"{_short(ref)} was deleted during the attempt"
        if any(is_ancestor(root, now) for root in roots):
            return ref, f"{_short(ref)} was moved onto the story's commits"
        if old and not ref.startswith("refs/heads/orch/S-") and not is_ancestor(old, now):
            return ref, f"{_short(ref)} was moved back or rewritten during the attempt"
    return None


SECRET_FILE_MAX = 10 * 1024 * 1024  # larger files are not searched for secrets


def _holds_secret(path: Path, secrets: list[str]) -> bool:
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > SECRET_FILE_MAX:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    return any(s.encode() in data for s in secrets)


def _secret_in_history(diffs: str, secrets: list[str]) -> str | None:
    """The file whose diff (in `git log -p --format=` output) shows a secret, or None."""
    where = "?"
    for line in diffs.splitlines():
        if line.startswith("diff --git "):
            where = line.rsplit(" b/", 1)[-1]
        elif any(s in line for s in secrets):
            return where
    return None


def _admin_hash(common_dir: Path) -> str:
    h = hashlib.sha256()
    for path in [common_dir / "config", *sorted((common_dir / "hooks").glob("*"))]:
        try:
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:
            h.update(path.name.encode() + b"\0-\0")
    return h.hexdigest()


def _in_state(path: str) -> bool:
    return path == STATE_DIR or path.startswith(STATE_DIR + "/")


def _paths(before: frozenset[tuple[str, str]], after: frozenset[tuple[str, str]]) -> list[str]:
    return sorted({path for path, _ in before ^ after})


def _short(ref: str) -> str:
    return ref.removeprefix("refs/heads/")


def _names(paths: list[str], limit: int = 3) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
