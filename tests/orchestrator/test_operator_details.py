"""Small things an operator meets (issue 13, item 8): --metrics-file obeys the manifest key's rule, every
command's --help says what it does and names UPDATES_STATE_DIR, a group shows no LAST APPLIED."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestrator_support import OK_MODULE, add_module, group, write_manifest
from updates.utils.orchestrator.cli import main


@pytest.fixture
def root(tmp_path: Path) -> Path:
    add_module(tmp_path, "alpha", OK_MODULE)
    write_manifest(tmp_path, [group(["alpha"]), {"name": "alpha"}])
    return tmp_path


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("metrics.prom", "must be an absolute path"),
        ("/var/lib/node_exporter/updates.txt", "must end in .prom (node_exporter reads only *.prom)"),
    ],
)
def test_metrics_file_option_follows_the_manifest_rule(
    root: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    assert main(["run", "--metrics-file", value], root=root) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: index.py run: argument --metrics-file: {message}"
    assert not (root / "state").exists()  # refused before anything ran


def test_a_good_metrics_file_is_written(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "updates.prom"
    assert main(["run", "--metrics-file", str(target)], root=root) == 0
    assert "updates_run_ok 1" in target.read_text()


@pytest.mark.parametrize("command", ["run", "status", "verify", "history"])
def test_every_command_help_describes_it_and_names_the_state_variable(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    # argparse prints: usage paragraph, blank line, description paragraph, blank line, "options:".
    paragraphs = out.split("\n\n")
    assert paragraphs[0].startswith(f"usage: index.py {command}")
    assert not paragraphs[1].startswith("options:") and len(paragraphs[1]) > 40, out
    text = " ".join(out.split())
    assert "UPDATES_STATE_DIR" in text and "/var/lib/updates" in text


def test_a_group_shows_no_last_applied(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"], root=root) == 0
    capsys.readouterr()
    assert main(["status"], root=root) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:3]}
    assert rows["all_services"][:5] == ["all_services", "yes", "-", "-", "-"]
    assert rows["alpha"][4].endswith("Z")


def test_the_first_run_on_a_new_install_says_what_it_changes(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = root / "manifest.json"
    write_manifest(root, [group(["alpha"]), {"name": "alpha", "description": "writes /etc/hosts"}])
    assert manifest.exists()
    assert main(["run", "--dry-run"], root=root) == 0  # a dry run changes nothing: nothing to warn about
    assert "first run" not in capsys.readouterr().err
    (root / "state" / "history.jsonl").unlink()
    assert main(["run"], root=root) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"warning: first run with the state in {root / 'state'}: this run changes the system: "
        "alpha (writes /etc/hosts). `index.py run --dry-run` shows what would change without changing anything"
    ]
    assert main(["run"], root=root) == 0
    assert capsys.readouterr().err == ""
