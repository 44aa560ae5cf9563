"""The asset choice of the installer behind `index.py new`, on the real release asset names."""

from __future__ import annotations

import pytest
from release_support import fixture_facts
from updates.utils.release.assets import NoAssetError, Platform, libc_order
from updates.utils.release.generic import choose_linux_asset
from updates.utils.release.github import Asset, Release


def real_release(tool: str, tag: str) -> Release:
    entry = next(r for r in fixture_facts()[tool]["releases"] if r["tag"] == tag)
    names = [a if isinstance(a, str) else a["name"] for a in entry["assets"]]
    return Release(f"x/{tool}", tag, False, False, tuple(Asset(n, 1, "", "") for n in names))


@pytest.mark.parametrize(
    "case",
    [
        ("filebrowser", "v2.63.23", "x86_64", "gnu", "", "linux-amd64-filebrowser.tar.gz"),
        ("filebrowser", "v2.63.23", "aarch64", "musl", "", "linux-arm64-filebrowser.tar.gz"),
        ("filebrowser", "v2.63.23", "i686", "gnu", "", "linux-386-filebrowser.tar.gz"),
        ("gogs", "v0.14.3", "x86_64", "gnu", "", "gogs_0.14.3_linux_amd64.tar.gz"),
        ("gogs", "v0.14.3", "aarch64", "gnu", "", "gogs_0.14.3_linux_arm64.tar.gz"),
        ("atuin", "v18.19.0", "x86_64", "gnu", r"atuin-x86_64.*", "atuin-x86_64-unknown-linux-gnu.tar.gz"),
        ("atuin", "v18.19.0", "x86_64", "musl", r"atuin-[^s].*", "atuin-x86_64-unknown-linux-musl.tar.gz"),
        ("atuin", "v18.19.0", "aarch64", "gnu", r"atuin-server-.*", "atuin-server-aarch64-unknown-linux-gnu.tar.gz"),
    ],
)
def test_the_linux_archive_for_this_machine_is_found(case: tuple[str, str, str, str, str, str]) -> None:
    tool, tag, arch, libc, regex, expected = case
    where = Platform("linux", arch, libc)
    assert choose_linux_asset(real_release(tool, tag), where, libc_order(libc), regex).name == expected


def test_several_candidates_are_an_error_not_a_guess() -> None:
    with pytest.raises(NoAssetError, match=r"several fit .*atuin-server-x86_64.*set the asset_regex arg"):
        choose_linux_asset(real_release("atuin", "v18.19.0"), Platform("linux", "x86_64", "gnu"), ["gnu", "musl"])


def test_no_build_for_this_arch_lists_what_there_is() -> None:
    with pytest.raises(NoAssetError, match=r"none fits this machine \(linux/riscv64 \(gnu\)\).*available: gogs_"):
        choose_linux_asset(real_release("gogs", "v0.14.3"), Platform("linux", "riscv64", "gnu"), ["gnu"])
