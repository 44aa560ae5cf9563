"""Update module `filebrowser`: keep the File Browser binary current and its database backed up.

Contract: `main(args)` looks up filebrowser/filebrowser's latest release (or the pinned `version`). When
the installed binary (`filebrowser version` -> `File Browser v2.63.23/e8a388f8`) is older, it downloads
`linux-<arch>-filebrowser.tar.gz`, verifies it against the API digest or
`filebrowser_<version>_checksums.txt`, checks the new binary's version, stops the service, copies the
database file (`database_path`) to the backup directory, replaces the binary atomically, starts the
service and waits for `/health` to answer `{"status":"OK"}`; on failure the previous binary and database
are put back and the service restarted. Upstream archived the project after v2.63.23: being up to date
with that release is reported as such, not as an error. Args are documented in README.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..utils.argspec import arg_error, path_arg, url_arg
from ..utils.release.args import read_args
from ..utils.release.assets import Platform
from ..utils.release.binary import BinaryInstall, ServicePlan, VersionProbe
from ..utils.release.service import json_status
from ..utils.release.update import BinaryComponent, open_context, update_binaries
from ..utils.release.version import Version

log = logging.getLogger(__name__)

REPO = "filebrowser/filebrowser"
FINAL_RELEASE = Version(2, 63, 23)  # the project was archived after this release
GO_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7": "armv7",
    "armv6": "armv6",
    "i686": "386",
    "riscv64": "riscv64",
}
PROBE = VersionProbe(("version",), r"^File Browser v([^/\s]+)/")
OWN_ARGS: dict[str, tuple[Any, Any]] = {
    "binary_path": ("/usr/local/bin/filebrowser", str),
    "service": ("filebrowser", str),
    "health_url": ("http://127.0.0.1:8080/health", str),
    "database_path": (None, str),
}


NO_BACKUP_WARNING = "no database_path set: the filebrowser database is not backed up before this upgrade"


def asset_names(where: Platform, version: Version, libcs: Sequence[str]) -> list[str]:
    arch = GO_ARCH.get(where.arch)
    return [f"linux-{arch}-filebrowser.tar.gz"] if arch else []  # static Go builds: no libc flavours


def checksum_files(asset: str, version: Version) -> list[str]:
    return [f"filebrowser_{version}_checksums.txt"]


def main(args: dict[str, Any]) -> dict[str, object]:
    common, own = read_args(args, OWN_ARGS)
    binary = path_arg(own, "binary_path")
    extra: tuple[Path, ...] = ()
    warning: str | None = NO_BACKUP_WARNING
    if own["database_path"]:
        # The file itself: restoring a copy over a symbolic link would replace the link.
        database = path_arg(own, "database_path").resolve()
        if binary.exists() and not database.is_file():
            problem = f"{database} does not exist; refusing to upgrade without a backup"
            raise arg_error("database_path", problem)
        extra, warning = (database,), None
    ctx = open_context(common)
    service = None
    if own["service"]:
        service = ServicePlan(
            own["service"], ctx.services(), ctx.health(url_arg(own, "health_url"), json_status("OK"))
        )
    plan = BinaryInstall(binary, PROBE, ctx.backup_dir(), common.keep_backups, service, extra)
    component = BinaryComponent(
        "filebrowser", asset_names, lambda _asset: "filebrowser", checksum_files, plan, warning
    )
    return update_binaries(ctx, REPO, [component], final=FINAL_RELEASE)
