"""Coding agents do a sprint's stories (one agent process per attempt, in a git worktree of its own), and a
planning agent breaks epics into proposed stories.

The modules, from the outside in (docs/agents.md has the protocol, the policy and where things live):
- protocol.py  the JSON an agent reads (CodeInput) and answers (Reply, parse_reply), version 1
- runner.py    the interface the orchestrator calls: AttemptSpec in, AttemptOutcome out, Runner
- runners.py   make_runner: the runner [agents] runner names
- local.py     LocalRunner: attempts as local subprocesses, at most max_parallel at once (the default)
- celery_runner.py  CeleryRunner: attempts sent to `orch worker`s through a Celery broker (Redis)
- worker.py    the worker's side: clone, worktree, run_attempt, push the story branch back
- attempt.py   run_attempt: one attempt end to end (process, reply, commit, tests, policy)
- worktree.py  Worktrees: sprint and story branches, story worktrees under data_dir, --no-ff merges, prune
- policy.py    the agent's environment, secret scrubbing, the checks after an attempt (and after a plan run)
- planning.py  planning an epic: .orch-state/plans/, the rules of requesting, approving, rejecting a plan
- planner.py   run_plan (one planner process in a read-only checkout) and Planner (the runs of this process)

The seam: the orchestrator (service, scheduler) decides what runs, prepares the worktree, builds an
AttemptSpec, submits it to a Runner and applies the AttemptOutcome to .orch-state/ itself. Nothing here
writes .orch-state/ or imports discord; worktree and policy calls block (git): run them in worker threads.
"""
