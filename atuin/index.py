"""Update module `atuin`: keep the atuin client binary (and, when enabled, atuin-server) current.

Contract: `main(args)` looks up atuinsh/atuin's latest release (or the pinned `version`), and for each
enabled binary whose installed version (`atuin -V`, `atuin-server --version`) is older, downloads the
`atuin[-server]-<rust target>.tar.gz` for this machine, verifies it against the API digest or the
per-asset `.sha256` / `sha256.sum` file, checks the new binary's version, and replaces the installed one
atomically (previous copy kept in the backup directory). atuin-server's service is stopped and started
around the switch and must answer `/healthz` with `{"status":"healthy"}`, else everything is undone.
Returns `{"changed": bool, "summary": ...}`. Args are documented in README.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..utils.argspec import path_arg, url_arg
from ..utils.release.args import read_args
from ..utils.release.assets import Platform
from ..utils.release.binary import BinaryInstall, ServicePlan, VersionProbe
from ..utils.release.service import json_status
from ..utils.release.update import BinaryComponent, open_context, update_binaries
from ..utils.release.version import Version

log = logging.getLogger(__name__)

REPO = "atuinsh/atuin"
LIBC_PREFERENCE = "gnu"  # on glibc hosts, as atuin's own installer does; musl hosts only get musl builds
RUST_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64"}  # atuin builds no armv7 or i686 Linux binaries
CLIENT_PROBE = VersionProbe(("-V",), r"^atuin\s+v?(\S+)")
SERVER_PROBE = VersionProbe(("--version",), r"^atuin-server\s+v?(\S+)")
OWN_ARGS: dict[str, tuple[Any, Any]] = {
    "binary_path": ("/usr/local/bin/atuin", str),
    "server": (False, bool),
    "server_binary_path": ("/usr/local/bin/atuin-server", str),
    "server_service": ("atuin-server", str),
    "server_health_url": ("http://127.0.0.1:8888/healthz", str),
}


def asset_names(program: str) -> Callable[[Platform, Version, Sequence[str]], list[str]]:
    """The naming rule: `<program>-<arch>-unknown-linux-<libc>.tar.gz`, best libc first."""

    def names(where: Platform, version: Version, libcs: Sequence[str]) -> list[str]:
        arch = RUST_ARCH.get(where.arch)
        if arch is None:
            return []
        return [f"{program}-{arch}-unknown-linux-{libc}.tar.gz" for libc in libcs]

    return names


def member(program: str) -> Callable[[str], str]:
    """The binary sits in a top directory named like the archive: `atuin-<triple>/atuin`."""
    return lambda asset: f"{asset.removesuffix('.tar.gz')}/{program}"


def checksum_files(asset: str, version: Version) -> list[str]:
    return [f"{asset}.sha256", "sha256.sum"]


def main(args: dict[str, Any]) -> dict[str, object]:
    common, own = read_args(args, OWN_ARGS)
    ctx = open_context(common, LIBC_PREFERENCE)
    backups = ctx.backup_dir()
    components = [
        BinaryComponent(
            "atuin",
            asset_names("atuin"),
            member("atuin"),
            checksum_files,
            BinaryInstall(path_arg(own, "binary_path"), CLIENT_PROBE, backups, common.keep_backups),
        )
    ]
    if own["server"]:
        service = ServicePlan(
            own["server_service"],
            ctx.services(),
            ctx.health(url_arg(own, "server_health_url"), json_status("healthy")),
        )
        components.append(
            BinaryComponent(
                "atuin-server",
                asset_names("atuin-server"),
                member("atuin-server"),
                checksum_files,
                BinaryInstall(
                    path_arg(own, "server_binary_path"), SERVER_PROBE, backups, common.keep_backups, service
                ),
                path_key="server_binary_path",
            )
        )
    return update_binaries(ctx, REPO, components)
