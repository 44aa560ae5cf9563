"""`index.py pull` killed with SIGKILL at every write step (strace fault injection, git's own children
included): afterwards the checkout is at the old or the new commit, never a mix, once the next ordinary
command has run; that command succeeds and a second pull completes the move."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from crash_support import PYTHON, STRACE, Scenario, kill_everywhere, leftovers, run
from git_support import MODULE, Repo, repo_fixture, rollback_template_fixture  # noqa: F401
from signing_support import Signed, keys_fixture, signed_fixture  # noqa: F401
from updates.utils.vcs.signing import code_fields

pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace)")


def test_pull_killed_at_every_step(signed: Signed, tmp_path: Path) -> None:
    signed.server.set_entry(args={"host": "setting"})
    old = signed.server.git("rev-parse", "HEAD")
    new = signed.commit("demo 2.0.0", version="2.0.0")
    template = signed.server.root
    argv = [PYTHON, "index.py", "pull"]

    def env(root: Path) -> dict[str, str]:
        return {**signed.env(), "UPDATES_STATE_DIR": str(root / "state")}

    def prepare(work: Path) -> tuple[list[str], Path, dict[str, str]]:
        root = work / "updates"
        shutil.copytree(template, root, symlinks=True)
        return argv, root, env(root)

    def consistent(root: Path, when: str, *, pulled: bool) -> list[str]:
        repo = Repo(root)
        head = repo.git("rev-parse", "HEAD")
        if head not in (old, new):
            return [f"{when}: HEAD is {head}, neither the old nor the new commit"]
        found = []
        status = repo.git("status", "--porcelain", "--untracked-files=all", "--", ".", ":(exclude)state")
        if status not in ("", "M manifest.json"):
            found.append(f"{when}: the checkout differs from {head[:12]}: {status!r}")
        manifest = json.loads((root / "manifest.json").read_text())
        signed_manifest = json.loads(repo.git("show", f"{head}:manifest.json"))
        if code_fields(manifest) != code_fields(signed_manifest):
            found.append(f"{when}: the manifest's code fields are not those of {head[:12]}")
        if repo.entry()["args"] != {"host": "setting"}:
            found.append(f"{when}: the host's settings were lost")
        # The private ref's lock matters to pull alone, which removes it under the run lock.
        ours = root / ".git" / "refs" / "updates" / "incoming.lock"
        locks = sorted(p.name for p in (root / ".git").rglob("*.lock") if pulled or p != ours)
        if locks:
            found.append(f"{when}: git lock files left: {locks}")
        return found

    def after_kill(work: Path) -> list[str]:
        root = work / "updates"
        repo = Repo(root)
        head = repo.git("rev-parse", "HEAD")
        found = [] if head in (old, new) else [f"after the kill: HEAD is {head}"]
        nightly = run([PYTHON, "index.py", "run", "--only", MODULE], root, env(root))
        if nightly.returncode != 0:
            found.append(f"the next run failed ({nightly.returncode}): {nightly.stderr.strip()[-300:]}")
        found += consistent(root, "after the next run", pulled=False)
        again = run(argv, root, env(root))
        if again.returncode != 0 or repo.git("rev-parse", "HEAD") != new:
            found.append(f"the next pull did not complete the move: {again.stdout} {again.stderr}")
        found += consistent(root, "after the next pull", pulled=True)
        found += leftovers(root, root / "state")
        return found

    report = kill_everywhere(Scenario("pull", prepare, after_kill), tmp_path / "runs")
    print(f"\npull: {report.kills} kills, {len(report.violations)} violations")
    assert report.kills > 0, "the kill injection never fired: strace did not trace the command"
    assert report.violations == [], "\n".join(report.violations[:20])
