"""`index.py pull`: move the checkout to a signed fast-forward of what is deployed, or leave it as it was.

Contract: `pull(paths, git, signers, remote=..., ref=...)` takes the run lock, completes what a killed
command left (the journal), fetches `ref` (default: the branch checked out) from `remote` into the private
ref `refs/updates/incoming`, and moves the checkout there only when all of these hold:
- the fetched tag or commit is signed by a key of the allowed-signers file (`signing.py`);
- it is a fast-forward of HEAD (a downgrade or a rewritten history needs `allow_downgrade`);
- every module directory in it matches the checksum its own manifest records (computed from git's object
  store, before anything on disk changes);
- the checkout has no local edits that the move would overwrite: code files must equal HEAD, the manifest
  may differ only in host fields (which are kept), a module directory only when it is sealed (a rollback).
Otherwise it raises `PullRefused` saying why, and the checkout is byte for byte as it was. The move is
journaled: the record (with a copy of the manifest) is on disk before `git reset --hard`, so a kill at any
instant leaves the old commit (the next locked command reverts) or the new one with the merged manifest.
It writes nothing outside the checkout (its `.git` included) and the state directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..digest import CHECKSUM_FILE, digest_of_files
from ..errors import CommandError, UpdatesError
from ..fsutil import atomic_write_bytes
from ..journal import Recovered, begin, command, journal_dir, restore_file
from ..journal import remove as remove_action
from ..journal import sweep as sweep_action
from ..lock import run_lock
from ..manifest import dump
from ..paths import Paths
from ..recovery import recover, run_after_command
from .git import Git
from .signing import (
    CODE_FIELDS,
    DEPLOYED,
    ROLLBACK_SUFFIX,
    Signature,
    Signers,
    commit_signature,
    signed_tree_problems,
    tag_signature,
)
from .tagging import live_problem

log = logging.getLogger(__name__)

INCOMING = "refs/updates/incoming"
FETCH_TIMEOUT = 300.0
RESET_TIMEOUT = 300.0
# The points at which `pull` calls its `on_step` hook, in order (tests make failures happen there).
STEPS = ("verified", "journaled", "moved")
StepHook = Callable[[str], None]


class PullRefused(UpdatesError):
    """`pull` found the target unsafe or the checkout not ready; nothing moved."""

    exit_code = 1


@dataclass(frozen=True)
class PullResult:
    old: str
    new: str
    signature: Signature
    ref: str
    moved: bool
    downgrade: bool = False
    recovered: tuple[Recovered, ...] = ()

    def line(self) -> str:
        if not self.moved:
            return f"already at {self.new[:12]} ({self.ref}, {self.signature.describe()})"
        how = "moved back" if self.downgrade else "moved"
        return f"{how} from {self.old[:12]} to {self.new[:12]} ({self.ref}, {self.signature.describe()})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "ref": self.ref,
            "moved": self.moved,
            "downgrade": self.downgrade,
            "signed_by": self.signature.principal or None,
        }


def merge_manifest(current: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """The target's code with this host's settings: code fields and entries from `target`, everything
    else (host fields of entries both have, top-level settings) from `current`."""
    mine = {item.get("name"): item for item in current.get("updates") or [] if isinstance(item, dict)}
    entries = []
    for item in target.get("updates") or []:
        if not isinstance(item, dict):
            continue
        entry = dict(item)
        for key, value in mine.get(item.get("name"), {}).items():
            if key not in CODE_FIELDS:
                entry[key] = value
        # Code fields the target dropped must not survive from the host's copy.
        for key in CODE_FIELDS:
            if key not in item:
                entry.pop(key, None)
        entries.append(entry)
    code = {"entrypoint": target.get("entrypoint"), "updates": entries}
    # The host's key order, so that the file's diff against the signed commit stays small.
    merged = {k: code.get(k, v) for k, v in current.items()}
    merged.update({k: v for k, v in target.items() if k not in merged})
    merged.update({k: v for k, v in code.items() if k not in current})
    return merged


def _fetch(git: Git, remote: str, src: str) -> None:
    """Fetch `src` into INCOMING only: `--refmap=` keeps git from also updating the remote-tracking
    branches, so the private ref is the one ref a fetch writes, and a lock a killed fetch left on it (this
    runs under our run lock; no one else writes that ref) is removed first."""
    git_dir = Path(git.text("rev-parse", "--absolute-git-dir"))
    stale = git_dir / f"{INCOMING}.lock"
    if stale.exists():
        log.warning("removing %s, left by an interrupted pull", stale)
        stale.unlink()
    try:
        git.run("fetch", "--no-tags", "--quiet", "--no-write-fetch-head", "--refmap=", remote,
                f"+{src}:{INCOMING}", timeout=FETCH_TIMEOUT)  # fmt: skip
    except CommandError as exc:
        raise PullRefused(
            f"cannot fetch {src} from {remote}: {exc}", hint="check the remote's URL and the network"
        ) from exc


def _signature(git: Git, signers: Signers) -> Signature:
    """Good when the fetched tag or, failing that, its commit is signed by an allowed key."""
    commit_sig = commit_signature(git, signers, f"{INCOMING}^{{commit}}")
    if commit_sig.good:
        return commit_sig
    # tag_signature says "unsigned" for a plain commit too; a tag's own verdict is the more telling one.
    tag_sig = tag_signature(git, signers, INCOMING)
    return tag_sig if tag_sig.state != "unsigned" else commit_sig


def _is_ancestor(git: Git, older: str, newer: str) -> bool:
    return git.run("merge-base", "--is-ancestor", older, newer, check=False).returncode == 0


def _target_manifest(git: Git, commit: str, manifest_rel: str) -> dict[str, Any]:
    shown = git.run("show", f"{commit}:{manifest_rel}", check=False)
    if shown.returncode != 0:
        raise PullRefused(f"{commit[:12]} has no {manifest_rel}")
    try:
        data = json.loads(shown.stdout)
    except ValueError as exc:
        raise PullRefused(f"{manifest_rel} in {commit[:12]} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("updates"), list):
        raise PullRefused(f"{manifest_rel} in {commit[:12]} is not a manifest")
    return data


def _checksum_problems(git: Git, commit: str, prefix: str, manifest: Mapping[str, Any]) -> list[str]:
    """Modules of `manifest` (at `commit`) whose directory there does not give its recorded checksum."""
    problems = []
    for item in manifest.get("updates") or []:
        if not isinstance(item, dict) or "checksum" not in item or "script" in item:
            continue
        name = str(item.get("name"))
        try:
            files = git.read_tree(commit, f"{prefix}{name}")
        except UpdatesError as exc:
            problems.append(f"{name}: {exc}")
            continue
        digest = digest_of_files((f.path, f.data) for f in files)
        sealed = next(
            (f.data.decode("ascii", "replace").strip() for f in files if f.path == CHECKSUM_FILE), None
        )
        if digest != item["checksum"] or sealed != item["checksum"]:
            problems.append(f"{name}: checksum mismatch (its files give {digest[:12]}…)")
    return problems


def _local_edits(git: Git, signers: Signers, paths: Paths, head: str, manifest_rel: str) -> list[str]:
    """What the move would overwrite: see the module docstring."""
    problems = [
        p for p in signed_tree_problems(git, signers, paths.root, paths.manifest, head)
        # A rolled-back module's version and checksum: its directory is checked as sealed below.
        if not (p.startswith(f"{manifest_rel}: ") and p.endswith(ROLLBACK_SUFFIX))
    ]  # fmt: skip
    # --no-optional-locks: a status must not rewrite the index (a kill would leave index.lock behind).
    out = git.run("--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=no").stdout
    for record in filter(None, out.split(b"\0")):
        rel = record[3:].decode("utf-8", "replace")
        if (
            rel == manifest_rel
            or rel.split("/")[0] in ("utils", "config")
            or ("/" not in rel and rel in ("index.py", "__init__.py"))
        ):
            continue
        # A module directory that matches its own checksum file was put there by a rollback (its backup
        # keeps the old one); an unsealed edit would be lost.
        if "/" in rel and live_problem(paths.root / rel.split("/")[0])[1] is None:
            continue
        problems.append(f"{rel} has local changes")
    return problems


def _git_executable(git: Git) -> str:
    found = shutil.which(git.executable, path=git.env.get("PATH") or os.environ.get("PATH"))
    return str(Path(found).absolute()) if found else git.executable


def pull(
    paths: Paths,
    git: Git,
    signers: Signers,
    *,
    remote: str = "origin",
    ref: str | None = None,
    allow_downgrade: bool = False,
    on_step: StepHook | None = None,
    wait: float = 0,
) -> PullResult:
    """See the module docstring. `wait`: seconds to wait for a run that holds the lock (else refused)."""
    step = on_step or (lambda _name: None)
    with run_lock(paths, wait=wait):
        recovered = tuple(recover(paths))
        prefix = git.prefix()
        if prefix:
            raise PullRefused(
                f"{paths.root} is not the top of its git work tree", hint="pull works on a clone"
            )
        head = git.head()
        branch = git.run("symbolic-ref", "--short", "-q", "HEAD", check=False).stdout.decode().strip()
        if ref is None and not branch:
            raise PullRefused("HEAD is detached: name what to pull with --ref")
        src = ref or f"refs/heads/{branch}"
        manifest_rel = Path(os.path.relpath(os.path.realpath(paths.manifest), os.path.realpath(paths.root)))
        if manifest_rel.parts[:1] == ("..",):
            raise PullRefused(
                f"the manifest {paths.manifest} is outside the checkout; pull moves only the checkout"
            )
        edits = _local_edits(git, signers, paths, head, manifest_rel.as_posix())
        if edits:
            raise PullRefused(
                f"local changes would be overwritten: {edits[0]}"
                + (f" (and {len(edits) - 1} more)" if len(edits) > 1 else ""),
                hint="commit or discard them first (host settings in the manifest are kept and need neither)",
            )
        _fetch(git, remote, src)
        target = git.text("rev-parse", "--verify", f"{INCOMING}^{{commit}}")
        signature = _signature(git, signers)
        shown_ref = f"{remote} {ref or branch}"
        if not signature.good:
            raise PullRefused(
                f"{shown_ref} ({target[:12]}) is {signature.describe()}; not moving",
                hint=f"only code signed by a key in {signers.path} is pulled",
            )
        incoming = git.text("rev-parse", "--verify", INCOMING)
        if target == head:
            git.run("update-ref", DEPLOYED, incoming)  # one atomic ref write: the gate's view of what is here
            return PullResult(head, target, signature, shown_ref, moved=False, recovered=recovered)
        downgrade = not _is_ancestor(git, head, target)
        if downgrade and not allow_downgrade:
            what = "older than" if _is_ancestor(git, target, head) else "not a fast-forward of"
            raise PullRefused(
                f"{shown_ref} ({target[:12]}) is {what} the deployed {head[:12]}; not moving",
                hint="pass --allow-downgrade to move there on purpose (rollback.py rolls back one module)",
            )
        target_manifest = _target_manifest(git, target, manifest_rel.as_posix())
        bad = _checksum_problems(git, target, "", target_manifest)
        if bad:
            raise PullRefused(
                f"{shown_ref} ({target[:12]}) is signed but {bad[0]}; not moving",
                hint="the signer must reseal it (python utils/checksummer.py) and sign again",
            )
        manifest_file = Path(os.path.realpath(paths.manifest))
        current_bytes = manifest_file.read_bytes()
        merged = dump(merge_manifest(json.loads(current_bytes), target_manifest)).encode()
        step("verified")
        git_dir = Path(git.text("rev-parse", "--absolute-git-dir"))
        git_bin = _git_executable(git)
        record = begin(
            journal_dir(paths.state), "pull", describe=f"pull of {shown_ref} ({head[:12]} -> {target[:12]})"
        )
        # Whatever instant a kill lands, these put the old commit and the old manifest back: git's own lock
        # files first (a killed git leaves them and refuses to run), then a hard reset, then the manifest.
        locks = [git_dir / "index.lock", git_dir / "HEAD.lock", git_dir / "ORIG_HEAD.lock",
                 git_dir / f"{DEPLOYED}.lock"]  # fmt: skip
        was_deployed = (
            git.run("rev-parse", "--verify", "--quiet", DEPLOYED, check=False).stdout.decode().strip()
        )
        put_back_deployed = (
            ["update-ref", DEPLOYED, was_deployed] if was_deployed else ["update-ref", "-d", DEPLOYED]
        )
        if branch:
            locks.append(git_dir / "refs" / "heads" / f"{branch}.lock")
        record.will_undo(
            *(remove_action(lock) for lock in locks),
            command([git_bin, "-C", str(paths.root), "reset", "--quiet", "--hard", head], RESET_TIMEOUT),
            command([git_bin, "-C", str(paths.root), *put_back_deployed], RESET_TIMEOUT),
            restore_file(
                manifest_file, hashlib.sha256(current_bytes).hexdigest(), record.save_copy(manifest_file)
            ),
            sweep_action(manifest_file.parent, f".{manifest_file.name}."),
        )
        step("journaled")
        try:
            git.run("reset", "--quiet", "--hard", target, timeout=RESET_TIMEOUT)
            atomic_write_bytes(manifest_file, merged)
            git.run("update-ref", DEPLOYED, incoming)
            step("moved")
        except BaseException:
            record.revert(run_after_command)
            raise
        record.commit()
        log.info("pulled %s: %s -> %s", shown_ref, head[:12], target[:12])
        return PullResult(
            head, target, signature, shown_ref, moved=True, downgrade=downgrade, recovered=recovered
        )
