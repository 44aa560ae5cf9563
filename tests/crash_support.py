"""Kill a real command with SIGKILL at every write step, the way dpkg and SQLite are tested.

`kill_everywhere(scenario)` runs the scenario's command under `strace -f -e inject=SYSCALL:signal=KILL:
when=N` for each state-changing system call and every N until a run finishes without being killed. The
kill lands on entry to the call, so the call itself never happens: "just before" that step and, since
every rename and unlink we make is followed by an fsync of its directory (or another step), "just after"
the one before it. Each run starts from a fresh copy of the scenario's baseline; after each kill the
scenario checks the crashed tree (every file old or new) and then runs the next ordinary command and
checks that it succeeds and leaves a consistent state. Runs go two at a time (two cores).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

STRACE = shutil.which("strace")
# rename/renameat2: atomic replaces and directory swaps; unlink/unlinkat/rmdir: removals (rmtree uses
# unlinkat); mkdir: staging and journal folders; fsync: the flush after each write and each rename.
SYSCALLS = ("rename", "renameat2", "unlink", "unlinkat", "rmdir", "mkdir", "fsync")
PYTHON = sys.executable


@dataclass
class Outcome:
    syscall: str
    n: int
    violations: list[str]


@dataclass
class Report:
    kills: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        return [f"{o.syscall}#{o.n}: {v}" for o in self.outcomes for v in o.violations]


@dataclass
class Scenario:
    """`prepare(workdir)` builds the baseline in an empty folder and returns the command to kill (argv,
    cwd, env); `after_kill(workdir)` returns violations of the crashed state, then of the next command."""

    name: str
    prepare: Callable[[Path], tuple[list[str], Path, dict[str, str]]]
    after_kill: Callable[[Path], list[str]]
    syscalls: Sequence[str] = SYSCALLS
    # False: only the command's own process is traced and killed, not the programs it starts (a fake
    # systemctl and its services would otherwise die at their own N-th call too: strace counts per process).
    follow_forks: bool = True


def _one(scenario: Scenario, base: Path, syscall: str, n: int) -> tuple[bool, Outcome | None]:
    work = base / f"{syscall}-{n}"
    work.mkdir(parents=True)
    argv, cwd, env = scenario.prepare(work)
    log = work / "strace.log"
    done = subprocess.run(
        [STRACE or "strace", *(["-f"] if scenario.follow_forks else []), "-qq", "-o", str(log),
         "-e", f"trace={syscall}", "-e", f"inject={syscall}:signal=KILL:when={n}", *argv],
        cwd=cwd, env=env, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    killed = "killed by SIGKILL" in log.read_text(errors="replace")
    if not killed:
        if done.returncode != 0:
            return False, Outcome(syscall, n, [f"the unkilled run failed ({done.returncode}): {done.stderr!r}"])
        shutil.rmtree(work, ignore_errors=True)
        return False, None
    outcome = Outcome(syscall, n, scenario.after_kill(work))
    if not outcome.violations:
        shutil.rmtree(work, ignore_errors=True)
    return True, outcome


def kill_everywhere(scenario: Scenario, base: Path, *, workers: int = 2) -> Report:
    """Kill the scenario's command at every step of every syscall kind; returns the kills and findings."""
    report = Report()
    for syscall in scenario.syscalls:
        n = 1
        finished = False
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while not finished:
                batch = [pool.submit(_one, scenario, base, syscall, n + i) for i in range(workers)]
                for future in batch:
                    killed, outcome = future.result()
                    if killed:
                        report.kills += 1
                    else:
                        finished = True
                    if outcome is not None:
                        report.outcomes.append(outcome)
                n += workers
                if n > 400:
                    report.outcomes.append(Outcome(syscall, n, ["more than 400 steps: runaway?"]))
                    break
    return report


def leftovers(*roots: Path) -> list[str]:
    """Temp files, staging folders and journal records that a finished recovery must not leave."""
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in (".git", "__pycache__", "venv")]
            for name in filenames + dirnames:
                if name.endswith(".tmp") or ".rollback-" in name or name.endswith(".swap"):
                    found.append(str(Path(dirpath, name).relative_to(root)))
        journal = root / "journal"
        if journal.is_dir() and any(journal.iterdir()):
            found.append(f"journal not empty: {sorted(p.name for p in journal.iterdir())}")
    return found


def run(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
