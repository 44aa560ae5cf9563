"""The command line as an operator meets it: real subprocesses of index.py in a real installation."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from orchestrator_support import (
    CHANGED_MODULE,
    OK_MODULE,
    RECORDING_MODULE,
    add_module,
    group,
    install_copy,
    read_manifest,
    run_index,
    write_manifest,
)
from updates.utils.orchestrator.cli import main


@pytest.fixture
def install(tmp_path, monkeypatch):
    monkeypatch.setenv("UPDATES_STATE_DIR", str(tmp_path / "updates" / "state"))
    return install_copy(tmp_path / "updates")


def test_full_run_as_a_subprocess(install):
    add_module(install, "alpha", CHANGED_MODULE)
    add_module(install, "beta", "def main(args):\n    raise OSError('boom')\n")
    add_module(install, "gamma", RECORDING_MODULE)
    write_manifest(install, [group(["alpha", "beta", "gamma"]), {"name": "alpha"}, {"name": "beta"},
                             {"name": "gamma"}])
    proc = run_index(install, "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert [(m["name"], m["status"]) for m in report["modules"]] == [
        ("alpha", "changed"), ("beta", "failed"), ("gamma", "ok")]
    first, *rest = proc.stderr.strip().splitlines()
    assert first.startswith("warning: first run with the state in ")  # a new install: said once
    assert rest == ["error: beta: failed: OSError: boom"]
    assert read_manifest(install)["updates"][1]["lastApplied"]
    # Nothing was compiled into the module directories (our own utils/ may cache its bytecode).
    assert [p.parent.name for p in install.glob("*/__pycache__")] in ([], ["utils"])


def test_cwd_name_does_not_matter_and_default_command_is_run(tmp_path, monkeypatch):
    install = install_copy(tmp_path / "main")  # a checkout folder not called "updates"
    add_module(install, "alpha", OK_MODULE)
    write_manifest(install, [group(["alpha"]), {"name": "alpha"}])
    proc = subprocess.run([sys.executable, str(install / "index.py"), "-q"], cwd="/", capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("alpha: ok ")


def test_second_run_while_the_lock_is_held_exits_75(install):
    add_module(install, "alpha", RECORDING_MODULE)
    write_manifest(install, [group(["alpha"]), {"name": "alpha"}])
    (install / "state").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time\n"
         "fh = open(sys.argv[1], 'a')\n"
         "fcntl.flock(fh, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n",
         str(install / "state" / "updates.lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        proc = run_index(install)
        assert proc.returncode == 75
        assert "another run holds the lock" in proc.stderr
        assert not (install / "state" / "modules" / "alpha" / "calls.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert run_index(install).returncode == 0  # released when the holder died


def test_lock_held_in_process(tmp_path, capsys, monkeypatch):
    from updates.utils.lock import run_lock
    from updates.utils.paths import Paths

    add_module(tmp_path, "alpha", OK_MODULE)
    write_manifest(tmp_path, [group(["alpha"]), {"name": "alpha"}])
    with run_lock(Paths.create(tmp_path)):
        assert main(["run"], root=tmp_path) == 75
    assert main(["run"], root=tmp_path) == 0


def test_ctrl_c_during_a_module_prints_summary_and_exits_130(install):
    add_module(install, "first", CHANGED_MODULE)
    add_module(install, "sleeper", "import time\ndef main(args):\n    print('sleeping', flush=True)\n    time.sleep(60)\n")
    add_module(install, "never", RECORDING_MODULE)
    write_manifest(install, [group(["first", "sleeper", "never"]), {"name": "first"}, {"name": "sleeper"},
                             {"name": "never"}])
    proc = subprocess.Popen([sys.executable, str(install / "index.py")], cwd=install, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "sleeping"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    lines = out.splitlines()
    assert lines[0].startswith("first: changed (1.0 -> 1.1)")
    assert lines[1].startswith("sleeper: failed (interrupted)")
    assert lines[2] == "never: skipped (not run: interrupted)"
    assert "(interrupted)" in lines[-1]
    assert "sleeper: interrupted" in err
    assert not (install / "state" / "modules" / "never" / "calls.jsonl").exists()
    entries = {e["name"]: e for e in read_manifest(install)["updates"]}
    assert entries["first"].get("lastApplied")
    assert not entries["sleeper"].get("lastApplied")


def test_sigkill_mid_run_leaves_a_valid_manifest_and_frees_the_lock(install):
    add_module(install, "sleeper", "import time\ndef main(args):\n    print('in', flush=True)\n    time.sleep(60)\n")
    write_manifest(install, [group(["sleeper"]), {"name": "sleeper"}])
    before = (install / "manifest.json").read_bytes()
    proc = subprocess.Popen([sys.executable, str(install / "index.py")], cwd=install, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"in"
    proc.kill()
    proc.wait(timeout=10)
    assert (install / "manifest.json").read_bytes() == before
    add_module(install, "sleeper", OK_MODULE)
    assert run_index(install).returncode == 0


def test_help_does_not_import_requests(install):
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{str(install / 'index.py')!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(install / 'index.py')!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print('REQUESTS' if 'requests' in sys.modules else 'CLEAN', code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout.strip().splitlines()[-1] == "CLEAN 0"
    assert "usage: index.py" in proc.stdout


def test_usage_errors_exit_2(install):
    write_manifest(install, [group([])])
    proc = run_index(install, "--bogus")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: index.py: unrecognized arguments: --bogus")
    assert run_index(install, "status", "--dry-run").returncode == 2


def test_global_options_before_the_command(install):
    add_module(install, "alpha", OK_MODULE)
    write_manifest(install, [group(["alpha"]), {"name": "alpha"}])
    proc = run_index(install, "-q", "status", "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["modules"][1]["checksum"] == "ok"


def test_status_shows_versions_and_checksum_state(install):
    add_module(install, "alpha", OK_MODULE)
    broken = add_module(install, "beta", OK_MODULE)
    (broken / "extra.py").write_text("x = 1\n")
    add_module(install, "gamma", OK_MODULE, seal=False)
    write_manifest(install, [group(["alpha", "beta", "gamma"]),
                             {"name": "alpha", "version": "1.2", "lastSafeVersion": "1.1",
                              "lastApplied": "2024-06-10T15:23:00Z"},
                             {"name": "beta", "enabled": False}, {"name": "gamma"}])
    proc = run_index(install, "status")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ENABLED", "VERSION", "LAST", "SAFE", "LAST", "APPLIED", "CHECKSUM",
                                "LAST", "RUN", "AT"]
    assert lines[2].split() == ["alpha", "yes", "1.2", "1.1", "2024-06-10T15:23:00Z", "ok", "never", "-"]
    assert lines[3].split() == ["beta", "no", "-", "-", "never", "mismatch", "never", "-"]
    assert lines[4].split()[-5:] == ["no", "checksum", "file", "never", "-"]
    # After a run, the last run's status shows per module.
    assert run_index(install, "--skip", "beta").returncode == 1  # gamma has no checksum file
    rows = {row["name"]: row for row in json.loads(run_index(install, "status", "--json").stdout)["modules"]}
    assert rows["alpha"]["lastRun"] == "ok" and rows["alpha"]["lastRunAt"].endswith("Z")
    assert rows["gamma"]["lastRun"] == "failed"
    # Columns are aligned: every row starts its CHECKSUM column at the same offset.
    offset = lines[0].index("CHECKSUM")
    table_lines = lines[1:5]
    assert all(len(line) > offset and line[offset - 2:offset] == "  " for line in table_lines)
    # It names the state directory it read, and why that one.
    assert lines[5] == f"state directory: {install / 'state'} (UPDATES_STATE_DIR; not created yet: no run has used it)"


def test_verify_reports_every_module_and_changes_nothing(install):
    add_module(install, "alpha", OK_MODULE)
    beta = add_module(install, "beta", OK_MODULE)
    (beta / "index.py").write_text("def main(args):\n    return 1\n")
    write_manifest(install, [group(["alpha", "beta"]), {"name": "alpha"}, {"name": "beta"}])
    before = (install / "manifest.json").read_bytes()
    proc = run_index(install, "verify")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[:2] == ["alpha: ok", "beta: mismatch"]
    assert proc.stdout.splitlines()[-1] == (
        "hint: for a checksum mismatch, if the change is yours, review it and run "
        "`venv/bin/python utils/checksummer.py`"
    )
    assert (install / "manifest.json").read_bytes() == before
    write_manifest(install, [group(["alpha", "nope"]), {"name": "alpha"}, {"name": "beta"}])
    proc = run_index(install, "verify")
    assert proc.returncode == 2
    assert proc.stdout.strip() == 'manifest.json: updates[0].children[1]: no entry named "nope"'


def test_malformed_manifest_via_cli(install):
    (install / "manifest.json").write_text('{"updates": [\n  {"name": "a"\n')
    proc = run_index(install)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: manifest.json: line 3 column 1:")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_checksummer_writes_and_checks(install):
    alpha = add_module(install, "alpha", OK_MODULE, seal=False)
    add_module(install, "beta", OK_MODULE)
    write_manifest(install, [group(["alpha", "beta"]), {"name": "alpha", "checksum": None, "note": "kept"},
                             {"name": "beta"}])
    checker = [sys.executable, str(install / "utils" / "checksummer.py")]
    proc = subprocess.run([*checker, "--check"], cwd=install, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stdout.startswith("alpha: checksum file says nothing, directory is ")
    proc = subprocess.run(checker, cwd=install, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    digest = (alpha / "checksum").read_text().strip()
    assert f"alpha: {digest} (updated checksum file and manifest)" in proc.stdout
    entry = read_manifest(install)["updates"][1]
    assert entry == {"name": "alpha", "checksum": digest, "note": "kept"}
    proc = subprocess.run([*checker, "--check"], cwd=install, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "all 2 checksums current"
    (alpha / "index.py").write_text("def main(args):\n    pass  # edited\n")
    proc = subprocess.run([*checker, "--check", "alpha"], cwd=install, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 1 and "manifest says" in proc.stdout
    proc = subprocess.run([*checker, "nope"], cwd=install, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "not a module in the manifest: nope" in proc.stderr
    assert [p.parent.name for p in install.glob("*/__pycache__")] in ([], ["utils"])


def test_log_file_gets_the_traceback_terminal_one_line(install):
    add_module(install, "bad", "def main(args):\n    {}['missing']\n")
    write_manifest(install, [group(["bad"]), {"name": "bad"}])
    proc = run_index(install)
    assert proc.returncode == 1
    # Said once: in the summary, not also as an error line on stderr (the other line is the first-run notice).
    assert [line for line in proc.stderr.splitlines() if "first run" not in line] == []
    assert proc.stdout.splitlines()[0].startswith("bad: failed (KeyError: 'missing') ")
    # Under -q (cron discards stdout) and --json the error line stays on stderr.
    for flag in ("-q", "--json"):
        proc = run_index(install, flag)
        assert proc.stderr.strip() == "error: bad: failed: KeyError: 'missing'", flag
    text = (install / "state" / "logs" / "updates.log").read_text()
    assert "Traceback (most recent call last)" in text and "KeyError" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make the state dir unwritable for root-like checks")
def test_unwritable_log_dir_still_runs(install):
    add_module(install, "alpha", OK_MODULE)
    write_manifest(install, [group(["alpha"]), {"name": "alpha"}])
    state = install / "state"
    state.mkdir()
    (state / "logs").write_text("a file where the log directory should be")
    proc = run_index(install)
    assert proc.returncode == 0
    assert "cannot open the log file" in proc.stderr


def test_fifty_modules_all_run_and_are_reported(install):
    # Speed is measured by bench/orchestrator.py; this checks only that a long manifest runs through.
    names = [f"m{i:02d}" for i in range(50)]
    for name in names:
        add_module(install, name, OK_MODULE)
    write_manifest(install, [group(names), *({"name": n} for n in names)])
    proc = run_index(install, "--json")
    assert proc.returncode == 0
    assert [m["name"] for m in json.loads(proc.stdout)["modules"]] == names


def test_package_importable_from_the_parent_directory(tmp_path):
    install = install_copy(tmp_path / "updates")
    add_module(install, "alpha", OK_MODULE)
    probe = (
        "from updates.utils import compute_folder_sha256, run_children\n"
        "from updates.utils.index import compute_folder_sha256 as again\n"
        "import updates.alpha as mod\n"
        "assert mod.CHECKSUM == mod.LIVE_CHECKSUM == compute_folder_sha256('updates/alpha')\n"
        "print('ok', again is compute_folder_sha256)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok True"


def test_unknown_command_is_named(install):
    write_manifest(install, [group([])])
    proc = run_index(install, "frobnicate")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown command 'frobnicate'; commands: run, status, verify, history")


def test_json_mode_reports_errors_as_json(install):
    (install / "manifest.json").write_text("{broken")
    proc = run_index(install, "--json")
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["exit_code"] == 2 and "line 1 column 2" in report["error"]


def test_json_stdout_stays_clean_of_child_process_output(install):
    body = (
        "import os, subprocess, sys\n"
        "def main(args):\n"
        "    os.write(1, b'raw fd write\\n')\n"
        "    subprocess.run(['echo', 'from a child'], check=True)\n"
        "    sys.__stdout__.write('dunder stdout\\n')\n"
        "    print('plain print')\n"
    )
    add_module(install, "noisy", body)
    write_manifest(install, [group(["noisy"]), {"name": "noisy"}])
    proc = run_index(install, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["modules"][0]["status"] == "ok"
    for text in ("raw fd write", "from a child", "dunder stdout", "plain print"):
        assert text in proc.stderr


def test_unwritable_state_dir_is_explained(install, tmp_path):
    add_module(install, "alpha", OK_MODULE)
    write_manifest(install, [group(["alpha"]), {"name": "alpha"}])
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    proc = run_index(install, env={**os.environ, "UPDATES_STATE_DIR": str(blocker / "state")})
    assert proc.returncode == 1
    assert "cannot create the lock file" in proc.stderr
    assert "UPDATES_STATE_DIR" in proc.stderr
    assert "bug" not in proc.stderr


def test_relative_state_dir_is_fixed_before_modules_run(install):
    body = (
        "import os\n"
        "from ..utils import run_children\n"
        "def main(args):\n"
        "    os.chdir('/')\n"
        "    run_children(args)\n"
    )
    add_module(install, "parent", body)
    add_module(install, "kid", RECORDING_MODULE)
    write_manifest(install, [group(["parent"]), {"name": "parent", "children": ["kid"]}, {"name": "kid"}])
    proc = run_index(install, "--manifest", "manifest.json",
                     env={**os.environ, "UPDATES_STATE_DIR": "relstate"})
    assert proc.returncode == 0, proc.stderr
    assert (install / "relstate" / "modules" / "kid" / "calls.jsonl").is_file()
    assert read_manifest(install)["updates"][2]["lastApplied"]
