"""Run inside `unshare --mount --propagation private`: give this mount namespace its own copies of some
paths, then become sshd. Started by sshd_support.py as `unshare ... python host_launcher.py SPEC.json`.

SPEC is `{"mounts": [[source, target], ...], "staging": DIR, "argv": [sshd, ...]}`. Each source (a
directory, or a file for a file target) is bind-mounted over its target. A target that does not exist on
the real machine gets a mount point without creating anything there: its nearest existing ancestor is
first "shadowed" (the real directory stays reachable under the staging dir, a tmpfs goes over it, and each
of its entries is bound back in place), so the new directory is made in the tmpfs. Every mount is private
to this namespace: the real machine sees none of them. Then it execs sshd, keeping the pid.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

MS_BIND = 0x1000
MS_REC = 0x4000

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                     data.encode() if data else None)  # fmt: skip
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _bind(source: Path, target: Path) -> None:
    _mount(str(source), str(target), None, MS_BIND | MS_REC)


def _shadow(directory: Path, staging: Path, made: set[Path]) -> None:
    """Make `directory` writable in this namespace only, its current entries still in place."""
    keep = staging / f"orig{len(made)}"
    keep.mkdir(parents=True)
    _bind(directory, keep)
    mode = directory.stat().st_mode & 0o7777
    _mount("tmpfs", str(directory), "tmpfs", 0, f"mode={mode:o}")
    made.add(directory)
    for entry in os.scandir(keep):
        target = directory / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            target.mkdir()
            _bind(Path(entry.path), target)
        else:
            target.touch()
            _bind(Path(entry.path), target)


def _make_mount_point(target: Path, is_dir: bool, staging: Path, made: set[Path]) -> None:
    missing = []
    parent = target
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    if not missing:
        return
    if parent not in made:
        _shadow(parent, staging, made)
    for path in reversed(missing):
        if path == target and not is_dir:
            path.touch()
        else:
            path.mkdir(mode=0o755)
        made.add(path)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    staging = Path(spec["staging"])
    made: set[Path] = set()
    for source, target in spec["mounts"]:
        src, dst = Path(source), Path(target)
        _make_mount_point(dst, src.is_dir(), staging, made)
        _bind(src, dst)
    os.execv(spec["argv"][0], spec["argv"])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
