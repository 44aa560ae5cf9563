"""Running modules in-process through `main(argv, root)`: statuses, isolation, selection, children."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from orchestrator_support import (
    CHANGED_MODULE,
    OK_MODULE,
    RECORDING_MODULE,
    add_module,
    group,
    read_manifest,
    seal_module,
    write_manifest,
)
from updates.utils.orchestrator.cli import main


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def run(root: Path, *argv: str) -> int:
    return main(["run", *argv], root=root)


def run_json(root: Path, capsys, *argv: str) -> tuple[int, dict]:
    code = main(["run", "--json", *argv], root=root)
    out = capsys.readouterr().out
    return code, json.loads(out)


def statuses(report: dict) -> dict[str, str]:
    return {m["name"]: m["status"] for m in report["modules"]}


def test_ok_changed_and_failed_modules_all_reported(tmp_path, capsys):
    add_module(tmp_path, "first", OK_MODULE)
    add_module(tmp_path, "second", "def main(args):\n    raise RuntimeError('disk full\\nsecond line')\n")
    add_module(tmp_path, "third", CHANGED_MODULE)
    write_manifest(tmp_path, [group(["first", "second", "third"]), {"name": "first"}, {"name": "second"},
                              {"name": "third"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1
    assert report["ok"] is False
    assert statuses(report) == {"first": "ok", "second": "failed", "third": "changed"}
    second = report["modules"][1]
    assert second["error"] == "RuntimeError: disk full"
    assert report["modules"][2]["summary"] == "1.0 -> 1.1"
    # The traceback goes to the log file, not the terminal.
    log_text = (tmp_path / "state" / "logs" / "updates.log").read_text()
    assert "Traceback" in log_text and "disk full" in log_text
    assert "Traceback" not in capsys.readouterr().err


def test_summary_lines_on_stdout(tmp_path, capsys):
    add_module(tmp_path, "alpha", CHANGED_MODULE)
    write_manifest(tmp_path, [group(["alpha"]), {"name": "alpha"}])
    assert run(tmp_path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("alpha: changed (1.0 -> 1.1) ")
    assert out[0].endswith("s")
    assert out[1] == "1 module: 1 changed"


def test_last_applied_recorded_on_success_only(tmp_path):
    add_module(tmp_path, "good", OK_MODULE)
    add_module(tmp_path, "bad", "def main(args):\n    raise ValueError('no')\n")
    write_manifest(tmp_path, [group(["good", "bad"]), {"name": "good", "lastApplied": None, "extra": 1},
                              {"name": "bad", "lastApplied": None}])
    assert run(tmp_path) == 1
    entries = {e["name"]: e for e in read_manifest(tmp_path)["updates"]}
    assert entries["good"]["lastApplied"].endswith("Z")
    assert entries["good"]["extra"] == 1
    assert entries["bad"]["lastApplied"] is None


def test_dry_run_passes_flag_and_records_nothing(tmp_path):
    add_module(tmp_path, "rec", RECORDING_MODULE)
    write_manifest(tmp_path, [group(["rec"]), {"name": "rec", "args": {"color": "blue"}}])
    before = (tmp_path / "manifest.json").read_bytes()
    assert run(tmp_path, "--dry-run") == 0
    assert (tmp_path / "manifest.json").read_bytes() == before
    call = json.loads((tmp_path / "state" / "modules" / "rec" / "calls.jsonl").read_text())
    assert call == {"color": "blue", "name": "rec", "dry_run": True,
                    "state_dir": str(tmp_path / "state" / "modules" / "rec")}


def test_sys_exit_is_a_failure_and_the_run_goes_on(tmp_path, capsys):
    add_module(tmp_path, "quitter", "import sys\ndef main(args):\n    sys.exit(3)\n")
    add_module(tmp_path, "after", OK_MODULE)
    write_manifest(tmp_path, [group(["quitter", "after"]), {"name": "quitter"}, {"name": "after"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1
    assert report["modules"][0]["error"] == "exited with code 3"
    assert statuses(report)["after"] == "ok"


def test_timeout_ends_a_hanging_module(tmp_path, capsys):
    add_module(tmp_path, "hang", "import time\ndef main(args):\n    while True:\n        time.sleep(0.01)\n")
    add_module(tmp_path, "busy", "def main(args):\n    while True:\n        pass\n")
    add_module(tmp_path, "after", OK_MODULE)
    write_manifest(tmp_path, [group(["hang", "busy", "after"]), {"name": "hang", "timeout": 0.3},
                              {"name": "busy", "timeout": 0.2}, {"name": "after"}])
    import signal

    handler_before = signal.getsignal(signal.SIGALRM)
    timer_before = signal.getitimer(signal.ITIMER_REAL)[0]  # pytest-timeout may hold an alarm of its own
    code, report = run_json(tmp_path, capsys)
    assert code == 1
    assert report["modules"][0]["error"] == "timed out after 0.3 s"
    assert report["modules"][1]["error"] == "timed out after 0.2 s"
    assert report["modules"][0]["duration_s"] < 5
    assert statuses(report)["after"] == "ok"
    # The alarm and handler that were there before are back, the timer reduced by the time spent.
    assert signal.getsignal(signal.SIGALRM) == handler_before
    timer_after = signal.getitimer(signal.ITIMER_REAL)[0]
    if timer_before:
        assert 0 < timer_after <= timer_before
    else:
        assert timer_after == 0


def test_timeout_cannot_be_swallowed_by_except_exception(tmp_path, capsys):
    body = """
    import time
    def main(args):
        try:
            time.sleep(30)
        except Exception:
            return {"changed": True, "summary": "swallowed"}
    """
    add_module(tmp_path, "sly", body)
    write_manifest(tmp_path, [group(["sly"]), {"name": "sly", "timeout": 0.2}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1 and report["modules"][0]["error"] == "timed out after 0.2 s"


def test_cwd_environment_and_sys_path_are_restored(tmp_path, capsys):
    body = """
    import os, sys
    def main(args):
        os.chdir("/")
        os.environ["UPDATES_TEST_LEAK"] = "1"
        os.environ.pop("UPDATES_TEST_KEEP", None)
        os.environ["UPDATES_TEST_CHANGE"] = "changed"
        sys.path.insert(0, "/nowhere")
        return {"changed": True}
    """
    add_module(tmp_path, "messy", body)
    add_module(tmp_path, "checker", """
    import os, sys
    def main(args):
        assert os.getcwd() == args["expect_cwd"], os.getcwd()
        assert "UPDATES_TEST_LEAK" not in os.environ
        assert os.environ["UPDATES_TEST_KEEP"] == "kept"
        assert "/nowhere" not in sys.path
    """)
    write_manifest(tmp_path, [group(["messy", "checker"]), {"name": "messy"},
                              {"name": "checker", "args": {"expect_cwd": str(tmp_path)}}])
    os.environ["UPDATES_TEST_KEEP"] = "kept"
    os.environ["UPDATES_TEST_CHANGE"] = "original"
    path_before = list(sys.path)
    try:
        code, report = run_json(tmp_path, capsys)
        assert statuses(report) == {"messy": "changed", "checker": "ok"}, report
        assert code == 0
        assert Path.cwd() == tmp_path
        assert os.environ["UPDATES_TEST_KEEP"] == "kept"
        assert os.environ["UPDATES_TEST_CHANGE"] == "original"
        assert "UPDATES_TEST_LEAK" not in os.environ
        assert sys.path == path_before
    finally:
        os.environ.pop("UPDATES_TEST_KEEP", None)
        os.environ.pop("UPDATES_TEST_CHANGE", None)


def test_modified_file_after_checksum_is_not_imported(tmp_path, capsys):
    marker = tmp_path / "imported"
    directory = add_module(tmp_path, "tampered", f"open({str(marker)!r}, 'w').close()\ndef main(args):\n    pass\n")
    (directory / "index.py").write_text((directory / "index.py").read_text() + "# edited\n")
    add_module(tmp_path, "after", OK_MODULE)
    write_manifest(tmp_path, [group(["tampered", "after"]), {"name": "tampered"}, {"name": "after"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1
    error = report["modules"][0]["error"]
    expected = (directory / "checksum").read_text().strip()
    assert f"checksum mismatch: expected {expected} (checksum file), got " in error
    assert not marker.exists()
    assert statuses(report)["after"] == "ok"


def test_manifest_checksum_must_match_too(tmp_path, capsys):
    digest = seal_module(add_module(tmp_path, "alpha", OK_MODULE))
    write_manifest(tmp_path, [group(["alpha"]), {"name": "alpha", "checksum": "0" * 64}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1
    assert report["modules"][0]["error"] == (
        f"checksum mismatch: expected {'0' * 64} (manifest), got {digest}; "
        "hint: if the change is yours, review it and run `venv/bin/python utils/checksummer.py`"
    )


def test_missing_checksum_file(tmp_path, capsys):
    add_module(tmp_path, "unsealed", OK_MODULE, seal=False)
    write_manifest(tmp_path, [group(["unsealed"]), {"name": "unsealed"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1 and "no checksum file" in report["modules"][0]["error"]


def test_symlink_inside_module_fails_verification(tmp_path, capsys):
    directory = add_module(tmp_path, "linky", OK_MODULE, seal=False)
    (directory / "evil.py").symlink_to("/etc/hostname")
    (directory / "checksum").write_text("0" * 64 + "\n")
    write_manifest(tmp_path, [group(["linky"]), {"name": "linky"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1
    error = report["modules"][0]["error"]
    # As root the permission check names the link first; otherwise the digest refuses it.
    assert "evil.py: is a symbolic link" in error or "symlink inside a module is not allowed: evil.py" in error


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("x = 1\n", "linky/index.py defines no main(args)"),
        ("main = 42\n", "linky/index.py defines no main(args)"),
        ("def main():\n    pass\n", "main() must take exactly one argument"),
        ("def main(a, b):\n    pass\n", "main(a, b) must take exactly one argument"),
        ("import no_such_module_xyz\n", "import failed: ModuleNotFoundError"),
        ("raise SystemExit(4)\n", "import failed: SystemExit"),
        ("def main(args:\n", "import failed: SyntaxError"),
    ],
)
def test_unusable_modules_are_reported(tmp_path, capsys, body, expected):
    add_module(tmp_path, "linky", body)
    add_module(tmp_path, "after", OK_MODULE)
    write_manifest(tmp_path, [group(["linky", "after"]), {"name": "linky"}, {"name": "after"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1
    assert expected in report["modules"][0]["error"]
    assert statuses(report)["after"] == "ok"


def test_flexible_main_signatures_are_accepted(tmp_path, capsys):
    add_module(tmp_path, "kw", "def main(args, verbose=False):\n    return {'changed': verbose}\n")
    add_module(tmp_path, "star", "def main(*args):\n    return None\n")
    write_manifest(tmp_path, [group(["kw", "star"]), {"name": "kw"}, {"name": "star"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 0 and statuses(report) == {"kw": "ok", "star": "ok"}


def test_no_bytecode_is_written_or_read_in_module_directories(tmp_path, capsys):
    directory = add_module(tmp_path, "pure", "from .helper import VALUE\ndef main(args):\n    return {'summary': VALUE}\n",
                           files={"helper.py": "VALUE = 'from source'\n"})
    # A planted bytecode cache must never be what runs: the digest covers sources only.
    pycache = directory / "__pycache__"
    pycache.mkdir()
    import importlib.util
    import py_compile

    py_compile.compile(str(directory / "helper.py"), cfile=importlib.util.cache_from_source(str(directory / "helper.py")))
    write_manifest(tmp_path, [group(["pure"]), {"name": "pure"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 0 and report["modules"][0]["summary"] == "from source"
    assert sorted(p.name for p in pycache.iterdir()) == [f"helper.{sys.implementation.cache_tag}.pyc"]
    assert not list(directory.glob("*.pyc"))


def test_module_reimported_fresh_each_run(tmp_path, capsys):
    directory = add_module(tmp_path, "ver", "def main(args):\n    return {'summary': 'one'}\n")
    write_manifest(tmp_path, [group(["ver"]), {"name": "ver"}])
    assert run_json(tmp_path, capsys)[1]["modules"][0]["summary"] == "one"
    (directory / "index.py").write_text("def main(args):\n    return {'summary': 'two'}\n")
    seal_module(directory)
    assert run_json(tmp_path, capsys)[1]["modules"][0]["summary"] == "two"


def test_disabled_modules_and_groups_are_skipped(tmp_path, capsys):
    for name in ("a", "b", "c"):
        add_module(tmp_path, name, RECORDING_MODULE)
    write_manifest(tmp_path, [group(["a", "inner"]), {"name": "a", "enabled": False},
                              {"name": "inner", "children": ["b", "c"], "enabled": False},
                              {"name": "b"}, {"name": "c"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 0
    assert [(m["name"], m["status"], m["summary"]) for m in report["modules"]] == [
        ("a", "skipped", "disabled"), ("b", "skipped", "inner is disabled"), ("c", "skipped", "inner is disabled")]
    assert not (tmp_path / "state" / "modules" / "a").exists()


def test_only_and_skip_select_modules(tmp_path, capsys):
    for name in ("a", "b", "c", "d"):
        add_module(tmp_path, name, OK_MODULE)
    write_manifest(tmp_path, [group(["a", "sub"]), {"name": "a"}, {"name": "sub", "children": ["b", "c"]},
                              {"name": "b"}, {"name": "c"}, {"name": "d"}])
    assert statuses(run_json(tmp_path, capsys, "--only", "sub")[1]) == {"b": "ok", "c": "ok"}
    assert statuses(run_json(tmp_path, capsys, "--only", "a", "--only", "c")[1]) == {"a": "ok", "c": "ok"}
    assert statuses(run_json(tmp_path, capsys, "--skip", "b")[1]) == {"a": "ok", "b": "skipped", "c": "ok"}
    # An entry outside the entrypoint's tree runs when asked for by name.
    assert statuses(run_json(tmp_path, capsys, "--only", "d")[1]) == {"d": "ok"}


def test_unknown_only_or_skip_name_is_a_usage_error(tmp_path, capsys):
    add_module(tmp_path, "a", RECORDING_MODULE)
    write_manifest(tmp_path, [group(["a"]), {"name": "a"}])
    assert run(tmp_path, "--only", "nope") == 2
    err = capsys.readouterr().err
    assert "--only: unknown module nope; known: all_services, a" in err
    assert run(tmp_path, "--skip", "zzz") == 2
    assert not (tmp_path / "state" / "modules" / "a" / "calls.jsonl").exists()


def test_invalid_manifest_exits_2_and_runs_nothing(tmp_path, capsys):
    add_module(tmp_path, "a", RECORDING_MODULE)
    write_manifest(tmp_path, [group(["a", "gogz"]), {"name": "a"}])
    assert run(tmp_path) == 2
    assert 'updates[0].children[1]: no entry named "gogz"' in capsys.readouterr().err
    assert not (tmp_path / "state" / "modules" / "a" / "calls.jsonl").exists()


def test_manifest_option_reads_another_file(tmp_path, capsys):
    add_module(tmp_path, "a", OK_MODULE)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"updates": [group(["a"]), {"name": "a"}], "entrypoint": "all_services"}))
    write_manifest(tmp_path, [group([])])
    code, report = run_json(tmp_path, capsys, "--manifest", str(other))
    assert code == 0 and statuses(report) == {"a": "ok"}
    assert json.loads(other.read_text())["updates"][1]["lastApplied"].endswith("Z")


def test_empty_entrypoint_says_nothing_to_do(tmp_path, capsys):
    write_manifest(tmp_path, [group([])])
    assert run(tmp_path) == 0
    assert capsys.readouterr().out == "nothing to do: all_services has no modules to run\n"


PARENT = """
from ..utils import run_children
def main(args):
    results = run_children(args)
    return {"changed": True, "summary": ",".join(f"{r['name']}={r['status']}" for r in results)}
"""


def test_run_children_gives_children_the_same_treatment(tmp_path, capsys):
    add_module(tmp_path, "parent", PARENT)
    add_module(tmp_path, "kid_ok", OK_MODULE)
    kid = add_module(tmp_path, "kid_bad", OK_MODULE)
    (kid / "index.py").write_text("def main(args):\n    raise SystemExit(9)\n")  # stale checksum: refused
    add_module(tmp_path, "kid_slow", "import time\ndef main(args):\n    time.sleep(30)\n")
    write_manifest(tmp_path, [group(["parent"]),
                              {"name": "parent", "children": ["kid_ok", "kid_bad", "kid_slow"]},
                              {"name": "kid_ok"}, {"name": "kid_bad"}, {"name": "kid_slow", "timeout": 0.2}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1
    assert [m["name"] for m in report["modules"]] == ["parent", "kid_ok", "kid_bad", "kid_slow"]
    assert report["modules"][0]["summary"] == "kid_ok=ok,kid_bad=failed,kid_slow=failed"
    assert "checksum mismatch" in report["modules"][2]["error"]
    assert report["modules"][3]["error"] == "timed out after 0.2 s"


def test_child_timeout_nested_inside_parent_timeout(tmp_path, capsys):
    add_module(tmp_path, "parent", PARENT + "\n")
    add_module(tmp_path, "kid", "import time\ndef main(args):\n    time.sleep(30)\n")
    write_manifest(tmp_path, [group(["parent"]), {"name": "parent", "children": ["kid"], "timeout": 0.4},
                              {"name": "kid", "timeout": 10}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1
    # The parent's earlier deadline wins; the child does not extend it.
    assert report["modules"][0]["error"] == "timed out after 0.4 s"
    assert report["modules"][0]["duration_s"] < 5


def test_warning_when_children_were_not_run(tmp_path, capsys):
    add_module(tmp_path, "lazy", OK_MODULE)
    add_module(tmp_path, "kid", RECORDING_MODULE)
    write_manifest(tmp_path, [group(["lazy"]), {"name": "lazy", "children": ["kid"]}, {"name": "kid"}])
    code = main(["run", "--json"], root=tmp_path)
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0
    assert report["modules"][1] == {"name": "kid", "status": "skipped", "duration_s": 0.0,
                                    "summary": "not run by lazy", "error": None}
    assert "lazy: main returned without running its children (kid)" in captured.err
    assert not (tmp_path / "state" / "modules" / "kid" / "calls.jsonl").exists()


def test_module_prints_stay_off_stdout_in_json_mode(tmp_path, capsys):
    add_module(tmp_path, "chatty", "def main(args):\n    print('hello from module')\n")
    write_manifest(tmp_path, [group(["chatty"]), {"name": "chatty"}])
    code, report = run_json(tmp_path, capsys)  # would fail to parse if the print reached stdout
    assert code == 0 and report["ok"] is True


def test_state_dir_from_environment(tmp_path, capsys, monkeypatch):
    state = tmp_path / "elsewhere"
    monkeypatch.setenv("UPDATES_STATE_DIR", str(state))
    add_module(tmp_path, "rec", RECORDING_MODULE)
    write_manifest(tmp_path, [group(["rec"]), {"name": "rec"}])
    assert run(tmp_path) == 0
    assert (state / "modules" / "rec" / "calls.jsonl").is_file()
    assert (state / "logs" / "updates.log").is_file()
    assert not (tmp_path / "state").exists()


def test_relative_import_of_shared_utils_from_a_module(tmp_path, capsys):
    body = """
    from ..utils.index import compute_folder_sha256
    from . import CHECKSUM, LIVE_CHECKSUM
    def main(args):
        assert CHECKSUM == LIVE_CHECKSUM
        return {"summary": compute_folder_sha256(__import__("os").path.dirname(__file__))[:12]}
    """
    directory = add_module(tmp_path, "rel", body)
    write_manifest(tmp_path, [group(["rel"]), {"name": "rel"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 0
    assert report["modules"][0]["summary"] == (directory / "checksum").read_text()[:12]


def test_module_swallowing_its_timeout_is_still_stopped_and_failed(tmp_path, capsys):
    body = """
    import time
    def main(args):
        try:
            time.sleep(100)
        except BaseException:  # a bare except swallows the timeout...
            pass
        return {"changed": True, "summary": "got away"}  # ...but the run still knows it overran
    """
    add_module(tmp_path, "stubborn", body)
    write_manifest(tmp_path, [group(["stubborn"]), {"name": "stubborn", "timeout": 0.2}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1
    assert report["modules"][0]["status"] == "failed"
    assert report["modules"][0]["error"] == "timed out after 0.2 s"
    assert "lastApplied" not in read_manifest(tmp_path)["updates"][1]


def test_signal_handlers_streams_and_logging_restored_after_a_module(tmp_path, capsys):
    import signal

    body = """
    import io, logging, signal, sys
    def main(args):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.stdout = sys.stderr = io.StringIO()
        logging.disable(logging.CRITICAL)
    """
    add_module(tmp_path, "rude", body)
    add_module(tmp_path, "bad", "def main(args):\n    raise RuntimeError('visible')\n")
    write_manifest(tmp_path, [group(["rude", "bad"]), {"name": "rude"}, {"name": "bad"}])
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    code = main(["run"], root=tmp_path)
    captured = capsys.readouterr()
    assert code == 1
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert "bad: failed (RuntimeError: visible)" in captured.out
    assert "error:" not in captured.err  # said once, in the summary
    assert "ERROR updates.utils.orchestrator.runner: bad: failed: RuntimeError: visible" in (
        tmp_path / "state" / "logs" / "updates.log"
    ).read_text()
    assert "visible" in (tmp_path / "state" / "logs" / "updates.log").read_text()


def test_stdin_is_dev_null_for_modules(tmp_path, capsys):
    add_module(tmp_path, "reader", "import sys\ndef main(args):\n    return {'summary': repr(sys.stdin.read())}\n")
    write_manifest(tmp_path, [group(["reader"]), {"name": "reader"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 0 and report["modules"][0]["summary"] == "''"


def test_coroutine_main_is_a_failure(tmp_path, capsys):
    add_module(tmp_path, "asyncy", "async def main(args):\n    return None\n")
    write_manifest(tmp_path, [group(["asyncy"]), {"name": "asyncy"}])
    code, report = run_json(tmp_path, capsys)
    assert code == 1 and "coroutine" in report["modules"][0]["error"]


def test_unwritable_manifest_does_not_stop_the_run(tmp_path, capsys):
    # lastApplied cannot be recorded (the manifest lives on a read-only mount): logged, the run goes on.
    import subprocess

    add_module(tmp_path, "first", RECORDING_MODULE)
    add_module(tmp_path, "second", RECORDING_MODULE)
    ro = tmp_path / "ro"
    ro.mkdir()
    write_manifest(ro, [group(["first", "second"]), {"name": "first"}, {"name": "second"}])
    mounted = subprocess.run(["mount", "--bind", str(ro), str(ro)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True, check=False).returncode:
            pytest.skip("cannot remount read-only here")
        before = (ro / "manifest.json").read_bytes()
        code, report = run_json(tmp_path, capsys, "--manifest", str(ro / "manifest.json"))
        assert (ro / "manifest.json").read_bytes() == before
    finally:
        subprocess.run(["umount", str(ro)], check=False)
    assert code == 0
    assert statuses(report) == {"first": "ok", "second": "ok"}
    assert (tmp_path / "state" / "modules" / "second" / "calls.jsonl").exists()


@pytest.mark.parametrize(
    ("parent", "argv", "reason"),
    [({"enabled": False}, [], "parent is disabled"), ({}, ["--skip", "parent"], "--skip")],
)
def test_children_of_a_disabled_or_skipped_module_are_listed_as_skipped(tmp_path, capsys, parent, argv, reason):
    add_module(tmp_path, "parent", PARENT)
    for name in ("kid", "grandkid", "other"):
        add_module(tmp_path, name, RECORDING_MODULE)
    write_manifest(tmp_path, [group(["parent", "other"]),
                              {"name": "parent", "children": ["kid", "sub"], **parent},
                              {"name": "sub", "children": ["grandkid"]},  # a group below the module
                              {"name": "kid"}, {"name": "grandkid"}, {"name": "other"}])
    code, report = run_json(tmp_path, capsys, *argv)
    assert code == 0
    first = "disabled" if reason != "--skip" else "--skip"
    assert [(m["name"], m["status"], m["summary"]) for m in report["modules"]] == [
        ("parent", "skipped", first), ("kid", "skipped", reason), ("grandkid", "skipped", reason),
        ("other", "ok", None)]
    assert sorted(p.name for p in (tmp_path / "state" / "modules").iterdir()) == ["other"]
    history = (tmp_path / "state" / "history.jsonl").read_text()
    assert '"name":"kid","status":"skipped"' in history.replace(" ", "")


def test_a_summary_that_cannot_be_encoded_does_not_cost_the_report_or_the_history(tmp_path, capsys):
    # An undecodable file name (os.listdir gives it as a lone surrogate) in a module's summary.
    add_module(tmp_path, "odd", "def main(args):\n    return {'changed': True, 'summary': 'v\\udcff1'}\n")
    add_module(tmp_path, "plain", OK_MODULE)
    write_manifest(tmp_path, [group(["odd", "plain"]), {"name": "odd"}, {"name": "plain"}])
    code = run(tmp_path)
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("odd: changed (v\\udcff1) ")
    out.encode("utf-8")  # what reaches stdout can be encoded
    (record,) = [json.loads(line) for line in (tmp_path / "state" / "history.jsonl").read_text().splitlines()]
    assert [(m["name"], m["summary"]) for m in record["modules"]] == [("odd", "v\\udcff1"), ("plain", None)]
    assert read_manifest(tmp_path)["updates"][1]["lastApplied"]  # its success was recorded
