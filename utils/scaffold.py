"""A new update module for any GitHub-release tool, written from a template: what `index.py new` does.

Contract of `create_module(paths, spec)`:
- `spec` is checked first, one line naming what to fix (`ScaffoldError`, exit 2): the name must be a
  manifest name (`^[a-z][a-z0-9_]*$`), not a directory of the project (utils, tests, ...) and not taken by
  a manifest entry or a directory; the repository `OWNER/REPO`; the binary a plain file name; the unit a
  systemd unit name; the health URL http(s) with a host, and only together with a unit.
- It writes `<root>/<name>/` (`__init__.py` as the module contract has it, an `index.py` of a few lines on
  `utils/release/generic.py`, a README saying what the module changes on the system) and its `checksum`
  file, built in a hidden directory beside it and renamed into place; then it adds the manifest entry
  (`enabled: false`, so a typo cannot act at night; version 1.0.0; the module's checksum; args empty) and
  the name to the entrypoint group's children. The two steps are one journaled change: a kill at any point
  leaves both or neither, and the next command that takes the run lock cleans up.
The caller holds the run lock (the manifest is written by runs too). Returns the module directory.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .digest import CHECKSUM_FILE, compute_folder_sha256
from .errors import UsageError
from .fsutil import atomic_write_text, fsync_dir
from .journal import journal_dir, operation, remove, sweep, write_bytes
from .manifest import dump, read_raw
from .paths import Paths

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
BINARY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
UNIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.@-]*$")
# Names of the project's own directories and files: a module of that name would shadow them.
RESERVED = frozenset({"utils", "tests", "config", "bench", "state", "venv", "index", "manifest", "checksum"})


class ScaffoldError(UsageError):
    """`index.py new` was asked for something it cannot make; nothing was written."""


@dataclass(frozen=True)
class NewModule:
    name: str
    repo: str
    binary: str = ""  # default: the repository's name
    service: str = ""
    health_url: str = ""

    @property
    def binary_name(self) -> str:
        return self.binary or self.repo.split("/", 1)[-1]


def check_spec(paths: Paths, spec: NewModule, entries: list[object]) -> None:
    """Refuse a bad or taken name and malformed values, each with one line naming what to fix."""
    if not NAME_RE.match(spec.name):
        raise ScaffoldError(
            f"module name {spec.name!r}: use lowercase letters, digits and _, starting with a letter"
        )
    if spec.name in RESERVED:
        raise ScaffoldError(f"module name {spec.name!r} is one of the project's own names; pick another")
    if any(isinstance(e, dict) and e.get("name") == spec.name for e in entries):
        raise ScaffoldError(f"a manifest entry named {spec.name!r} exists already; pick another name")
    if (paths.root / spec.name).exists() or (paths.root / spec.name).is_symlink():
        raise ScaffoldError(f"{paths.root / spec.name} exists already; pick another name")
    if not REPO_RE.match(spec.repo) or spec.repo.split("/")[1] in (".", ".."):
        raise ScaffoldError(f"--github {spec.repo!r}: expected OWNER/REPO, e.g. zyedidia/eget")
    if not BINARY_RE.match(spec.binary_name):
        raise ScaffoldError(f"--binary {spec.binary_name!r}: expected a plain file name such as eget")
    if spec.service and not UNIT_RE.match(spec.service):
        raise ScaffoldError(f"--service {spec.service!r}: expected a systemd unit name such as myapp")
    if spec.health_url:
        url = urlsplit(spec.health_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ScaffoldError(f"--health {spec.health_url!r}: expected an http:// or https:// URL")
        if not spec.service:
            raise ScaffoldError("--health needs --service: the health check runs after the service restarts")


def _init_py(spec: NewModule) -> str:
    return f'''"""Keep {spec.repo}'s {spec.binary_name} current from its GitHub releases (`index.py new`)."""
import os

from ..utils.index import compute_folder_sha256

_HERE = os.path.dirname(os.path.abspath(__file__))
try:
    with open(os.path.join(_HERE, "checksum"), encoding="ascii") as _fh:
        CHECKSUM = _fh.read().strip() or None
except FileNotFoundError:
    CHECKSUM = None
LIVE_CHECKSUM = compute_folder_sha256(_HERE)
'''


def _index_py(spec: NewModule) -> str:
    return f'''"""Update module `{spec.name}`: keep {spec.repo}'s `{spec.binary_name}` current.

Made by `index.py new`; the installer is utils/release/generic.py (README.md says what it changes).
"""

from __future__ import annotations

from typing import Any

from ..utils.release.generic import GitHubTool, update_tool

TOOL = GitHubTool(
    repo={json.dumps(spec.repo)},
    binary={json.dumps(spec.binary_name)},
    service={json.dumps(spec.service)},
    health_url={json.dumps(spec.health_url)},
)


def main(args: dict[str, Any]) -> dict[str, object]:
    return update_tool(TOOL, args)
'''


def _readme(spec: NewModule) -> str:
    binary = spec.binary_name
    service = (
        f"- stops the service `{spec.service}` around the switch (only when it was running) and starts it "
        "again" + (f", then waits until `{spec.health_url}` answers HTTP 200" if spec.health_url else "")
        + "; a failure puts the previous binary back and starts the service again;\n"
        if spec.service
        else "- restarts no service (none was named);\n"
    )
    return f"""# {spec.name}

Keeps `{binary}` from [{spec.repo}](https://github.com/{spec.repo}/releases) current. Made by
`index.py new {spec.name} --github {spec.repo}`; it starts **disabled** in `manifest.json`: check the args
below, then set `"enabled": true`.

## What it changes on this system

- replaces `binary_path` (default `/usr/local/bin/{binary}`) with the newer release's `{binary}`, atomically,
  after checking its SHA-256 (the API digest, `<asset>.sha256` or the release's checksum file; a release
  that publishes none is refused unless `allow_unverified` is true) and that it reports the new version;
- keeps the previous binary in `<state>/backups/` (the newest `keep_backups`);
{service}- installs the tool where it is absent only when `install_missing` is true; while it is absent
  and not to be installed, the module reports "not installed" and asks GitHub nothing.

The asset is the release's Linux `.tar.gz` for this machine's architecture; `{binary}` may sit anywhere in
it. The installed version is read from `{binary} --version` (`version_args`).

## Args

The common args of every GitHub-release module (`api_url`, `token_env`, `version`, `install_missing`,
`allow_unverified`, `service_command`, `health_timeout`, `keep_backups`, ...; see the atuin module's
README), plus:

| arg | default | meaning |
|---|---|---|
| `binary_path` | `"/usr/local/bin/{binary}"` | where the binary is installed |
| `service` | `"{spec.service}"` | systemd unit restarted around the switch (`""`: none) |
| `health_url` | `"{spec.health_url}"` | polled after the restart until HTTP 200 (`""`: none) |
| `version_args` | `["--version"]` | what makes the binary print its version |
| `asset_regex` | `""` | only assets whose whole name matches (when a release ships several tools) |

Undo a bad change of the module's code like any module's:
`utils/rollback.py rollback {spec.name} --to VERSION`.
"""


def module_files(spec: NewModule) -> dict[str, str]:
    return {"__init__.py": _init_py(spec), "index.py": _index_py(spec), "README.md": _readme(spec)}


def create_module(paths: Paths, spec: NewModule) -> Path:
    """Write and seal the module, add its disabled manifest entry; see the module docstring."""
    manifest_path = Path(paths.manifest).resolve()
    raw = read_raw(manifest_path)
    listed = raw.get("updates")
    entries: list[object] = list(listed) if isinstance(listed, list) else []
    check_spec(paths, spec, entries)
    target = paths.root / spec.name
    prefix = f".{spec.name}.new-"
    with operation(
        journal_dir(paths.state), "new-module", describe=f"creation of module {spec.name}",
        module=spec.name,
    ) as record:  # fmt: skip
        # On disk before the first file: a kill at any point is undone by the next command.
        record.will_undo(
            sweep(paths.root, prefix, ""),
            remove(target),
            write_bytes(manifest_path, manifest_path.read_bytes()),
            sweep(manifest_path.parent, f".{manifest_path.name}."),
        )
        staging = Path(tempfile.mkdtemp(dir=paths.root, prefix=prefix))
        try:
            staging.chmod(0o755)
            for rel, text in module_files(spec).items():
                atomic_write_text(staging / rel, text, mode=0o644)
            digest = compute_folder_sha256(staging)
            atomic_write_text(staging / CHECKSUM_FILE, digest + "\n", mode=0o644)
            staging.rename(target)
            fsync_dir(paths.root)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        raw["updates"] = [*entries, _entry(spec, digest)]
        top = raw.get("entrypoint")
        group = next((e for e in entries if isinstance(e, dict) and e.get("name") == top), None)
        if group is not None and isinstance(group.get("children"), list):
            group["children"].append(spec.name)
        atomic_write_text(manifest_path, dump(raw))
        record.commit()
    return target


def _entry(spec: NewModule, digest: str) -> dict[str, object]:
    return {
        "name": spec.name,
        "version": "1.0.0",
        "lastSafeVersion": None,
        "lastApplied": None,
        "enabled": False,
        "description": f"Keep {spec.binary_name} current from {spec.repo}'s GitHub releases",
        "checksum": digest,
        "timeout": 900,
        "args": {},
    }
