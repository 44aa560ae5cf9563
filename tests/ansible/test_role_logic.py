"""The Python inside the role, as plain functions: the fleet report's judgement, what the rollout runs
and rolls back, how host settings are written and how a checkout keeps them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from role_support import ROLE, load

ROOT = ROLE.parents[3]
NOW = "2026-06-10T12:00:00Z"


fleet = load(ROLE / "filter_plugins" / "updates_fleet.py")


def status(*modules: dict, pending: list | None = None) -> str:
    entries = [{"name": "all_services", "kind": "group", "version": None}]
    entries += [{"kind": "module", "enabled": True, "lastApplied": None, "lastRun": None, "lastRunAt": None,
                 "new_key_tolerated": 1, **m} for m in modules]  # fmt: skip
    return json.dumps({"schema": 1, "host": "h", "modules": entries, "pending": pending or [], "running": None})


def run(finished: str, *modules: tuple[str, str, str | None], dry: bool = False) -> dict:
    return {"schema": 1, "started": finished, "finished": finished, "dry_run": dry, "ok": True,
            "modules": [{"name": n, "status": s, "error": e} for n, s, e in modules]}  # fmt: skip


def test_changed_modules_are_those_whose_version_moved() -> None:
    before = status({"name": "a", "version": "1"}, {"name": "b", "version": "1"})
    after = status({"name": "a", "version": "2"}, {"name": "b", "version": "1"}, {"name": "c", "version": "1"})
    assert fleet.changed_modules(before, after) == ["a", "c"]
    assert fleet.changed_modules(after, json.loads(after)) == []


def test_failed_modules_and_the_line_that_says_so() -> None:
    report = {"ok": False, "modules": [{"name": "a", "status": "failed", "error": "boom"},
                                       {"name": "b", "status": "changed", "error": None}]}  # fmt: skip
    assert fleet.failed_modules(report, ["a", "b"]) == ["a"]
    assert fleet.run_failures(report, 1) == "a failed: boom"
    assert fleet.run_failures({"ok": False, "interrupted": True, "modules": []}, 130) == "index.py run exited 130 (interrupted)"
    refused = "warning: x\nerror: signing is on and the checked-out commit is not signed; nothing runs\n"
    assert fleet.run_failures({}, 2, refused) == (
        "index.py run exited 2: error: signing is on and the checked-out commit is not signed; nothing runs"
    )
    results = [{"item": "a", "rc": 0}, {"item": "b", "rc": 1, "stderr": "warning: x\nerror: no tag matches b 1.0\n"}]
    assert fleet.rollback_summary(results) == (
        "rolled back to lastSafeVersion: a; could NOT roll back: b (error: no tag matches b 1.0)"
    )
    assert fleet.rollback_summary([]) == "nothing was rolled back"


def test_fleet_report_flags_failed_stale_never_unreachable_and_pending() -> None:
    web1 = {
        "status": status({"name": "a", "version": "2", "lastRun": "failed", "lastRunAt": "2026-06-10T01:00:00Z"},
                         {"name": "b", "version": "1", "enabled": False}),
        "history": json.dumps({"runs": [run("2026-06-10T01:00:00Z", ("a", "failed", "RuntimeError: boom")),
                                         run("2026-06-09T01:00:00Z", ("a", "changed", None))]}),
    }  # fmt: skip
    web2 = {
        # Last real success three days ago; a dry run since does not count, lastApplied is older still.
        "status": status({"name": "a", "version": "2", "lastRun": "ok", "lastApplied": "2026-06-01T00:00:00Z"},
                         pending=["rollback of a"]),
        "history": {"runs": [run("2026-06-10T02:00:00Z", ("a", "ok", None), dry=True),
                             run("2026-06-07T12:00:00Z", ("a", "ok", None))]},
    }  # fmt: skip
    web3 = {"status": status({"name": "a", "version": "2"}), "history": None}
    report = fleet.fleet_report({"web3": web3, "web2": web2, "web1": web1, "web4": {"error": "timed out"}}, 2, NOW)
    assert report["ok"] is False
    assert report["problems"] == [
        "web1 a: failed: RuntimeError: boom",
        "web2: a change a crash interrupted is pending: rollback of a",
        "web2 a: no success for 3.0 days (since 2026-06-07T12:00:00Z)",
        "web3 a: never succeeded",
        "web4: no status: timed out",
    ]
    rows = {(r["host"], r["module"]): r for r in report["rows"]}
    assert rows[("web1", "a")]["last_success"] == "2026-06-09T01:00:00Z"
    assert rows[("web1", "b")]["status"] == "never (disabled)"
    assert rows[("web4", "-")]["status"] == "unreachable"
    table = fleet.fleet_table(report).splitlines()
    assert table[0] == "HOST  MODULE  VERSION  LAST RUN              STATUS            LAST SUCCESS"
    assert table[1] == "web1  a       2        2026-06-10T01:00:00Z  failed            2026-06-09T01:00:00Z"
    # The same fleet, healthy and recent: no problem.
    fresh = {"web2": {"status": status({"name": "a", "version": "2", "lastRun": "ok",
                                        "lastApplied": "2026-06-10T00:00:00Z"})}}  # fmt: skip
    assert fleet.fleet_report(fresh, 2, NOW) == {
        "generated": NOW, "max_age_days": 2, "ok": True, "problems": [],
        "rows": [{"host": "web2", "module": "a", "version": "2", "last_run": None, "status": "ok",
                  "last_success": "2026-06-10T00:00:00Z", "enabled": True}],
    }  # fmt: skip


@pytest.fixture(name="library")
def library_fixture(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    pytest.importorskip("ansible.module_utils.basic", reason="ansible-core is not installed")
    # Where Ansible would find the role's module_utils when it packs a module for a host.
    for name in ("updates_lock", "updates_files"):
        monkeypatch.setitem(sys.modules, f"ansible.module_utils.{name}", load(ROLE / "module_utils" / f"{name}.py"))
    return {name: load(ROLE / "library" / f"{name}.py") for name in ("updates_manifest", "updates_checkout")}


def test_host_settings_refuse_code_fields_and_unknown_names(library: dict[str, ModuleType]) -> None:
    apply = library["updates_manifest"].apply
    raw = json.loads((ROOT / "manifest.json").read_text())
    pristine = json.loads(json.dumps(raw))
    with pytest.raises(ValueError, match=r"^updates_modules\.gogs\.version: not a host setting \(allowed: enabled, args, timeout, description\)$"):
        apply(raw, {"gogs": {"version": "9.9.9"}}, None)
    with pytest.raises(ValueError, match=r"^updates_modules\.gogz: not in the manifest \(known: adblock, all_services, atuin"):
        apply(raw, {"gogz": {"enabled": False}}, None)
    with pytest.raises(ValueError, match=r"updates_modules\.gogs\.timeout: wrong type or value: 0"):
        apply(raw, {"gogs": {"timeout": 0}}, None)
    assert raw == pristine
    settings = {"gogs": {"enabled": False, "args": {"install_dir": "/opt/gogs"}}}
    assert apply(raw, settings, {"ping": "https://hc.example.org/x"}) == ["gogs.enabled", "gogs.args", "notify"]
    assert apply(raw, settings, {"ping": "https://hc.example.org/x"}) == []
    assert apply(raw, {}, {}) == ["notify"] and "notify" not in raw
    # Only the named host fields moved; key order is kept.
    gogs = next(e for e in raw["updates"] if e["name"] == "gogs")
    before = next(e for e in pristine["updates"] if e["name"] == "gogs")
    assert list(gogs) == list(before)
    assert {k: v for k, v in gogs.items() if k not in ("enabled", "args")} == {
        k: v for k, v in before.items() if k not in ("enabled", "args")}  # fmt: skip


def test_checkout_merge_keeps_host_fields_and_takes_code(library: dict[str, ModuleType]) -> None:
    merge = library["updates_checkout"].merge
    current = {"updates": [{"name": "g", "children": ["a"]},
                           {"name": "a", "version": "1", "checksum": "x", "lastSafeVersion": "1", "args": {"k": 1},
                            "enabled": False, "script": "old.sh"}],
               "entrypoint": "g", "notify": {"ping": "https://p"}}  # fmt: skip
    target = {"updates": [{"name": "g", "children": ["a", "b"]}, {"name": "a", "version": "2", "checksum": "y"},
                          {"name": "b", "version": "1", "checksum": "z", "enabled": True}], "entrypoint": "g"}  # fmt: skip
    merged = merge(current, target)
    assert merged == {
        "updates": [{"name": "g", "children": ["a", "b"]},
                    {"name": "a", "version": "2", "checksum": "y", "lastSafeVersion": "1", "args": {"k": 1},
                     "enabled": False},
                    {"name": "b", "version": "1", "checksum": "z", "enabled": True}],
        "entrypoint": "g", "notify": {"ping": "https://p"},
    }  # fmt: skip


def test_checkout_digest_is_the_projects_module_checksum(library: dict[str, ModuleType], tmp_path: Path) -> None:
    from updates.utils.index import compute_folder_sha256

    module = tmp_path / "atuin"
    shutil.copytree(ROOT / "atuin", module, ignore=shutil.ignore_patterns("__pycache__"))
    (module / "sub" / "__pycache__").mkdir(parents=True)
    (module / "sub" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (module / "sub" / "data.txt").write_text("extra\n")
    assert library["updates_checkout"].folder_digest(module) == compute_folder_sha256(module)


def test_the_modules_replace_a_file_whole_keeping_its_mode(tmp_path: Path) -> None:
    files = load(ROLE / "module_utils" / "updates_files.py")
    manifest = tmp_path / "manifest.json"
    manifest.write_text("old\n")
    manifest.chmod(0o640)
    files.write_atomic(manifest, "new\n")
    assert manifest.read_text() == "new\n" and manifest.stat().st_mode & 0o777 == 0o640
    files.write_atomic(tmp_path / "saved.json", "{}\n", 0o600)
    files.write_atomic(tmp_path / "fresh.json", "{}\n")
    assert (tmp_path / "saved.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "fresh.json").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.json", "manifest.json", "saved.json"]  # no temp left
