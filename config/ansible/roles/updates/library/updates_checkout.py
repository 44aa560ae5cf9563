#!/usr/bin/python
"""Ansible module `updates_checkout`: put the installation of `updates` at a git ref, keeping the host's
own manifest settings. For hosts without signing (with signing, the role runs `index.py pull` instead).

Contract:
- No checkout at `dest` (missing or an empty directory): clone `repo` there and check out `version`.
- A checkout: fetch `origin` (branches and tags); when `version` resolves to the commit already checked
  out, nothing changes (`changed: false`). Otherwise it refuses (fails, nothing moved) when a code file
  differs from HEAD, names the first such path; a module directory that differs only because a rollback
  sealed another version into it (it matches its own `checksum` file) and `manifest.json` are allowed.
  It checks out the target commit (detached), removes files a rollback left in such module directories,
  and writes the target's manifest with this host's settings kept: every field that is not a code field
  (`name`, `children`, `version`, `checksum`, `script`, `dryRunAware`) of each entry both have, and the
  top-level settings (`notify`). The host's manifest is saved in `.git/` before the move and used by the
  next call when a crash interrupted it, so a kill never loses the host's settings.
- Returns `before` and `after` (commits) and `versions_before`/`versions_after` (module name to version).
- All of it is done under the host's run lock (module_utils/updates_lock.py): no code moves under a
  running module, and no run writes back a manifest it read before the move.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.updates_files import write_atomic
from ansible.module_utils.updates_lock import LockBusy, module_lock

DOCUMENTATION = r"""
module: updates_checkout
short_description: Put the installation of updates at a git ref, keeping host settings
description:
  - Clones or fetches the repository and checks out a branch, tag or commit, keeping the host fields of
    manifest.json; refuses to overwrite local edits of code.
options:
  repo:
    description: The git URL or path of the repository of updates.
    type: str
    required: true
  dest:
    description: The installation directory.
    type: path
    required: true
  version:
    description: A branch, tag or commit.
    type: str
    required: true
  lock:
    description: The run lock of updates (C(<state>/updates.lock)), held while the file is written.
    type: path
    default: /var/lib/updates/updates.lock
  lock_timeout:
    description: Seconds to wait for a run that holds the lock before failing with nothing changed.
    type: int
    default: 900
author: updates
"""

RETURN = r"""
before:
  description: The commit checked out before, or null.
  type: str
  returned: always
after:
  description: The commit checked out now.
  type: str
  returned: always
"""

CODE_FIELDS = ("name", "children", "version", "checksum", "script", "dryRunAware")
MANIFEST = "manifest.json"
SAVED = "updates-manifest-before-checkout.json"
EXCLUDED_DIRS = {"__pycache__", ".pytest_cache"}


class Refused(Exception):
    pass


def folder_digest(directory: Path) -> str:
    """The module checksum of DESIGN.md ("Module checksum")."""
    lines = []
    for path in directory.rglob("*"):
        rel = path.relative_to(directory)
        if any(part in EXCLUDED_DIRS for part in rel.parts[:-1]) or path.is_dir():
            continue
        if rel.as_posix() == "checksum" or path.suffix == ".pyc":
            continue
        lines.append((rel.as_posix().encode(), hashlib.sha256(path.read_bytes()).hexdigest()))
    text = b"".join(f"{digest}  ".encode() + name + b"\n" for name, digest in sorted(lines))
    return hashlib.sha256(text).hexdigest()


def sealed(directory: Path) -> bool:
    try:
        return folder_digest(directory) == (directory / "checksum").read_text().strip()
    except OSError:
        return False


def entries(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in manifest.get("updates") or [] if isinstance(e, dict) and "name" in e}


def versions(manifest: dict[str, Any] | None) -> dict[str, Any]:
    return {n: e["version"] for n, e in entries(manifest or {}).items() if "version" in e}


def merge(current: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The target's code with this host's settings (the same rule as `index.py pull`)."""
    mine = entries(current)
    merged_entries = []
    for item in target.get("updates") or []:
        if not isinstance(item, dict):
            continue
        entry = dict(item)
        for key, value in mine.get(item.get("name"), {}).items():
            if key not in CODE_FIELDS:
                entry[key] = value
        for key in CODE_FIELDS:
            if key not in item:
                entry.pop(key, None)
        merged_entries.append(entry)
    code = {"entrypoint": target.get("entrypoint"), "updates": merged_entries}
    merged = {k: code.get(k, v) for k, v in current.items()}
    merged.update({k: v for k, v in target.items() if k not in merged})
    merged.update({k: v for k, v in code.items() if k not in current})
    return merged


class Checkout:
    def __init__(self, module: AnsibleModule, dest: Path) -> None:
        self.module = module
        self.dest = dest

    def git(self, *args: str, check: bool = True, strip: bool = True) -> str:
        env = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
        rc, out, err = self.module.run_command(["git", *args], cwd=str(self.dest), environ_update=env)
        if check and rc != 0:
            raise Refused(f"git {' '.join(args)} failed: {(err or out).strip()}")
        if rc != 0:
            return ""
        return out.strip() if strip else out

    def resolve(self, version: str) -> str:
        for candidate in (f"refs/remotes/origin/{version}", f"refs/tags/{version}", version):
            commit = self.git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", check=False)
            if commit:
                return commit
        raise Refused(f"{version}: no branch, tag or commit of that name in the repository")

    def local_edits(self, manifest: dict[str, Any]) -> list[str]:
        """Changed tracked paths that a checkout would overwrite, other than the allowed ones."""
        status = self.git("status", "--porcelain=v1", "-z", "--untracked-files=no", strip=False)
        modules = {n for n, e in entries(manifest).items() if (self.dest / n / "index.py").is_file()}
        blocked, rolled_back = [], set()
        for item in filter(None, status.split("\0")):
            path = item[3:]
            top = path.split("/", 1)[0]
            if path == MANIFEST:
                continue
            if top in modules and (top in rolled_back or sealed(self.dest / top)):
                rolled_back.add(top)
                continue
            blocked.append(path)
        self.rolled_back = sorted(rolled_back)
        return blocked

    def read_manifest(self, ref: str | None = None) -> dict[str, Any] | None:
        try:
            text = self.git("show", f"{ref}:{MANIFEST}") if ref else (self.dest / MANIFEST).read_text()
            value = json.loads(text)
        except (OSError, ValueError, Refused):
            return None
        return value if isinstance(value, dict) else None


def move(module: AnsibleModule, repo: str, dest: Path, version: str) -> dict[str, Any]:
    co = Checkout(module, dest)
    fresh = not (dest / ".git").exists()
    if fresh:
        if dest.exists() and any(dest.iterdir()):
            raise Refused(f"{dest} exists, is not empty and is not a git checkout: move it away first")
        if module.check_mode:
            return {"changed": True, "before": None, "after": None}
        dest.mkdir(parents=True, exist_ok=True)
        co.git("clone", "--quiet", "--no-checkout", "--origin", "origin", repo, str(dest))
    else:
        if co.git("remote", "get-url", "origin", check=False) != repo:
            co.git("remote", "remove", "origin", check=False)
            co.git("remote", "add", "origin", repo)
        co.git("fetch", "--quiet", "--prune", "--tags", "--force", "origin",
               "+refs/heads/*:refs/remotes/origin/*")  # fmt: skip
    target = co.resolve(version)
    # A clone made with --no-checkout has a HEAD but no files yet.
    head = None if fresh else co.git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False) or None
    saved_path = dest / ".git" / SAVED
    current = co.read_manifest() if head else None
    if saved_path.exists():  # a move that a crash interrupted: the host's settings are in the copy
        current = json.loads(saved_path.read_text())
    result: dict[str, Any] = {"before": head, "after": target, "versions_before": versions(current)}
    if head == target and not saved_path.exists():
        return {**result, "changed": False, "versions_after": result["versions_before"]}
    if head is not None:
        blocked = co.local_edits(current or {})
        if blocked:
            more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
            raise Refused(f"local changes would be overwritten: {blocked[0]}{more}; commit or discard them")
    target_manifest = co.read_manifest(target)
    if target_manifest is None:
        raise Refused(f"{version} ({target[:12]}) has no readable {MANIFEST}")
    merged = merge(current, target_manifest) if current else target_manifest
    result.update(changed=True, versions_after=versions(merged))
    if module.check_mode:
        return result
    if current is not None and not saved_path.exists():
        write_atomic(saved_path, json.dumps(current, indent=2, ensure_ascii=False) + "\n", 0o600)
    co.git("-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", "--detach", target)
    for name in getattr(co, "rolled_back", []):
        co.git("clean", "-fdq", "--", name)
    text = json.dumps(merged, indent=2, ensure_ascii=False) + "\n"
    if (dest / MANIFEST).read_text() != text:
        write_atomic(dest / MANIFEST, text)
    if saved_path.exists():
        saved_path.unlink()
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "repo": {"type": "str", "required": True},
            "dest": {"type": "path", "required": True},
            "version": {"type": "str", "required": True},
            "lock": {"type": "path", "default": "/var/lib/updates/updates.lock"},
            "lock_timeout": {"type": "int", "default": 900},
        },
        supports_check_mode=True,
    )
    try:
        with module_lock(module):
            params = module.params
            result = move(module, params["repo"], Path(params["dest"]), params["version"])
    except (Refused, LockBusy, OSError, ValueError) as exc:
        module.fail_json(msg=f"{module.params['dest']}: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
