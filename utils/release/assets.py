"""Which release asset fits this machine: platform detection and a pure asset choice.

Contract:
- `normalize_arch` maps `platform.machine()` spellings onto canonical names: `x86_64` (x86_64/amd64),
  `aarch64` (aarch64/arm64), `armv7` (armv7l/armhf), `i686` (i686/i586/i386/x86), and the two that only
  some projects build, `armv6` (armv6l) and `riscv64`; anything else raises `NoAssetError`.
- `detect_platform` reads the OS, architecture and C library (glibc vs musl) of this machine; an explicit
  arch or libc (module args) overrides detection.
- `libc_order` is the module's libc preference: a musl host only gets musl builds; a glibc host gets the
  module's declared flavour first and the other second.
- `choose_asset` is pure: given a release and the candidate names the module's naming rule produced for
  this platform (best first), it returns exactly one asset or raises `NoAssetError` listing what the
  release does offer. Candidates never include another architecture, so there is no silent fallback.
"""

from __future__ import annotations

import os
import platform as _platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .github import Asset, Release, ReleaseError

ARCH_ALIASES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv8": "aarch64",
    "armv7": "armv7",
    "armv7l": "armv7",
    "armhf": "armv7",
    "armv6": "armv6",
    "armv6l": "armv6",
    "riscv64": "riscv64",
    "i686": "i686",
    "i586": "i686",
    "i386": "i686",
    "386": "i686",
    "x86": "i686",
}
LIBCS = ("gnu", "musl")


class NoAssetError(ReleaseError):
    """No asset of the release fits this machine."""


@dataclass(frozen=True)
class Platform:
    system: str  # "linux"
    arch: str  # one of the canonical names above
    libc: str  # "gnu" or "musl"

    def __str__(self) -> str:
        return f"{self.system}/{self.arch} ({self.libc})"


def normalize_arch(machine: str) -> str:
    arch = ARCH_ALIASES.get(machine.strip().lower())
    if arch is None:
        raise NoAssetError(
            f"unsupported machine architecture {machine!r} (known: {', '.join(sorted(ARCH_ALIASES))})"
        )
    return arch


def detect_libc(lib_dirs: Sequence[Path] = (Path("/lib"), Path("/usr/lib"))) -> str:
    """`gnu` when this Python runs on glibc, `musl` when a musl loader is present, else `gnu`."""
    try:
        if os.confstr("CS_GNU_LIBC_VERSION"):
            return "gnu"
    except (ValueError, OSError, AttributeError):
        pass
    for directory in lib_dirs:
        if any(directory.glob("ld-musl-*")):
            return "musl"
    return "gnu"


def detect_platform(arch: str | None = None, libc: str | None = None, system: str | None = None) -> Platform:
    system = (system or _platform.system()).lower()
    if system != "linux":
        raise NoAssetError(f"unsupported operating system {system!r}: these modules install Linux builds")
    if libc is not None and libc not in LIBCS:
        raise NoAssetError(f"unknown libc {libc!r} (use one of {', '.join(LIBCS)})")
    return Platform(system, normalize_arch(arch or _platform.machine()), libc or detect_libc())


def libc_order(host_libc: str, preferred: str = "gnu") -> list[str]:
    """The libc flavours to try, best first, for a host with `host_libc`."""
    if host_libc == "musl":
        return ["musl"]  # a glibc build does not run on a musl host
    other = "musl" if preferred == "gnu" else "gnu"
    return [preferred, other]


def choose_asset(release: Release, candidates: Sequence[str], where: Platform) -> Asset:
    """The first of `candidates` that `release` has; otherwise `NoAssetError` listing what it has."""
    for name in candidates:
        asset = release.find(name)
        if asset is not None:
            return asset
    available = ", ".join(a.name for a in release.assets) or "no assets at all"
    wanted = ", ".join(candidates) or f"nothing is built for {where.arch}"
    raise NoAssetError(
        f"{release.repo} {release.tag} has no asset for {where} (looked for: {wanted}); "
        f"available: {available}"
    )
