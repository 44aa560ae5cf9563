"""Update module `gogs`: upgrade the gogs application directory the way gogs documents it.

Contract: `main(args)` asks the installed gogs its version first (absent and `install_missing` false:
"not installed", no request), then looks up gogs/gogs' latest release (or the pinned `version`). When
the installed `gogs --version` (`Gogs version 0.14.3`) is older, and the step does not skip a minor
version (gogs supports one minor at a time from 0.12 on), it downloads
`gogs_<version>_linux_<arch>.tar.gz` (or the `gogs_v<version>_...` spelling), verifies it against the
API digest (0.14.x publishes no checksum file on GitHub) or `checksum_sha256.txt`, unpacks it safely
into a fresh directory beside the installed one, checks the new binary's version, stops the service,
copies `custom/`, `data/` and `log/` over, switches by rename (the old directory stays as the backup),
starts the service and waits for `/healthcheck` to say `* Database connection: OK`; on failure the old
directory is renamed back and the service restarted (failed copies kept, bounded by `keep_backups`).
Args are documented in README.md.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..utils.argspec import arg_error, path_arg, url_arg
from ..utils.journal import inode, module_journal_dir
from ..utils.release.appdir import DirectoryInstall, install_directory
from ..utils.release.args import read_args
from ..utils.release.assets import Platform
from ..utils.release.binary import ServicePlan, VersionProbe, installed_version
from ..utils.release.download import downloaded, journaled_temps, sweep_stale
from ..utils.release.extract import extract_tree
from ..utils.release.github import ReleaseError
from ..utils.release.service import gogs_database_ok
from ..utils.release.update import (
    NOT_INSTALLED,
    Context,
    absent_and_unwanted,
    decide,
    lookup,
    open_context,
    refuse_symlink,
    verified_asset,
    would_install,
)
from ..utils.release.version import Version

log = logging.getLogger(__name__)

REPO = "gogs/gogs"
DEFAULT_KEEP = ("custom", "data", "log")  # what gogs' upgrade guide copies into the new directory
PROBE = VersionProbe(("--version",), r"^Gogs version v?(\S+)")
# 0.14 renamed armv8 to arm64 and dropped armv7; both spellings are the same architecture.
GO_ARCH = {"x86_64": ["amd64"], "aarch64": ["arm64", "armv8"], "armv7": ["armv7"], "i686": ["386"]}
OWN_ARGS: dict[str, tuple[Any, Any]] = {
    "install_dir": ("/home/git/gogs", str),
    "service": ("gogs", str),
    "health_url": ("http://127.0.0.1:3000/healthcheck", str),
    "keep_backups": (2, int),
    "carry_over": (["custom", "data", "log"], list),
}


class UpgradePathError(ReleaseError):
    """The upgrade would skip a minor version, which gogs does not support."""


def check_upgrade_path(installed: Version, target: Version) -> None:
    """Refuse upgrades gogs does not support: below 0.12 go to 0.12 first; from 0.12 on one minor at a time.

    The message itself says what to do (the orchestrator's summary shows the message, not a hint).
    """
    if installed.minor_series < (0, 12):
        if target.minor_series > (0, 12):
            raise UpgradePathError(
                f"gogs {installed} -> {target}: gogs below 0.12 must be upgraded to 0.12 first; "
                "set the module's 'version' arg to the newest 0.12.x release, run, then remove it"
            )
        return
    if target.major == installed.major and target.minor > installed.minor + 1:
        step = f"{installed.major}.{installed.minor + 1}"
        raise UpgradePathError(
            f"gogs {installed} -> {target} would skip {step}; gogs upgrades one minor version at a time: "
            f"set the module's 'version' arg to the newest {step}.x release, run, then remove it"
        )
    if target.major > installed.major and (target.major > installed.major + 1 or target.minor > 0):
        raise UpgradePathError(
            f"gogs {installed} -> {target} skips a major series; upgrade one series at a time "
            "(set the module's 'version' arg to each step in turn)"
        )


def carry_over_arg(value: list[Any]) -> tuple[str, ...]:
    """The `carry_over` arg: top-level names inside install_dir, custom/data/log always among them."""
    for name in value:
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise arg_error("carry_over", f'entries are top-level names such as "custom", got {name!r}')
    missing = [name for name in DEFAULT_KEEP if name not in value]
    if missing:
        raise arg_error(
            "carry_over", f"must keep {', '.join(missing)} (gogs' own data): add names, do not remove"
        )
    return tuple(dict.fromkeys(value))


def asset_names(where: Platform, version: Version) -> list[str]:
    return [
        f"gogs_{prefix}{version}_linux_{arch}.tar.gz"
        for arch in GO_ARCH.get(where.arch, [])
        for prefix in ("", "v")
    ]


def checksum_files(asset: str, version: Version) -> list[str]:
    return ["checksum_sha256.txt"]  # 0.13.x; 0.14.x publishes none on GitHub (the API digest is used)


def main(args: dict[str, Any]) -> dict[str, object]:
    common, own = read_args(args, OWN_ARGS)
    install_dir = path_arg(own, "install_dir")
    url_arg(own, "health_url")  # checked before any request, used only when installing
    keep = carry_over_arg(own["carry_over"])
    ctx = open_context(common)
    with contextlib.closing(ctx.session):
        return update(ctx, own, install_dir, keep)


def update(
    ctx: Context, own: dict[str, Any], install_dir: Path, keep: tuple[str, ...] = DEFAULT_KEEP
) -> dict[str, object]:
    """Lookup, decision, verified download, safe extraction and the directory switch."""
    common = ctx.common
    # What is installed first: gogs absent and not to be installed costs no request at all.
    current = installed_version(
        install_dir / "gogs", PROBE, cwd=install_dir if install_dir.is_dir() else None
    )
    if absent_and_unwanted(current, common):
        return {"changed": False, "summary": NOT_INSTALLED}
    release, version = lookup(ctx, REPO)
    decision = decide(
        "gogs", current, version, install_missing=common.install_missing, pinned=bool(common.version)
    )
    if not decision.install:
        return {"changed": False, "summary": decision.summary}
    refuse_symlink(install_dir, "install_dir")
    if current is not None:
        check_upgrade_path(current, version)
    names = asset_names(ctx.platform, version)
    asset, expected = verified_asset(ctx, release, version, names, checksum_files)
    if common.dry_run:
        return {"changed": False, "summary": would_install(decision, asset, expected)}
    parent = install_dir.parent
    if not parent.is_dir():
        raise arg_error("install_dir", f"{parent} does not exist; create it or change install_dir")
    service = None
    if own["service"]:
        service = ServicePlan(own["service"], ctx.services(), ctx.health(own["health_url"], gogs_database_ok))
    plan = DirectoryInstall(
        install_dir=install_dir,
        binary="gogs",
        probe=PROBE,
        backup_dir=common.backup_dir or parent,
        keep=keep,
        keep_backups=own["keep_backups"],
        service=service,
    )
    sweep_stale(parent, [f".{asset.name}.*.part", f".{install_dir.name}-*.new-*"])
    journal = module_journal_dir(common.state_dir)
    staging = f".{install_dir.name}-{version}.new-"
    # The install's own record, begun later, is recovered first: it takes the previous directory back from
    # the staging name before this one sweeps what is left there.
    temps = [(f".{asset.name}.", ".part"), (staging, "")]
    with (
        journaled_temps(journal, parent, temps, describe=f"download of {asset.name}"),
        downloaded(ctx.session, asset, parent, expected, allow_unverified=common.allow_unverified) as archive,
    ):
        new_dir = Path(tempfile.mkdtemp(dir=parent, prefix=staging))
        staged = inode(new_dir)
        try:
            extract_tree(archive, "gogs", new_dir, label=f"{asset.name} (release {version})")
            install_directory(plan, new_dir, version, current, journal=journal)
        finally:
            # Only our own staging tree: after the exchange this name holds the previous install (its data/
            # included) until it moves to the backups, and a failed undo leaves it there for the journal.
            if inode(new_dir) == staged:
                with contextlib.suppress(OSError):
                    shutil.rmtree(new_dir)
    return {"changed": True, "summary": decision.summary}
