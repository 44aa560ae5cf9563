"""Asking an installed binary for its version as root: root never runs a file another user can change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from updates.gogs.index import PROBE
from updates.utils.release.binary import InstallError, installed_version
from updates.utils.release.version import Version

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root's runs change identity")
SERVICE_UID = 4242

GOGS = """#!/bin/sh
# What an attacker with the git account would plant: it records who ran it.
id -u > "$(dirname "$0")/ran-as"
echo "Gogs version 0.13.4"
"""


def _install(directory: Path, owner: int) -> Path:
    directory.mkdir(parents=True)
    binary = directory / "gogs"
    binary.write_text(GOGS)
    binary.chmod(0o755)
    for path in (directory, binary):
        os.chown(path, owner, owner)
    return binary


@needs_root
def test_a_binary_the_service_user_owns_is_probed_as_that_user(tmp_path: Path) -> None:
    binary = _install(tmp_path / "home" / "git" / "gogs", SERVICE_UID)
    assert installed_version(binary, PROBE) == Version.parse("0.13.4")
    assert (binary.parent / "ran-as").read_text().strip() == str(SERVICE_UID)


@needs_root
def test_a_root_owned_binary_in_a_root_owned_directory_is_probed_as_root(tmp_path: Path) -> None:
    binary = _install(tmp_path / "opt" / "gogs", 0)
    assert installed_version(binary, PROBE) == Version.parse("0.13.4")
    assert (binary.parent / "ran-as").read_text().strip() == "0"


@needs_root
def test_a_binary_others_may_write_is_never_run(tmp_path: Path) -> None:
    binary = _install(tmp_path / "opt" / "gogs", 0)
    binary.chmod(0o775)  # group-writable: whoever is in the group could replace what root runs
    with pytest.raises(InstallError, match=r"version check failed: refusing to run .*writable by group"):
        installed_version(binary, PROBE)
    assert not (binary.parent / "ran-as").exists()
