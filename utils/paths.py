"""Where things are: the install root, the manifest, the state directory and the log directory.

Contract: every function that touches the file system takes a `Paths` instead of reading module globals,
so tests point a whole run at a temporary directory by building one `Paths`.
State (lock, caches, backups, history, journal) lives in one directory per user, the same for the timer and
for a hand run (DESIGN.md, "Orchestrator CLI"): `UPDATES_STATE_DIR` when set, else `/var/lib/updates` for
root (the unit's `StateDirectory=updates`), else `$XDG_STATE_HOME/updates` (`~/.local/state/updates`).
Logs go to `UPDATES_LOG_DIR` when set, else `/var/log/updates` for root when `UPDATES_STATE_DIR` is not set
either (the unit's `LogsDirectory=updates`), else `<state>/logs`. `state_source` says which rule chose the
state directory, for `status` and `verify` to tell the operator. `token_file` is the unit's
`EnvironmentFile=` (`UPDATES_TOKEN_FILE` names another), which `verify` checks. Building a `Paths`
creates nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
ROOT_STATE_DIR = Path("/var/lib/updates")
ROOT_LOG_DIR = Path("/var/log/updates")
TOKEN_FILE = Path("/etc/updates/github.env")  # the unit's EnvironmentFile=: GITHUB_TOKEN=... for the timer
LEGACY_STATE = "state"  # <root>/state, where versions before the one-state-directory rule kept it


def default_state_dir(environ: Mapping[str, str], euid: int) -> tuple[Path, str]:
    """The state directory and the rule that chose it (`UPDATES_STATE_DIR`, `default for root`, ...)."""
    if environ.get("UPDATES_STATE_DIR"):
        return Path(environ["UPDATES_STATE_DIR"]), "UPDATES_STATE_DIR"
    if euid == 0:
        return ROOT_STATE_DIR, "default for root"
    xdg = environ.get("XDG_STATE_HOME")
    # The XDG spec ignores a relative value: it must be absolute to count.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "updates", "XDG_STATE_HOME"
    home = environ.get("HOME") or str(Path("~").expanduser())
    return Path(home) / ".local" / "state" / "updates", "default for this user"


def default_log_dir(environ: Mapping[str, str], euid: int, state: Path) -> Path:
    if environ.get("UPDATES_LOG_DIR"):
        return Path(environ["UPDATES_LOG_DIR"])
    if euid == 0 and not environ.get("UPDATES_STATE_DIR"):
        return ROOT_LOG_DIR
    return state / "logs"


@dataclass(frozen=True)
class Paths:
    root: Path
    manifest: Path
    state: Path
    log_dir: Path | None = None  # None: `<state>/logs`
    state_source: str = "given"
    token_file: Path = TOKEN_FILE

    @classmethod
    def create(
        cls,
        root: Path | None = None,
        manifest: Path | None = None,
        environ: Mapping[str, str] | None = None,
        euid: int | None = None,
    ) -> Paths:
        """Paths for `root` (default: this installation), state and logs as the module docstring says."""
        environ = os.environ if environ is None else environ
        euid = os.geteuid() if euid is None else euid
        root = Path(root or PACKAGE_ROOT).resolve()
        state, source = default_state_dir(environ, euid)
        # Absolute now, so that a module changing the working directory cannot move them.
        state = state.absolute()
        return cls(
            root=root,
            manifest=Path(manifest).absolute() if manifest else root / "manifest.json",
            state=state,
            log_dir=default_log_dir(environ, euid, state).absolute(),
            state_source=source,
            token_file=Path(environ.get("UPDATES_TOKEN_FILE") or TOKEN_FILE),
        )

    @property
    def lock(self) -> Path:
        return self.state / "updates.lock"

    @property
    def logs(self) -> Path:
        return self.log_dir if self.log_dir is not None else self.state / "logs"

    @property
    def legacy_state(self) -> Path:
        """Where an earlier version kept the state: `<root>/state`."""
        return self.root / LEGACY_STATE

    def describe_state(self) -> str:
        """`/var/lib/updates (default for root)`, plus `; not created yet` when it does not exist."""
        missing = "" if self.state.is_dir() else "; not created yet: no run has used it"
        return f"{self.state} ({self.state_source}{missing})"

    def module_dir(self, name: str) -> Path:
        return self.root / name

    def module_state(self, name: str) -> Path:
        return self.state / "modules" / name

    @property
    def bytecode(self) -> Path:
        """The cache of code compiled from verified module source (utils/orchestrator/bytecode.py)."""
        return self.state / "bytecode"
