#!/usr/bin/env python3
"""What signing costs the nightly run: the time of `run`'s signed-code gate on a clone of this checkout.

Usage: python bench/signing.py [--repeat R]
Clones the committed project into a temp directory, signs its HEAD with a throwaway ed25519 key, writes an
allowed-signers file beside it, and times the gate (HEAD's signature through ssh-keygen, then every code
file and the manifest's code fields against that commit). Prints the median and the worst of R runs.
"""

from __future__ import annotations

import argparse
import os
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
runpy.run_path(str(ROOT / "utils" / "bootstrap.py"))["register_package"]()
from updates.utils.orchestrator.command_pull import signing_gate  # noqa: E402
from updates.utils.paths import Paths  # noqa: E402


def sh(*argv: str, cwd: Path | None = None) -> None:
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    opts = parser.parse_args()
    if shutil.which("ssh-keygen") is None:
        print("ssh-keygen is not installed (apt-get install openssh-client)")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        key = base / "key"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(key))
        clone = base / "updates"
        sh("git", "clone", "-q", str(ROOT), str(clone))
        identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
        signing = ["-c", "gpg.format=ssh", "-c", f"user.signingKey={key}"]
        sh("git", *identity, *signing, "commit", "-q", "-S", "--allow-empty", "-m", "signed", cwd=clone)
        signers = base / "allowed_signers"
        public = key.with_suffix(".pub").read_text().split()
        signers.write_text(f'bench namespaces="git" {public[0]} {public[1]}\n')
        os.environ["UPDATES_ALLOWED_SIGNERS"] = str(signers)
        paths = Paths.create(clone, environ={"UPDATES_STATE_DIR": str(base / "state")})
        times = []
        for _ in range(opts.repeat):
            start = time.perf_counter()
            described = signing_gate(paths)
            times.append(time.perf_counter() - start)
        files = sum(1 for p in (clone / "utils").rglob("*.py")) + sum(
            1 for _ in (clone / "config").rglob("*")
        )
        print(f"signed-code gate on {clone.name} ({files} code files): {described}")
        median, worst = statistics.median(times) * 1000, max(times) * 1000
        print(f"median {median:.0f} ms, worst {worst:.0f} ms over {opts.repeat} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
