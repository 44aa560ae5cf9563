"""Tagging and listing module versions, for `utils/rollback.py` and the rollback operations.

Contract: these functions raise (`RollbackError` for a refusal, `CommandError`, `OSError`) and change nothing
when they do.
- `create_tag` tags HEAD as `<name>-v<version>-<YYYYMMDD>` with an annotated tag (`-<YYYYMMDDHHMMSS>` when
  the day's tag is on another commit; the existing tag when it is already on HEAD), signed with `sign`.
  Annotated, because the tag then records who deployed when, and the module's digest in its message, and
  `git push --follow-tags` and `git describe` see it. It refuses uncommitted changes in the module and a
  module that does not match its checksum file.
- `module_tags` lists a module's tags, newest first; `tag_signatures` checks them against the allowed
  signers; `live_problem` tells whether a module directory matches its checksum file.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from ..digest import compute_folder_sha256, read_checksum_file
from ..errors import ChecksumError, RollbackError
from ..manifest import Entry, load_manifest
from ..paths import Paths
from ..schema import NAME_RE
from .git import PUSH_TIMEOUT, Git
from .signing import Signature, load_signers, tag_signature
from .tags import ModuleTag, check_version, format_tag, newest_first, parse_tag

log = logging.getLogger(__name__)

_FOR_EACH_REF_FORMAT = "%00".join(
    (
        "%(refname:strip=2)",
        "%(objecttype)",
        "%(objectname)",
        "%(*objecttype)",  # the peeled object of an annotated tag
        "%(*objectname)",
        "%(committerdate:unix)",
        "%(*committerdate:unix)",
    )
)
# Paths git status should not report inside a module: the checksum ignores them too.
_IGNORED_GLOBS = ("**/__pycache__/**", "**/*.pyc", "**/.pytest_cache/**")


def module_entry(paths: Paths, name: str) -> Entry:
    entry = load_manifest(paths).entries.get(name)
    if entry is None or entry.is_group:
        what = "a group, not a module" if entry else "not in the manifest"
        raise RollbackError(f"{name}: {what}", hint=f"modules are listed in {paths.manifest}")
    return entry


def module_tags(name: str, git: Git) -> list[ModuleTag]:
    """The module's well-formed tags that point at commits, newest first (call `git.prefix()` first)."""
    if not NAME_RE.match(name):
        raise RollbackError(f"{name!r} is not a module name")
    out = git.text("for-each-ref", f"--format={_FOR_EACH_REF_FORMAT}", f"refs/tags/{name}-v*")
    found: list[ModuleTag] = []
    for line in filter(None, out.splitlines()):
        tag, kind, oid, peeled_kind, peeled, date, peeled_date = line.split("\0")
        parsed = parse_tag(name, tag)
        if parsed is None:
            log.debug("ignoring tag %s: not <name>-v<version>-<YYYYMMDD[HHMMSS]>", tag)
            continue
        commit, when = (oid, date) if kind == "commit" else (peeled, peeled_date)
        if (kind if kind == "commit" else peeled_kind) != "commit":
            log.debug("ignoring tag %s: it does not point at a commit", tag)
            continue
        found.append(replace(parsed, commit=commit, commit_time=int(when or 0)))
    return newest_first(found)


def tag_signatures(tags: list[ModuleTag], *, paths: Paths, git: Git) -> dict[str, Signature | None]:
    """tag -> its signature against the allowed-signers file; None for every tag when signing is off."""
    signers = load_signers(paths.root)
    if signers is None:
        return {t.tag: None for t in tags}
    return {t.tag: tag_signature(git, signers, f"refs/tags/{t.tag}") for t in tags}


def _uncommitted(git: Git, name: str) -> list[str]:
    excludes = [f":(exclude,glob){name}/{pattern}" for pattern in _IGNORED_GLOBS]
    out = git.run("status", "--porcelain=v1", "-z", "--untracked-files=all", "--", f"{name}/", *excludes)
    return [record[3:].decode("utf-8", "replace") for record in out.stdout.split(b"\0") if len(record) > 3]


def live_problem(directory: Path) -> tuple[str | None, str | None]:
    """(live digest or None, why the directory does not match its checksum file or None)."""
    try:
        live = compute_folder_sha256(directory)
        recorded = read_checksum_file(directory)
    except ChecksumError as exc:
        return None, str(exc)
    if recorded is None:
        return live, "it has no checksum file"
    if recorded != live:
        return live, f"its checksum file says {recorded[:12]}…, its files give {live[:12]}…"
    return live, None


def _committer_env(git: Git) -> dict[str, str]:
    """A fallback tagger identity for a server where git has none configured (common for root)."""
    if git.run("var", "GIT_COMMITTER_IDENT", check=False).returncode == 0:
        return {}
    return {"GIT_COMMITTER_NAME": "updates", "GIT_COMMITTER_EMAIL": f"updates@{socket.gethostname()}"}


def create_tag(
    name: str, version: str | None, *, paths: Paths, git: Git, now: datetime | None, sign: bool = False
) -> str:
    entry = module_entry(paths, name)
    version = version or entry.version
    if not version:
        raise RollbackError(f"{name}: the manifest has no version for it; bump it first or pass one")
    problem = check_version(version)
    if problem:
        raise RollbackError(f"{name}: version {version!r} cannot be tagged: {problem}")
    prefix = git.prefix()
    head = git.head()
    dirty = _uncommitted(git, name)
    if dirty:
        more = f" and {len(dirty) - 3} more" if len(dirty) > 3 else ""
        raise RollbackError(
            f"{name}/ has uncommitted changes ({', '.join(dirty[:3])}{more}); a tag must describe what runs",
            hint="commit (or revert) them first, then tag",
        )
    digest, mismatch = live_problem(paths.module_dir(name))
    if mismatch:
        raise RollbackError(
            f"{name}/ does not match its checksum file: {mismatch}",
            hint="run `python utils/checksummer.py`, commit, then tag",
        )
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    existing = module_tags(name, git)
    same = [t for t in existing if t.version == version]
    _warn_reused_version(name, version, same, git=git, head=head, prefix=prefix)
    for old in existing:
        if old.version == version and old.stamp.date() == moment.date() and old.commit == head:
            log.info("%s: %s already tags HEAD", name, old.tag)
            return old.tag
    taken = {t.tag for t in existing}
    tag = format_tag(name, version, moment)
    if tag in taken:
        tag = format_tag(name, version, moment, with_time=True)
    if git.run("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}", check=False).returncode == 0:
        raise RollbackError(f"tag {tag} already exists on another commit", hint="try again in a second")
    message = f"{name} {version}\n\nchecksum {digest}\n"
    if sign:
        # The operator's own git config names the key (gpg.format=ssh, user.signingKey); a missing one is
        # git's error, said in one line.
        result = git.run("tag", "-s", "-m", message, tag, head, env=_committer_env(git), check=False)
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"]
        made = git.run("cat-file", "tag", f"refs/tags/{tag}", check=False)
        if result.returncode == 0 and b"\n-----BEGIN " not in made.stdout:
            # git 2.39 makes an unsigned tag and exits 0 when ssh-keygen cannot read the key: never keep one.
            git.run("tag", "-d", tag, check=False)
            lines = ["git could not sign it with user.signingKey and made an unsigned tag (removed)"]
        elif result.returncode == 0:
            lines = []
        if lines:
            raise RollbackError(
                f"cannot sign the tag {tag}: {lines[-1]}",
                hint="git config gpg.format ssh && git config user.signingKey ~/.ssh/id_ed25519",
            )
    else:
        git.run("tag", "-a", "-m", message, tag, head, env=_committer_env(git))
    log.info("%s: tagged %s as %s%s", name, head[:12], tag, " (signed)" if sign else "")
    return tag


def _warn_reused_version(
    name: str, version: str, same: list[ModuleTag], *, git: Git, head: str, prefix: str
) -> None:
    """Retagging a version with other module contents (a rebuild, or a forgotten version bump) is allowed,
    but from then on `rollback --to VERSION` restores the new code, not what that version was before."""
    if not same:
        return
    newest = same[0]

    def tree(commit: str) -> str | None:
        found = git.run("rev-parse", "--verify", "--quiet", f"{commit}:{prefix}{name}", check=False)
        return found.stdout.decode("ascii", "replace").strip() if found.returncode == 0 else None

    if tree(newest.commit) != tree(head):
        log.warning(
            "%s: version %s is already tagged (%s) with other contents of %s/; from now on a rollback to %s "
            'restores this commit\'s code. Forgot to bump "version" in the manifest? Then delete the new tag '
            "(git tag -d), bump, commit and tag again", name, version, newest.tag, name, version,
        )  # fmt: skip


def push_tag(tag: str, *, git: Git, remote: str = "origin") -> None:
    git.run("push", "--quiet", remote, f"refs/tags/{tag}:refs/tags/{tag}", timeout=PUSH_TIMEOUT)
