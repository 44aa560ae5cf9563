"""`index.py pull` and the signed-code gate of `run`: the orchestrator's side of `utils/vcs/signing.py`.

Contract:
- `cmd_pull(paths, opts) -> int` moves the checkout to a signed fast-forward (`utils/vcs/pull.py`), prints
  one line (or JSON with `--json`), and records the move, or the refusal, in the run history. It needs the
  allowed-signers file: without one there is nothing to check a signature against, so it refuses.
  Exit 0 moved or already there, 1 refused (nothing moved), 2 an unsafe root of trust, 75 the lock is held.
- `signing_gate(paths)` is what `run` calls before it runs anything: None when signing is off (no
  allowed-signers file), else a one-line description of the signed commit; it raises `UntrustedCode`
  (exit 2, nothing runs) when HEAD is not signed by an allowed key or the code differs from HEAD.
- `signing_line(paths)` is `verify`'s line about signing and whether it is a problem; it never raises.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..errors import UpdatesError
from ..paths import Paths
from ..report.history import append_run, make_record
from ..vcs.git import Git
from ..vcs.pull import PullRefused, pull
from ..vcs.signing import (
    DEFAULT_SIGNERS,
    ENV_VAR,
    UntrustedCode,
    head_signature,
    load_signers,
    signed_tree_problems,
    signers_path,
)


def _record(paths: Paths, started: float, exit_code: int, **extra: Any) -> None:
    record = make_record([], started=started, finished=time.time(), exit_code=exit_code, dry_run=False,
                         command="pull", **extra)  # fmt: skip
    try:
        # After pull let go of the run lock: append only, never rotate (rotation is for lock holders).
        append_run(paths, record, rotate=False)
    except (OSError, UpdatesError) as exc:
        sys.stderr.write(f"warning: could not append to the run history: {exc}\n")


def cmd_pull(paths: Paths, opts: argparse.Namespace) -> int:
    started = time.time()
    signers = load_signers(paths.root)
    if signers is None:
        raise UntrustedCode(
            f"pull needs the allowed-signers file {signers_path()}, which does not exist",
            hint=f"create it (see the README, 'Signed updates'), or set {ENV_VAR}",
        )
    try:
        result = pull(paths, Git(paths.root), signers, remote=opts.remote, ref=opts.ref,
                      allow_downgrade=opts.allow_downgrade, wait=opts.wait)  # fmt: skip
    except PullRefused as exc:
        _record(paths, started, exc.exit_code, error=str(exc))
        raise
    _record(paths, started, 0, pull=result.as_dict(), recovered=[r.as_dict() for r in result.recovered])
    for item in result.recovered:
        sys.stderr.write(f"{item.line()}\n")
    if opts.json:
        sys.stdout.write(json.dumps({"ok": True, **result.as_dict()}) + "\n")
    else:
        sys.stdout.write(f"{result.line()}\n")
    return 0


def signing_gate(paths: Paths) -> str | None:
    """See the module docstring."""
    signers = load_signers(paths.root)
    if signers is None:
        return None
    git = Git(paths.root)
    try:
        signature = head_signature(git, signers)
        problems = signed_tree_problems(git, signers, paths.root, paths.manifest) if signature.good else []
    except UpdatesError as exc:
        raise UntrustedCode(f"signing is on and the checkout cannot be checked: {exc}") from exc
    if not signature.good:
        raise UntrustedCode(
            f"signing is on and the checked-out commit is {signature.describe()}; nothing runs",
            hint=f"move to a signed commit (`index.py pull`), or remove {signers.path} to turn signing off",
        )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UntrustedCode(
            f"signing is on and the code differs from the signed commit: {problems[0]}{more}; nothing runs",
            hint="discard the local edit (git checkout -- PATH), or commit and sign it",
        )
    head = git.text("rev-parse", "--short=12", "HEAD")
    return f"{head} {signature.describe()}"


def signing_line(paths: Paths) -> tuple[str, bool]:
    """`verify`'s line about signing, and whether it names a problem (the gate of `run` would refuse)."""
    try:
        described = signing_gate(paths)
    except UpdatesError as exc:
        return f"signing: {exc}", True
    if described is None:
        where = signers_path()
        extra = "" if where == DEFAULT_SIGNERS else f" ({ENV_VAR})"
        return f"signing: off (no allowed-signers file at {where}{extra})", False
    return f"signing: on; {described}, code unchanged", False
