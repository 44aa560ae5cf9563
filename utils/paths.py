"""Where things are: the install root, the manifest, and the state directory.

Contract: every function that touches the file system takes a `Paths` instead of reading module globals,
so tests point a whole run at a temporary directory by building one `Paths`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Paths:
    root: Path
    manifest: Path
    state: Path

    @classmethod
    def create(
        cls,
        root: Path | None = None,
        manifest: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Paths:
        """Paths for `root` (default: this installation); state from `UPDATES_STATE_DIR` when set."""
        environ = os.environ if environ is None else environ
        root = Path(root or PACKAGE_ROOT).resolve()
        state = environ.get("UPDATES_STATE_DIR") or str(root / "state")
        # Absolute now, so that a module changing the working directory cannot move them.
        return cls(
            root=root,
            manifest=Path(manifest).absolute() if manifest else root / "manifest.json",
            state=Path(state).absolute(),
        )

    @property
    def lock(self) -> Path:
        return self.state / "updates.lock"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def module_dir(self, name: str) -> Path:
        return self.root / name

    def module_state(self, name: str) -> Path:
        return self.state / "modules" / name
