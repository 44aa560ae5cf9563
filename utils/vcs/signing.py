"""Who wrote the code: SSH signatures on commits and tags, checked against a root-owned allowed-signers file.

Contract:
- The root of trust is an allowed-signers file in git's format (`principal namespaces="git" ssh-ed25519
  AAAA...`) outside the checkout: `UPDATES_ALLOWED_SIGNERS` when set, else `/etc/updates/allowed_signers`.
  `load_signers(root)` returns None when that file does not exist (signing is off) and refuses
  (`UntrustedCode`) a file that is a link, that another user can change (as root), that lies inside the
  checkout (pulled code must not bring its own key) or that holds no key.
- `commit_signature` / `tag_signature` ask git (with `gpg.format=ssh`, the allowed-signers file and the
  `ssh-keygen` on the safe PATH forced on the command line, so no repository config can swap them) and
  return a `Signature`: good (by an allowed principal), unsigned, unknown key, or bad. Nothing here trusts
  a signature git did not call good against that file.
- `signed_tree_problems(git, root, commit)` lists every way the checkout's code differs from `commit`:
  the files of `utils/`, `config/`, `index.py` and `__init__.py` (compared by git blob hash, untracked
  Python files included), and the code fields of the manifest (`entrypoint`, each entry's `name`,
  `children`, `version`, `checksum`). A module whose `version` and `checksum` differ from the commit is
  accepted when an allowed key signed a tag `<name>-v<version>-*` whose manifest has that checksum (a
  deliberate rollback). Module directories themselves are then held to those signed checksums by the
  runner's verification: a SHA-256 digest commits to every byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UpdatesError
from ..permissions import check_ancestors, check_file, enforced
from ..proc import SAFE_PATH
from .git import Git
from .tags import parse_tag

ENV_VAR = "UPDATES_ALLOWED_SIGNERS"
# What `pull` last deployed (a signed tag or a commit): the gate accepts a HEAD that only its tag signed.
DEPLOYED = "refs/updates/deployed"
DEFAULT_SIGNERS = Path("/etc/updates/allowed_signers")
# What the checkout runs besides the module directories (which the checksums cover).
CODE_PATHS = ("utils", "config", "index.py", "__init__.py")
# `script` (a legacy entry's shell script) and `dryRunAware` describe code too, so they are the signer's.
ROLLBACK_SUFFIX = "is neither the signed commit's nor a signed tag's"
CODE_FIELDS = ("name", "children", "version", "checksum", "script", "dryRunAware")
_GOOD_TAG = re.compile(r'Good "git" signature for (?P<who>.+?) with (?P<kind>\S+) key (?P<key>\S+)')
_ANY_KEY = re.compile(r'Good "git" signature with \S+ key (?P<key>\S+)')
_KEY_LINE = re.compile(r"(?:^|\s)(?:ssh-|ecdsa-|sk-)\S+\s+[A-Za-z0-9+/=]{20,}")


class UntrustedCode(UpdatesError):
    """Signing is on and the code is not what an allowed key signed, or the root of trust is unsafe."""

    exit_code = 2


@dataclass(frozen=True)
class Signers:
    """The allowed-signers file in use, and the `ssh-keygen` git is told to check signatures with."""

    path: Path
    ssh_keygen: str
    refuse: str = "/bin/false"  # the checker for every signature that is not SSH

    def config(self) -> list[str]:
        """`git -c` options that pin how signatures are checked, whatever the repository's config says."""
        # git picks the checker by the signature's own header, whatever gpg.format says: an OpenPGP or X.509
        # signature would go to gpg.program, which a repository's config could name. Those checkers are
        # pinned to `false`, so only an SSH signature against the allowed-signers file can pass.
        return [
            "-c", "gpg.format=ssh",
            "-c", f"gpg.ssh.allowedSignersFile={self.path}",
            "-c", f"gpg.ssh.program={self.ssh_keygen}",
            "-c", "gpg.ssh.revocationFile=",
            "-c", f"gpg.program={self.refuse}",
            "-c", f"gpg.openpgp.program={self.refuse}",
            "-c", f"gpg.x509.program={self.refuse}",
        ]  # fmt: skip


@dataclass(frozen=True)
class Signature:
    """What git said of one signature: `state` is good, unsigned, unknown-key or bad."""

    state: str
    principal: str = ""
    key: str = ""
    detail: str = ""

    @property
    def good(self) -> bool:
        return self.state == "good"

    def describe(self) -> str:
        if self.state == "good":
            return f"signed by {self.principal}"
        if self.state == "unsigned":
            return "not signed"
        if self.state == "unknown-key":
            return f"signed by a key that is not allowed ({self.key or 'unknown key'})"
        return f"bad signature ({self.detail or 'git could not verify it'})"


def signers_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(ENV_VAR) or DEFAULT_SIGNERS)


def load_signers(
    root: Path, *, environ: Mapping[str, str] | None = None, euid: int | None = None
) -> Signers | None:
    """The root of trust, or None when its file does not exist; refuses an unsafe one (see the docstring)."""
    path = signers_path(environ).absolute()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UntrustedCode(f"cannot read the allowed-signers file {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedCode(f"the allowed-signers file {path} is a symbolic link; refusing to follow it")
    if not stat.S_ISREG(st.st_mode):
        raise UntrustedCode(f"the allowed-signers file {path} is not a regular file")
    real_root = Path(os.path.realpath(root))
    if Path(os.path.realpath(path)).is_relative_to(real_root):
        raise UntrustedCode(
            f"the allowed-signers file {path} is inside the checkout {root}",
            hint=f"keep it outside, root-owned ({DEFAULT_SIGNERS}): pulled code must not bring its own key",
        )
    if enforced(euid):
        problems = check_file(path, euid=euid) + check_ancestors(path.parent, euid=euid)
        if problems:
            raise UntrustedCode(
                f"refusing the allowed-signers file: {problems[0]}",
                hint=f"make {path} and its directories owned by root and writable by root only",
            )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UntrustedCode(f"cannot read the allowed-signers file {path}: {exc}") from exc
    if not any(_KEY_LINE.search(line) for line in text.splitlines() if not line.lstrip().startswith("#")):
        raise UntrustedCode(
            f"the allowed-signers file {path} holds no key",
            hint='one line per key: <principal> namespaces="git" ssh-ed25519 AAAA...',
        )
    keygen = shutil.which("ssh-keygen", path=SAFE_PATH)
    if keygen is None:
        raise UntrustedCode(
            "cannot check signatures: ssh-keygen is not installed",
            hint="install it (Debian/Ubuntu: apt-get install openssh-client)",
        )
    return Signers(path, keygen, shutil.which("false", path=SAFE_PATH) or "/bin/false")


def commit_signature(git: Git, signers: Signers, rev: str) -> Signature:
    """The signature on commit `rev` (a commit id or anything that names one)."""
    out = git.run(
        *signers.config(), "log", "-1", "--no-show-signature", "--format=%G?%x00%GS%x00%GK", rev, "--"
    ).stdout.decode("utf-8", "replace")
    code, principal, key = [*out.rstrip("\n").split("\0"), "", ""][:3]
    if code == "G" and key.startswith("SHA256:"):  # an SSH key's fingerprint: never another kind
        return Signature("good", principal, key)
    if code == "N":
        return Signature("unsigned")
    if code == "U":
        return Signature("unknown-key", key=key)
    reasons = {"B": "it does not match the commit", "X": "expired", "Y": "made by an expired key",
               "R": "made by a revoked key", "E": "it cannot be checked"}  # fmt: skip
    return Signature("bad", key=key, detail=reasons.get(code, f"git says {code!r}"))


def head_signature(git: Git, signers: Signers) -> Signature:
    """HEAD's signature, or that of the tag `pull` deployed when it points at HEAD and HEAD is unsigned."""
    commit_sig = commit_signature(git, signers, "HEAD")
    if commit_sig.good:
        return commit_sig
    deployed = git.run("rev-parse", "--verify", "--quiet", f"{DEPLOYED}^{{commit}}", check=False)
    if deployed.returncode == 0 and deployed.stdout.strip().decode() == git.text("rev-parse", "HEAD"):
        tag_sig = tag_signature(git, signers, DEPLOYED)
        if tag_sig.good:
            return tag_sig
    return commit_sig


def tag_signature(git: Git, signers: Signers, ref: str) -> Signature:
    """The signature on the annotated tag `ref` names (a full ref: `refs/tags/x`); a lightweight tag is
    unsigned."""
    kind = git.run("cat-file", "-t", ref, check=False).stdout.strip()
    if kind != b"tag":
        return Signature("unsigned", detail="a lightweight tag")
    result = git.run(*signers.config(), "verify-tag", "--raw", ref, check=False)
    text = result.stderr.decode("utf-8", "replace")
    good = _GOOD_TAG.search(text)
    ssh = b"\n-----BEGIN SSH SIGNATURE-----" in git.run("cat-file", "tag", ref).stdout
    if result.returncode == 0 and good and ssh:
        return Signature("good", good["who"], good["key"])
    if "no signature found" in text:
        return Signature("unsigned")
    if "No principal matched" in text:
        anonymous = _ANY_KEY.search(text)
        return Signature("unknown-key", key=anonymous["key"] if anonymous else "")
    last = next((line for line in reversed(text.splitlines()) if line.strip()), "git verify-tag failed")
    return Signature("bad", detail=last.strip())


def git_blob_id(data: bytes, object_format: str = "sha1") -> str:
    """The id git gives a file with content `data`."""
    digest = hashlib.sha256() if object_format == "sha256" else hashlib.sha1()  # noqa: S324 - git's own id
    digest.update(b"blob %d\0" % len(data))
    digest.update(data)
    return digest.hexdigest()


def _tracked(git: Git, commit: str) -> dict[str, str]:
    """path -> blob id of the code files (CODE_PATHS) in `commit`."""
    listing = git.run("ls-tree", "-r", "-z", "--full-tree", commit, "--", *CODE_PATHS).stdout
    found: dict[str, str] = {}
    for record in filter(None, listing.split(b"\0")):
        meta, _, name = record.partition(b"\t")
        mode, kind, oid = meta.decode("ascii").split()
        if kind == "blob":
            found[name.decode("utf-8", "surrogateescape")] = f"{mode}:{oid}"
    return found


def _on_disk(root: Path) -> Iterator[str]:
    """The relative paths of the code files in the checkout that git would track (caches left out)."""
    for name in CODE_PATHS:
        top = root / name
        if top.is_file() or top.is_symlink():
            yield name
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", ".pytest_cache"))
            # os.walk lists a link to a directory among the directories and never enters it: report the
            # link itself, so a planted `utils/pkg -> /elsewhere` is a file the signed commit lacks.
            filenames += [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
            for filename in filenames:
                if not filename.endswith(".pyc"):
                    yield (Path(dirpath) / filename).relative_to(root).as_posix()


def _file_problem(root: Path, rel: str, expected: str | None, object_format: str) -> str | None:
    path = root / rel
    if expected is None:
        return f"{rel} is not in the signed commit"
    mode, _, oid = expected.partition(":")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"{rel} is missing"
    if mode == "120000" or stat.S_ISLNK(st.st_mode):
        data = os.fsencode(path.readlink()) if stat.S_ISLNK(st.st_mode) else b""
        return None if mode == "120000" and git_blob_id(data, object_format) == oid else f"{rel} differs"
    executable = bool(st.st_mode & 0o100)
    if git_blob_id(path.read_bytes(), object_format) != oid or executable != (mode == "100755"):
        return f"{rel} differs"
    return None


def _manifest_at(git: Git, rev: str, manifest_rel: str) -> dict[str, Any]:
    raw = git.run("show", f"{rev}:{manifest_rel}", check=False)
    if raw.returncode != 0:
        return {}
    try:
        data = json.loads(raw.stdout)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _entries(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    items = manifest.get("updates")
    return {
        item["name"]: item
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    }


def code_fields(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a manifest that are code (the signer's), not host settings (the operator's)."""
    return {
        "entrypoint": manifest.get("entrypoint"),
        "updates": [{k: item[k] for k in CODE_FIELDS if k in item} for item in _entries(manifest).values()],
    }


def _signed_rollback(
    git: Git, signers: Signers, name: str, entry: Mapping[str, Any], manifest_rel: str
) -> bool:
    """True when an allowed key signed a tag of `name` at this version whose manifest has this checksum."""
    version = entry.get("version")
    listing = git.run("tag", "--list", f"{name}-v{version}-*").stdout.decode("utf-8", "replace").split()
    for tag in listing:
        if parse_tag(name, tag) is None or not tag_signature(git, signers, f"refs/tags/{tag}").good:
            continue
        tagged = _entries(_manifest_at(git, f"refs/tags/{tag}^{{commit}}", manifest_rel)).get(name, {})
        if tagged.get("checksum") == entry.get("checksum") and tagged.get("version") == version:
            return True
    return False


def signed_tree_problems(
    git: Git, signers: Signers, root: Path, manifest: Path, commit: str = "HEAD"
) -> list[str]:
    """How the checkout differs in code from `commit` (see the module docstring); empty when it does not."""
    object_format = git.text("rev-parse", "--show-object-format") or "sha1"
    problems: list[str] = []
    tracked = _tracked(git, commit)
    seen = set()
    for rel in sorted(_on_disk(root)):
        seen.add(rel)
        if (problem := _file_problem(root, rel, tracked.get(rel), object_format)) is not None:
            problems.append(problem)
    problems += [f"{rel} is missing" for rel in sorted(set(tracked) - seen)]
    manifest_rel = os.path.relpath(manifest, root)
    if manifest_rel.startswith(".."):
        return [*problems, f"the manifest {manifest} is not part of the checkout {root}"]
    try:
        current = json.loads(manifest.read_bytes())
    except (OSError, ValueError) as exc:
        return [*problems, f"cannot read {manifest}: {exc}"]
    signed = _manifest_at(git, commit, manifest_rel)
    if not signed:
        return [*problems, f"{manifest_rel} is not in the signed commit"]
    if not isinstance(current, dict):
        return [*problems, f"{manifest_rel} is not a JSON object"]
    ours, theirs = _entries(current), _entries(signed)
    if current.get("entrypoint") != signed.get("entrypoint"):
        problems.append(f"{manifest_rel}: entrypoint differs from the signed commit")
    if set(ours) != set(theirs):
        extra = sorted(set(ours) ^ set(theirs))
        problems.append(f"{manifest_rel}: the modules differ from the signed commit ({', '.join(extra)})")
    for name in sorted(set(ours) & set(theirs)):
        mine, signed_entry = ours[name], theirs[name]
        other = [
            k for k in CODE_FIELDS if k not in ("version", "checksum") and mine.get(k) != signed_entry.get(k)
        ]
        if other:
            problems.append(f"{manifest_rel}: {', '.join(other)} of {name} differ from the signed commit")
        if all(mine.get(k) == signed_entry.get(k) for k in ("version", "checksum")):
            continue
        if not _signed_rollback(git, signers, name, mine, manifest_rel):
            problems.append(
                f"{manifest_rel}: {name} {mine.get('version')} (checksum {str(mine.get('checksum'))[:12]}) "
                f"{ROLLBACK_SUFFIX}"
            )
    return problems
