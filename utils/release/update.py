"""The update flow shared by the GitHub-release modules (atuin, filebrowser, gogs).

Contract:
- `open_context(common)` builds the HTTP session (token from the args' variable, sent to the API host
  only), the release client with its ETag cache in `<state_dir>/github/` (not written in dry-run) and the
  machine's platform (args may override arch/libc).
- `decide(...)` is the pure version decision: up to date, install (upgrade or allowed fresh install), not
  installed (and not allowed), or installed is newer (never a silent downgrade; a pinned downgrade is an
  error).
- `update_binaries(ctx, repo, components)` runs the whole flow for tools that are single binaries in a
  tar.gz: first the installed versions (a tool that is absent and not to be installed costs no request at
  all: "not installed" and success, so a server without the tool runs offline and quietly), then one
  release lookup when something is installed or to be installed, then per component: decision, asset
  choice, digest,
  removal of a killed earlier run's temp files, download, exact-member extraction, `install_binary`
  (with service stop/start, health and undo).
  Dry-run stops after the digest lookup and reports what it would do.
It returns the module result `{"changed": bool, "summary": str}`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..argspec import arg_error
from ..errors import UpdatesError
from ..http import Session, make_session
from ..journal import module_journal_dir
from .args import CommonArgs
from .assets import Platform, choose_asset, detect_platform, libc_order
from .binary import BinaryInstall, install_binary, installed_version
from .download import (
    Expected,
    check_verifiable,
    downloaded,
    expected_digest,
    journaled_temps,
    sweep_stale,
)
from .extract import extract_file
from .github import Asset, GitHubReleases, Release, ReleaseError, ReleaseQuery
from .service import HealthCheck, ServiceManager
from .version import Version

log = logging.getLogger(__name__)


class PartialUpdate(UpdatesError):
    """A later binary of a module failed after an earlier one was upgraded (and stays upgraded)."""


@dataclass(frozen=True)
class Context:
    common: CommonArgs
    session: Session
    releases: GitHubReleases
    platform: Platform
    libcs: tuple[str, ...]  # libc flavours to accept, best first

    def backup_dir(self) -> Path:
        return self.common.backup_dir or self.common.state_dir / "backups"

    def services(self) -> ServiceManager:
        return ServiceManager.from_args(self.common.service_command)

    def health(self, url: str, accept: Callable[[str], bool]) -> HealthCheck:
        return HealthCheck(url, accept, self.common.health_timeout, self.common.health_interval)


def open_context(common: CommonArgs, libc_preference: str = "gnu") -> Context:
    if common.allow_unverified:
        # Said on every run, not only when it bites: the setting itself is the risk to see.
        log.warning(
            "%s: allow_unverified is set: an asset without a published SHA-256 would be installed unverified",
            common.name or "module",
        )
    session = make_session(
        token=os.environ.get(common.token_env) or None,
        token_origin=common.api_url,
        retries=common.http_retries,
        backoff=common.http_backoff,
    )
    client = GitHubReleases(
        session,
        common.api_url,
        common.state_dir / "github",
        write_cache=not common.dry_run,
        token_env=common.token_env,
    )
    platform = detect_platform(common.arch, None if common.libc == "auto" else common.libc)
    libcs = [common.libc] if common.libc != "auto" else libc_order(platform.libc, libc_preference)
    return Context(common, session, client, platform, tuple(libcs))


def lookup(ctx: Context, repo: str) -> tuple[Release, Version]:
    """The release to install (latest or pinned) and its version."""
    result = ctx.releases.lookup(ReleaseQuery(repo, ctx.common.version, ctx.common.include_prereleases))
    version = result.release.version
    if version is None:
        raise ReleaseError(f"{repo}: release tag {result.release.tag!r} is not a version")
    log.info("%s: release %s%s", repo, result.release.tag, " (not modified)" if result.not_modified else "")
    return result.release, version


@dataclass(frozen=True)
class Decision:
    install: bool
    summary: str
    fresh: bool = False  # a fresh install (nothing installed before)


NOT_INSTALLED = "not installed (set install_missing to install it)"


def absent_and_unwanted(current: Version | None, common: CommonArgs) -> bool:
    """True when the tool is not installed and the args do not ask to install it: nothing to look up."""
    return current is None and not common.install_missing


def decide(
    name: str,
    installed: Version | None,
    target: Version,
    *,
    install_missing: bool,
    pinned: bool,
    final: Version | None = None,
) -> Decision:
    """What to do about `name`: see the module docstring."""
    if installed is None:
        if install_missing:
            return Decision(True, f"installed {target}", fresh=True)
        return Decision(False, NOT_INSTALLED)
    if installed == target:
        note = ""
        if final is not None and installed >= final:
            note = f"; upstream archived the project after v{final}, no further releases will come"
        return Decision(False, f"up to date ({installed}){note}")
    if installed > target:
        if pinned:
            raise ReleaseError(
                f"{name} {installed} is installed; refusing to downgrade to the pinned {target}"
            )
        return Decision(False, f"installed {installed} is newer than the latest release {target}; left alone")
    return Decision(True, f"{installed} -> {target}")


@dataclass(frozen=True)
class BinaryComponent:
    name: str
    asset_names: Callable[[Platform, Version, Sequence[str]], list[str]]  # platform, version, libcs
    member: Callable[[str], str]  # asset name -> path of the binary inside the archive
    checksum_files: Callable[[str, Version], list[str]]  # asset name, version -> checksum file names
    plan: BinaryInstall
    warning: str | None = None  # logged only when an install is about to happen (not on every run)
    path_key: str = "binary_path"  # the arg naming where the binary goes, for messages
    # For tools without a fixed naming rule (`index.py new`): picks the asset from the release itself
    # (then `asset_names` is not used), and `member` may name only the file, found anywhere in the archive.
    choose: Callable[[Release, Platform, Sequence[str]], Asset] | None = None
    member_anywhere: bool = False


def verified_asset(
    ctx: Context,
    release: Release,
    version: Version,
    names: Sequence[str],
    checksum_files: Callable[[str, Version], list[str]],
    *,
    choose: Callable[[Release, Platform, Sequence[str]], Asset] | None = None,
) -> tuple[Asset, Expected]:
    """The asset for this machine and the digest that will verify it (refused here when there is none)."""
    asset = choose(release, ctx.platform, ctx.libcs) if choose else choose_asset(release, names, ctx.platform)
    expected = expected_digest(ctx.session, release, asset, checksum_files(asset.name, version))
    # Refused here, before a dry run reports or a real run downloads; the warning comes with the download.
    check_verifiable(asset, expected, allow_unverified=ctx.common.allow_unverified, warn=ctx.common.dry_run)
    return asset, expected


def refuse_symlink(path: Path, what: str) -> None:
    """A replace or rename would swap out the link itself, not what it points to: say so instead."""
    if path.is_symlink():
        where = f"{path} is a symbolic link (to {path.readlink()})"
        raise arg_error(what, f"{where}; point it at the real location")


def would_install(decision: Decision, asset: Asset, expected: Expected) -> str:
    """The dry-run summary: `would install 18.19.0 from ...` (fresh), `would install 1.0 -> 1.1 from ...`."""
    what = decision.summary.removeprefix("installed ") if decision.fresh else decision.summary
    if expected.sha256 is None:
        return f"would install {what} from {asset.name} UNVERIFIED (no SHA-256 published)"
    return f"would install {what} from {asset.name} (SHA-256 from {expected.source})"


def join_summaries(parts: Sequence[tuple[str, str]]) -> str:
    if len(parts) == 1:
        return parts[0][1]
    return "; ".join(f"{name} {summary}" for name, summary in parts)


def update_binaries(
    ctx: Context, repo: str, components: Sequence[BinaryComponent], *, final: Version | None = None
) -> dict[str, object]:
    """The whole flow for single-binary tools; closes the context's session when done."""
    with contextlib.closing(ctx.session):
        return _update_binaries(ctx, repo, components, final)


def _update_binaries(
    ctx: Context, repo: str, components: Sequence[BinaryComponent], final: Version | None
) -> dict[str, object]:
    common = ctx.common
    # What is installed first: a tool that is absent and not to be installed needs no request at all.
    installed = {comp.name: installed_version(comp.plan.target, comp.plan.probe) for comp in components}
    parts: list[tuple[str, str]] = []
    if all(absent_and_unwanted(installed[comp.name], common) for comp in components):
        return {"changed": False, "summary": join_summaries([(c.name, NOT_INSTALLED) for c in components])}
    release, version = lookup(ctx, repo)
    done: list[str] = []  # the components installed so far in this run
    changed = False
    for comp in components:
        target = comp.plan.target
        current = installed[comp.name]
        if absent_and_unwanted(current, common):
            parts.append((comp.name, NOT_INSTALLED))
            continue
        decision = decide(
            comp.name,
            current,
            version,
            install_missing=common.install_missing,
            pinned=bool(common.version),
            final=final,
        )
        if not decision.install:
            parts.append((comp.name, decision.summary))
            continue
        refuse_symlink(target, comp.path_key)
        names = [] if comp.choose else comp.asset_names(ctx.platform, version, ctx.libcs)
        asset, expected = verified_asset(
            ctx, release, version, names, comp.checksum_files, choose=comp.choose
        )
        if comp.warning:
            log.warning("%s", comp.warning)
        if common.dry_run:
            parts.append((comp.name, would_install(decision, asset, expected)))
            continue
        if not target.parent.is_dir():
            missing = f"{target.parent} does not exist; create it or change {comp.path_key}"
            raise arg_error(comp.path_key, missing)
        try:
            _install_component(ctx, comp, asset, expected, version=version, current=current)
        except UpdatesError as exc:
            if not done:
                raise
            # The earlier binaries stay upgraded (they passed their own checks); say so, or the
            # administrator reading "failed" would think nothing changed.
            raise PartialUpdate(
                f"{exc}; already done, and kept: {'; '.join(done)}", hint=exc.hint
            ) from exc
        changed = True
        done.append(f"{comp.name} {decision.summary}")
        parts.append((comp.name, decision.summary))
    return {"changed": changed, "summary": join_summaries(parts)}


def _install_component(
    ctx: Context,
    comp: BinaryComponent,
    asset: Asset,
    expected: Expected,
    *,
    version: Version,
    current: Version | None,
) -> None:
    """Download, extract the one member and install it (see `install_binary` for the undo)."""
    target = comp.plan.target
    member = comp.member(asset.name)
    sweep_stale(target.parent, [f".{asset.name}.*.part", f".{Path(member).name}.*.new"])
    journal = module_journal_dir(ctx.common.state_dir)
    temps = [(f".{asset.name}.", ".part"), (f".{Path(member).name}.", ".new")]
    with (
        journaled_temps(journal, target.parent, temps, describe=f"download of {asset.name}"),
        downloaded(
            ctx.session, asset, target.parent, expected, allow_unverified=ctx.common.allow_unverified
        ) as archive,
    ):
        new_file = extract_file(
            archive,
            member,
            target.parent,
            label=f"{asset.name} (release {version})",
            anywhere=comp.member_anywhere,
        )
        try:
            install_binary(comp.plan, new_file, version, current, journal=journal, source=asset.name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                new_file.unlink()
