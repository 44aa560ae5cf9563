"""Any GitHub-release tool that ships one binary in a Linux tar.gz: the installer behind `index.py new`.

Contract: a module made by `index.py new` is a few lines: a `GitHubTool` (repository, binary name and,
optionally, service unit and health URL) and `main(args)` calling `update_tool(tool, args)`. That runs the
shared flow of `update.update_binaries` (installed version first, no request for an absent tool that is
not to be installed; one conditional release lookup; digest-verified download; version check of the new
binary; atomic replace with backup; service stop/start and health check; undo on failure), with what the
three hand-written modules fix by name found from the release instead:
- the asset: a `.tar.gz`/`.tgz` whose name says Linux and this machine's architecture (any of its common
  spellings: x86_64/amd64/x64, aarch64/arm64, ...), the libc flavour this host runs preferred; several
  equally good candidates, or none, is an error listing what the release has (never a guess);
- the binary: the one regular file named like the binary anywhere in the archive;
- the digest: the API's `digest`, else `<asset>.sha256` or a checksum file the release publishes;
- the version: the first `X.Y[.Z]` in the output of `<binary> --version` (the `version_args` arg).
Module args: the common ones (`args.COMMON`) plus `binary_path`, `service`, `health_url`, `version_args`
and `asset_regex` (only assets whose whole name matches it are considered, for releases of several tools).
A health check passes on any HTTP 200 answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..argspec import arg_error, path_arg, url_arg
from .args import read_args
from .assets import ARCH_ALIASES, NoAssetError, Platform
from .binary import BinaryInstall, ServicePlan, VersionProbe
from .github import Asset, Release
from .update import BinaryComponent, open_context, update_binaries
from .version import Version

VERSION_PATTERN = r"(?<![\w.])v?(\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.]+)?)(?![\w.])"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
CHECKSUM_NAMES = ("checksums.txt", "sha256sums.txt", "SHA256SUMS", "sha256sum.txt", "checksums.sha256")


@dataclass(frozen=True)
class GitHubTool:
    repo: str  # owner/name
    binary: str  # the executable's file name, in the archive and installed
    service: str = ""  # systemd unit to restart around the switch ("" for none)
    health_url: str = ""  # polled after the restart until it answers 200 ("" for none)


def own_args(tool: GitHubTool) -> dict[str, tuple[Any, Any]]:
    return {
        "binary_path": (f"/usr/local/bin/{tool.binary}", str),
        "service": (tool.service, str),
        "health_url": (tool.health_url, str),
        "version_args": (["--version"], list),
        "asset_regex": ("", str),
    }


def arch_words(arch: str) -> set[str]:
    """Every spelling of `arch` in asset names (`x86_64` -> x86_64, amd64, x64)."""
    return {alias for alias, canonical in ARCH_ALIASES.items() if canonical == arch} - {"x86"}


def _tokens(name: str) -> set[str]:
    """The words of an asset name (`x86_64` kept whole): `tool-v1.2-x86_64-unknown-linux-gnu.tar.gz` ->
    tool, v1, 2, x86_64, unknown, linux, gnu, tar, gz."""
    return set(re.findall(r"x86_64|[a-z0-9]+", name.lower()))


def choose_linux_asset(
    release: Release, where: Platform, libcs: Sequence[str], regex: str = ""
) -> Asset:
    """The one Linux tar.gz for this architecture (among those `regex` matches in full, when given), best
    libc first; `NoAssetError` when none or several fit."""
    words = arch_words(where.arch)
    fitting = [
        a
        for a in release.assets
        if (not regex or re.fullmatch(regex, a.name))
        and a.name.lower().endswith(ARCHIVE_SUFFIXES)
        and "linux" in _tokens(a.name)
        and words & _tokens(a.name)
    ]
    if fitting:
        for libc in libcs:
            flavoured = [a for a in fitting if libc in _tokens(a.name)]
            if len(flavoured) == 1:
                return flavoured[0]
        plain = [a for a in fitting if not {"gnu", "musl"} & _tokens(a.name)]
        if len(plain) == 1:
            return plain[0]
    available = ", ".join(a.name for a in release.assets) or "no assets at all"
    what = "several fit" if len(fitting) > 1 else "none fits"
    advice = "; set the asset_regex arg to pick one" if len(fitting) > 1 else ""
    raise NoAssetError(
        f"{release.repo} {release.tag}: {what} this machine ({where}) among the Linux .tar.gz assets; "
        f"available: {available}{advice}"
    )


def checksum_files(repo: str) -> Any:
    name = repo.split("/", 1)[1]

    def names(asset: str, version: Version) -> list[str]:
        return [f"{asset}.sha256", f"{name}_{version}_checksums.txt", *CHECKSUM_NAMES]

    return names


def update_tool(tool: GitHubTool, args: Mapping[str, Any]) -> dict[str, object]:
    """The module's `main`: see the module docstring."""
    common, own = read_args(args, own_args(tool))
    binary = path_arg(own, "binary_path")
    version_args = own["version_args"]
    if not version_args or not all(isinstance(a, str) and a for a in version_args):
        raise arg_error("version_args", 'must be a non-empty list of strings, e.g. ["--version"]')
    regex = own["asset_regex"]
    try:
        re.compile(regex)
    except re.error as exc:
        raise arg_error("asset_regex", f"not a regular expression: {exc}") from exc
    ctx = open_context(common)
    service = None
    if own["service"]:
        health = ctx.health(url_arg(own, "health_url"), any_answer) if own["health_url"] else None
        service = ServicePlan(own["service"], ctx.services(), health)
    probe = VersionProbe(tuple(version_args), VERSION_PATTERN)
    plan = BinaryInstall(binary, probe, ctx.backup_dir(), common.keep_backups, service)
    component = BinaryComponent(
        tool.binary,
        lambda _where, _version, _libcs: [],
        lambda _asset: tool.binary,
        checksum_files(tool.repo),
        plan,
        choose=lambda release, where, libcs: choose_linux_asset(release, where, libcs, regex),
        member_anywhere=True,
    )
    return update_binaries(ctx, tool.repo, [component])


def any_answer(body: str) -> bool:
    return True


any_answer.__doc__ = "any HTTP 200 answer"
