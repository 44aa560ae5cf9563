"""systemd units, their installer, the cron example and the shell helpers.

The installer runs for real as a child process, writing into a temporary directory and calling a fake
systemctl (a script that records its arguments); the rendered units are checked by `systemd-analyze verify`
where it is installed."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
INSTALLER = CONFIG / "install_units.sh"


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={**base, **(env or {})}, check=False
    )


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        assert current is not None, f"setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        sections[current].append((key, value))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


@pytest.fixture
def install(tmp_path: Path) -> dict[str, Path]:
    """An installation directory with index.py and an executable venv python, a fake systemctl, a dest."""
    root = tmp_path / "opt-updates"
    (root / "venv" / "bin").mkdir(parents=True)
    (root / "index.py").write_text("# stands in for the orchestrator\n")
    (root / "README.md").write_text("readme\n")
    python = root / "venv" / "bin" / "python"
    shutil.copy(shutil.which("true") or "/bin/true", python)  # systemd-analyze wants a real executable
    calls = tmp_path / "systemctl.calls"
    fake = tmp_path / "fake-systemctl"
    fake.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {calls}\nexit "${{FAKE_SYSTEMCTL_EXIT:-0}}"\n')
    fake.chmod(0o755)
    return {"root": root, "python": python, "dest": tmp_path / "units", "fake": fake, "calls": calls}


def installer(install: dict[str, Path], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run(
        ["bash", str(INSTALLER), "--root", str(install["root"]), "--systemctl", str(install["fake"]), *args],
        env={"UPDATES_UNIT_DIR": str(install["dest"]), **(env or {})},
    )


def calls(install: dict[str, Path]) -> list[str]:
    path = install["calls"]
    return path.read_text().splitlines() if path.exists() else []


# -- shell scripts -----------------------------------------------------------------------------------


def shell_scripts() -> list[Path]:
    return sorted({*CONFIG.glob("*.sh"), *ROOT.glob("*.sh")})


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.name)
def test_every_shell_script_parses(script: Path) -> None:
    result = run(["bash", "-n", str(script)])
    assert result.returncode == 0, result.stderr


def test_utils_sh_helpers_under_strict_mode(tmp_path: Path) -> None:
    script = (
        "set -euo pipefail\n"
        f". {CONFIG / 'utils.sh'}\n"
        "log_info hello world\n"
        "log_warn careful\n"
        "require_cmd bash sed\n"
        "is_dry_run && echo dry || echo real\n"
        'report_changed "1.0 -> 1.1"\n'
        "die the end\n"
        "echo never reached\n"
    )
    result = run(["bash", "-c", script], env={"UPDATES_RESULT": str(tmp_path / "result")})
    assert result.returncode == 1
    assert result.stdout == "real\n"
    assert result.stderr.splitlines() == ["info: hello world", "warning: careful", "error: the end"]
    assert (tmp_path / "result").read_text() == "changed\t1.0 -> 1.1\n"

    missing = run(["bash", "-c", f"set -euo pipefail; . {CONFIG / 'utils.sh'}; require_cmd bash no-such-cmd-x"])
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: required command not found: no-such-cmd-x"

    dry = run(["bash", "-c", f"set -euo pipefail; . {CONFIG / 'utils.sh'}; is_dry_run; report_ok x"], env={"UPDATES_DRY_RUN": "1"})
    assert dry.returncode == 0  # report_ok without UPDATES_RESULT is a no-op, not an error


def test_require_root(tmp_path: Path) -> None:
    result = run(["bash", "-c", f"set -euo pipefail; . {CONFIG / 'utils.sh'}; require_root 'this test'; echo root"])
    if os.geteuid() == 0:
        assert (result.returncode, result.stdout) == (0, "root\n")
    else:
        assert result.returncode == 1
        assert result.stderr.strip() == "error: this test must run as root (try sudo)"


# -- rendering and systemd-analyze ---------------------------------------------------------------------


def test_rendered_units_have_the_real_paths(install: dict[str, Path]) -> None:
    result = installer(install, "--no-systemctl")
    assert result.returncode == 0, result.stderr
    service_text = (install["dest"] / "updates.service").read_text()
    assert "@" not in service_text.replace("updates@", "")
    service = parse_unit(service_text)["Service"]
    assert values(service, "Type") == ["oneshot"]
    assert values(service, "ExecStart") == [f"{install['python']} {install['root']}/index.py run"]
    assert values(service, "WorkingDirectory") == [str(install["root"])]
    assert values(service, "StateDirectory") == ["updates"]
    assert values(service, "LogsDirectory") == ["updates"]
    # root's defaults are the unit's directories: a hand run without any export reads the same state.
    assert not [v for v in values(service, "Environment") if v.startswith(("UPDATES_STATE_DIR=", "UPDATES_LOG_DIR="))]
    # The GitHub token comes from a root-only file, when there is one.
    assert values(service, "EnvironmentFile") == ["-/etc/updates/github.env"]
    assert values(service, "TimeoutStartSec") == ["2h"]
    assert values(service, "SuccessExitStatus") == ["75"]
    assert values(service, "Nice") == ["10"]
    # Modules write /usr/local, /etc and /home/git/gogs: nothing may make those read-only.
    for directive in ("ProtectSystem", "ProtectHome", "PrivateDevices", "ReadOnlyPaths", "InaccessiblePaths"):
        assert not values(service, directive), f"{directive} would stop modules from doing their jobs"
    timer = parse_unit((install["dest"] / "updates.timer").read_text())
    assert values(timer["Timer"], "OnCalendar") == ["daily"]
    assert values(timer["Timer"], "Persistent") == ["true"]
    assert values(timer["Timer"], "RandomizedDelaySec") == ["1h"]
    assert values(timer["Install"], "WantedBy") == ["timers.target"]
    for unit in ("updates.service", "updates.timer"):
        assert stat.S_IMODE((install["dest"] / unit).stat().st_mode) == 0o644
    assert calls(install) == []


def test_systemd_analyze_verify_accepts_the_rendered_units(install: dict[str, Path]) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install systemd to run this check)")
    assert installer(install, "--no-systemctl").returncode == 0
    service, timer = install["dest"] / "updates.service", install["dest"] / "updates.timer"
    result = run([analyze, "verify", str(service), str(timer)])
    # verify exits 0 on unknown keys but warns: any line naming our files is a problem too.
    ours = [line for line in result.stderr.splitlines() if "updates.service" in line or "updates.timer" in line]
    assert result.returncode == 0, result.stderr
    assert ours == []
    # And it does catch a broken unit here, so the check above means something.
    install["python"].unlink()
    broken = run([analyze, "verify", str(service)])
    assert broken.returncode != 0 and "not executable" in broken.stderr


# -- installing, idempotence, uninstalling --------------------------------------------------------------


def test_install_enables_the_timer_and_a_second_run_changes_nothing(install: dict[str, Path]) -> None:
    first = installer(install)
    assert first.returncode == 0, first.stderr
    assert calls(install) == ["daemon-reload", "enable --now updates.timer"]
    service = install["dest"] / "updates.service"
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in install["dest"].iterdir()}

    second = installer(install)
    assert second.returncode == 0, second.stderr
    after = {p.name: (p.stat().st_ino, p.read_bytes()) for p in install["dest"].iterdir()}
    assert after == before  # same files, not even rewritten; no temp files left
    assert calls(install) == ["daemon-reload", "enable --now updates.timer", "enable --now updates.timer"]

    other_python = install["root"] / "venv" / "bin" / "python3"
    shutil.copy(install["python"], other_python)
    third = installer(install, "--python", str(other_python))
    assert third.returncode == 0, third.stderr
    assert f"ExecStart={other_python} " in service.read_text()
    assert calls(install)[-2:] == ["daemon-reload", "enable --now updates.timer"]


def test_no_enable_only_reloads(install: dict[str, Path]) -> None:
    assert installer(install, "--no-enable").returncode == 0
    assert calls(install) == ["daemon-reload"]


def test_uninstall_undoes_the_install_and_is_idempotent(install: dict[str, Path]) -> None:
    assert installer(install).returncode == 0
    removed = installer(install, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert sorted(p.name for p in install["dest"].iterdir()) == []
    assert calls(install)[2:] == ["disable --now updates.timer", "daemon-reload"]
    again = installer(install, "--uninstall")
    assert again.returncode == 0, again.stderr
    assert len(calls(install)) == 4  # nothing installed: systemctl is left alone


def test_a_failing_systemctl_fails_the_install(install: dict[str, Path]) -> None:
    result = installer(install, env={"FAKE_SYSTEMCTL_EXIT": "1"})
    assert result.returncode == 1
    assert "error: systemctl daemon-reload failed" in result.stderr
    # Uninstalling goes on when the timer cannot be disabled (already gone from systemd, say).
    result = installer(install, "--uninstall", env={"FAKE_SYSTEMCTL_EXIT": "1"})
    assert result.returncode == 1  # the final daemon-reload failed
    assert not (install["dest"] / "updates.timer").exists()


@pytest.mark.parametrize(
    ("setup", "args", "message", "code"),
    [
        ("no-index", [], "index.py not found", 1),
        ("no-python", [], "is not an executable file: run ./setup_venv.sh", 1),
        ("space", [], "may contain only letters, digits", 1),
        (None, ["--bogus"], "unknown option: --bogus", 2),
        (None, ["--python"], "--python needs a value", 2),
        (None, ["--python", "relative/python"], "must be an absolute path", 2),
    ],
)
def test_refusals(
    install: dict[str, Path], tmp_path: Path, setup: str | None, args: list[str], *, message: str, code: int
) -> None:
    if setup == "no-index":
        (install["root"] / "index.py").unlink()
    elif setup == "no-python":
        install["python"].chmod(0o644)
    elif setup == "space":
        spaced = tmp_path / "with space"
        install["root"].rename(spaced)
        install["root"] = spaced
    result = installer(install, *args)
    assert result.returncode == code  # 2: a usage error, as index.py gives
    assert message in result.stderr
    assert not install["dest"].exists() or list(install["dest"].iterdir()) == []
    assert calls(install) == []


@pytest.mark.parametrize("args", [["--bogus"], ["--python", "relative/python"], ["--root"]])
def test_a_usage_error_is_the_only_thing_said(tmp_path: Path, args: list[str]) -> None:
    # With the real systemctl and no systemd running (a container), the warning about systemd must not come
    # before the mistake on the command line: one line, exit 2, nothing written.
    result = run(["bash", str(INSTALLER), *args], env={"UPDATES_UNIT_DIR": str(tmp_path / "units")})
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert not (tmp_path / "units").exists()


def test_help() -> None:
    result = run(["bash", str(INSTALLER), "--help"])
    assert result.returncode == 0
    assert "--uninstall" in result.stdout and "UPDATES_UNIT_DIR" in result.stdout


# -- cron ------------------------------------------------------------------------------------------------


def test_cron_example_is_well_formed() -> None:
    jobs = []
    for line in (CONFIG / "updates.cron").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "=" in line.split()[0]:
            continue  # VAR=value lines
        fields = line.split(None, 6)
        assert len(fields) == 7, line
        jobs.append(fields)
    assert len(jobs) == 1
    minute, hour, dom, month, dow, user, command = jobs[0]
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24 and (dom, month, dow) == ("*", "*", "*")
    assert user == "root"
    assert "%" not in command  # cron would turn it into a newline
    assert "/venv/bin/python " in command and "/index.py run" in command
    # cron runs the line with the SHELL the file sets (/bin/sh: dash on Debian), not bash.
    assert "SHELL=/bin/sh" in (CONFIG / "updates.cron").read_text().splitlines()
    for shell in ("/bin/sh", "bash"):
        result = run([shell, "-n", "-c", command])
        assert result.returncode == 0, (shell, result.stderr)


@pytest.mark.parametrize("content", ["GITHUB_TOKEN=ghp_secret\n", "# a comment\nGITHUB_TOKEN=ghp_secret\n", None])
def test_cron_reads_the_token_file_without_running_it(tmp_path: Path, content: str | None) -> None:
    (command,) = [line.split(None, 6)[6] for line in (CONFIG / "updates.cron").read_text().splitlines()
                  if line[:1].isdigit()]  # fmt: skip
    token_file = tmp_path / "github.env"
    if content is not None:
        token_file.write_text(content + "touch " + str(tmp_path / "ran") + "\n")
    # The same line, with the token file here and a command that shows what the run would get.
    line = command.replace("/etc/updates/github.env", str(token_file)).replace("sleep $(", "true $(")
    start = line.index("GITHUB_TOKEN=")
    line = line[:start] + line[start:line.index(" nice ")] + " env"
    result = run(["/bin/sh", "-c", line])
    assert result.returncode == 0, result.stderr
    tokens = [v for v in result.stdout.splitlines() if v.startswith("GITHUB_TOKEN=")]
    assert tokens == (["GITHUB_TOKEN=ghp_secret"] if content else ["GITHUB_TOKEN="])
    assert not (tmp_path / "ran").exists()  # read, never sourced


def test_the_start_guard_is_above_the_shipped_modules_own_timeouts() -> None:
    # TimeoutStartSec kills the whole run: the modules' own timeouts, one after another, must fit below it.
    service = parse_unit((CONFIG / "updates.service").read_text())["Service"]
    (guard,) = values(service, "TimeoutStartSec")
    assert guard.endswith("h")
    entries = json.loads((ROOT / "manifest.json").read_text())["updates"]
    total = sum(e["timeout"] for e in entries if "children" not in e and isinstance(e.get("timeout"), (int, float)))
    assert 0 < total < int(guard[:-1]) * 3600, f"modules may run {total} s, the unit stops them at {guard}"
