"""`verify` and the GitHub token file the unit reads (EnvironmentFile=): it warns when others can read it."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestrator_support import OK_MODULE, add_module, group, write_manifest
from updates.utils.orchestrator.cli import main


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "root"
    add_module(directory, "alpha", OK_MODULE)
    write_manifest(directory, [group(["alpha"]), {"name": "alpha"}])
    monkeypatch.setenv("UPDATES_TOKEN_FILE", str(tmp_path / "github.env"))
    return directory


def verify(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["verify"], root=root)
    return code, capsys.readouterr().out.splitlines()


def test_a_token_file_others_can_read_is_warned_about(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "github.env"
    token.write_text("GITHUB_TOKEN=ghp_secret\n")
    token.chmod(0o644)
    code, lines = verify(root, capsys)
    assert code == 0
    assert f"warning: the GitHub token file {token} is open to group and others (mode 0644); chmod 600 {token}" in lines
    assert lines[-1].endswith("modules verified; permissions checked (running as root); 1 warning above") or (
        lines[-1].endswith("modules verified; 1 warning above")
    )
    assert all("ghp_secret" not in line for line in lines)
    token.chmod(0o640)
    assert f"warning: the GitHub token file {token} is open to group (mode 0640); chmod 600 {token}" in (
        verify(root, capsys)[1]
    )
    token.chmod(0o600)
    code, lines = verify(root, capsys)
    assert code == 0 and not [line for line in lines if line.startswith("warning:")]


def test_no_token_file_is_no_warning(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = verify(root, capsys)
    assert code == 0 and not [line for line in lines if "token file" in line]


def test_a_link_at_the_token_files_place_is_warned_about(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("GITHUB_TOKEN=x\n")
    target.chmod(0o600)
    (tmp_path / "github.env").symlink_to(target)
    lines = verify(root, capsys)[1]
    assert any(line.startswith(f"warning: the GitHub token file {tmp_path / 'github.env'} is not a regular file")
               for line in lines)  # fmt: skip
