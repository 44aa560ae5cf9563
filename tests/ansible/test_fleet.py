"""The Ansible role, the rollout and the fleet report, run by real Ansible over real SSH.

Three sshd hosts on 127.0.0.11-13, each in its own mount namespace (sshd_support.py), pull the project
from a bare git repository in the test's temp dir. One deploy is shared by the tests of this file, which
run in order, each building on the state the previous one left, as an administrator's fleet would:
first deploy, an idempotent second deploy, a rollout whose canary fails, the fleet report naming it, a
rollout that succeeds everywhere, and the report once all is well.

What the hosts cannot do here, and the tests therefore skip: systemd is not PID 1, so the role runs with
`updates_systemd_running: false` (units written and the timer enabled by its links; no daemon-reload, no
start of the timer). Packages are checked by the role's apt task only when git, python3, python3-venv and
python3-apt are already installed (the task then changes nothing); otherwise that task is turned off, so
that a test never installs packages on this machine. setup_venv.sh installs from wheels repacked from
this venv (PIP_NO_INDEX), never from a registry.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleet_support import (
    ANSIBLE_PLAYBOOK,
    GIT_ENV,
    PROBE,
    Ansible,
    Result,
    Source,
    build_source,
    probe_source,
    wheelhouse,
    write_ansible,
)
from sshd_support import INSTALL_DIR, Hosts, HostsUnavailable, SshHost, start_hosts, stop_hosts

pytestmark = pytest.mark.timeout(300)

NAMES = ["web1", "web2", "web3"]
SIGNED = "web3"  # the host with signing on (an allowed-signers file)
REAL_MODULES = ("adblock", "atuin", "filebrowser", "gogs")
# Paths on the real machine that a leak out of a host's namespace would create.
REAL_PATHS = (Path("/usr/local/lib/user_local_lib"), Path("/etc/systemd/system/updates.service"),
              Path("/usr/local/bin/fleetprobe-was-here"), Path("/var/log/updates"))  # fmt: skip


def packages_present() -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Status}\n", "git", "python3", "python3-venv", "python3-apt"],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    lines = proc.stdout.splitlines()
    return proc.returncode == 0 and len(lines) == 4 and all(line.endswith(" installed") for line in lines)


@dataclass
class Fleet:
    hosts: Hosts
    source: Source
    ansible: Ansible
    workdir: Path
    first_deploy: Result
    v1: str
    real_before: dict[Path, bool]
    apt_checked: bool

    def host(self, name: str) -> SshHost:
        return next(h for h in self.hosts.hosts if h.name == name)

    def install(self, name: str) -> Path:
        return self.host(name).path(INSTALL_DIR)

    def head(self, name: str) -> str:
        return subprocess.run(["git", "-C", str(self.install(name)), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=30, env=GIT_ENV, check=True).stdout.strip()  # fmt: skip

    def manifest(self, name: str) -> dict:
        return json.loads((self.install(name) / "manifest.json").read_text())

    def entry(self, name: str, module: str) -> dict:
        return next(e for e in self.manifest(name)["updates"] if e["name"] == module)

    def history(self, name: str) -> list[dict]:
        path = self.host(name).path("/var/lib/updates/history.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def task_results(result: Result, task: str) -> set[str]:
    """The per-host lines ("ok: [web1]", ...) under every run of the role's task called `task`."""
    lines: set[str] = set()
    for section in result.stdout.split(f"TASK [updates : {task}]")[1:]:
        body = section.split("\nTASK [", 1)[0].split("\nPLAY", 1)[0]
        lines.update(line.split(" =>", 1)[0] for line in body.splitlines()
                     if line.startswith(("ok: ", "changed: ", "skipping: ", "fatal: ")))  # fmt: skip
    return lines


def host_vars(name: str) -> dict[str, object]:
    modules: dict[str, object] = {m: {"enabled": False} for m in REAL_MODULES}
    modules[PROBE] = {"args": {"site": name}, "timeout": 120}
    return {"updates_modules": modules}


@pytest.fixture(scope="module", name="fleet")
def fleet_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip(f"ansible-core is not installed ({ANSIBLE_PLAYBOOK} missing): pip install -r requirements-dev.txt")
    workdir = tmp_path_factory.mktemp("fleet")
    real_before = {path: path.exists() or path.is_symlink() for path in REAL_PATHS}
    try:
        hosts = start_hosts(workdir, NAMES)
    except HostsUnavailable as exc:
        pytest.skip(f"no sshd test hosts: {exc}")
    try:
        # web3 trusts the publisher's key: it deploys with signing on and moves with `index.py pull`.
        signing_key = workdir / "publisher_signing_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "publisher", "-f", str(signing_key)],
                       check=True, timeout=30, capture_output=True)  # fmt: skip
        public = signing_key.with_suffix(".pub").read_text().split()
        signers = f'publisher@example.org namespaces="git" {public[0]} {public[1]}\n'
        source = build_source(workdir, signing_key)
        wheels = wheelhouse(workdir / "wheels")
        apt_checked = packages_present()
        group = {
            "updates_repo": str(source.bare),
            "updates_version": "main",
            "updates_systemd_running": False,
            "updates_install_packages": apt_checked,
            "updates_setup_env": {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)},
            "updates_notify": {"metrics_file": "/var/lib/updates/updates.prom"},
        }
        per_host = {name: host_vars(name) for name in NAMES}
        per_host[SIGNED]["updates_allowed_signers"] = signers
        ansible = write_ansible(workdir, hosts, group, per_host)
        first = ansible.playbook("deploy.yml")
        print(f"\nfirst deploy to three hosts: {first.seconds:.1f} s")
        yield Fleet(hosts, source, ansible, workdir, first, source.git("rev-parse", "HEAD"), real_before,
                    apt_checked)  # fmt: skip
    finally:
        stop_hosts(hosts)


def test_first_deploy_installs_code_settings_and_timer_on_every_host(fleet: Fleet) -> None:
    result = fleet.first_deploy
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    recap = result.recap()
    assert sorted(recap) == NAMES
    for name in NAMES:
        assert recap[name]["failed"] == 0 and recap[name]["unreachable"] == 0 and recap[name]["changed"] >= 4
        root = fleet.install(name)
        assert fleet.head(name) == fleet.v1
        assert (root / "venv" / "bin" / "python").exists()
        # The host's settings are in its manifest; the code fields are the commit's, so the only change
        # git sees is manifest.json, and only in host fields.
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                                 text=True, timeout=30, env=GIT_ENV, check=True).stdout.split("\n")  # fmt: skip
        assert [line for line in changed if line] == [" M manifest.json"]
        committed = json.loads(fleet.source.git("show", f"{fleet.v1}:manifest.json"))
        mine = fleet.manifest(name)
        for theirs, ours in zip(committed["updates"], mine["updates"], strict=True):
            for code in ("name", "version", "checksum", "children"):
                assert theirs.get(code) == ours.get(code)
        assert all(fleet.entry(name, m)["enabled"] is False for m in REAL_MODULES)
        assert fleet.entry(name, PROBE)["args"] == {"site": name}
        assert mine["notify"] == {"metrics_file": "/var/lib/updates/updates.prom"}
        signers = fleet.host(name).path("/etc/updates/allowed_signers")
        assert signers.exists() == (name == SIGNED)
        # The units, rendered for this install directory, and the timer enabled by its link.
        units = fleet.host(name).path("/etc/systemd/system")
        service = (units / "updates.service").read_text()
        assert f"ExecStart={INSTALL_DIR}/venv/bin/python {INSTALL_DIR}/index.py run" in service
        link = units / "timers.target.wants" / "updates.timer"
        assert link.is_symlink() and str(link.readlink()) == "/etc/systemd/system/updates.timer"
    # The signed host checked the commit's signature before running anything of it.
    check = task_results(result, "Check that the checked-out commit is signed by an allowed key")
    assert check == {"skipping: [web1]", "skipping: [web2]", f"ok: [{SIGNED}]"}
    # Skipped here (systemd is not PID 1): daemon-reload and starting the timer.
    assert "TASK [updates : Enable the timer]" in result.stdout
    if fleet.apt_checked:
        assert "TASK [updates : Install the packages updates needs]" in result.stdout
    # Nothing leaked onto the real machine.
    assert {path: path.exists() or path.is_symlink() for path in REAL_PATHS} == fleet.real_before


def test_second_deploy_changes_nothing(fleet: Fleet) -> None:
    before = {name: (fleet.install(name) / "manifest.json").read_bytes() for name in NAMES}
    result = fleet.ansible.playbook("deploy.yml")
    print(f"\nsecond (idempotent) deploy to three hosts: {result.seconds:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:]
    recap = result.recap()
    assert {name: recap[name]["changed"] for name in NAMES} == dict.fromkeys(NAMES, 0), result.stdout[-4000:]
    assert {name: (fleet.install(name) / "manifest.json").read_bytes() for name in NAMES} == before


def test_rollout_whose_canary_fails_rolls_it_back_and_stops(fleet: Fleet) -> None:
    v2 = fleet.source.publish("2.0.0", fails=True)
    untouched = {name: (fleet.head(name), (fleet.install(name) / "manifest.json").read_bytes()) for name in NAMES[1:]}
    result = fleet.ansible.playbook("rollout.yml")
    print(f"\nrollout stopped at the canary: {result.seconds:.1f} s")
    assert result.returncode != 0
    assert ("web1: fleetprobe failed: RuntimeError: fleetprobe 2.0.0 is broken; rolled back to lastSafeVersion: "
            "fleetprobe; the rollout stops here") in result.stdout  # fmt: skip
    # Only the canary was reached.
    assert sorted(result.recap()) == ["web1"]
    # The canary has the new commit, with the module back at its lastSafeVersion (1.0.0), byte for byte.
    assert fleet.head("web1") == v2
    assert fleet.entry("web1", PROBE)["version"] == "1.0.0"
    assert (fleet.install("web1") / PROBE / "index.py").read_text() == probe_source("1.0.0", fails=False)
    assert fleet.entry("web1", PROBE)["args"] == {"site": "web1"}
    runs = fleet.history("web1")
    failed_runs = [r for r in runs if any(m["name"] == PROBE and m["status"] == "failed" for m in r.get("modules", []))]
    assert failed_runs and "fleetprobe 2.0.0 is broken" in failed_runs[-1]["modules"][0]["error"]
    assert any(fleet.host("web1").path("/var/lib/updates/rollback").iterdir())
    # The others keep their version: same commit, same manifest bytes.
    for name, (head, manifest) in untouched.items():
        assert fleet.head(name) == head == fleet.v1
        assert (fleet.install(name) / "manifest.json").read_bytes() == manifest


def test_fleet_report_names_the_host_with_a_failed_module(fleet: Fleet) -> None:
    report_file = fleet.workdir / "reports" / "fleet.json"
    report_file.parent.mkdir()
    result = fleet.ansible.playbook("fleet_report.yml", "-e", f"updates_report_file={report_file}")
    assert result.returncode != 0
    report = json.loads(report_file.read_text())
    rows = {(r["host"], r["module"]): r for r in report["rows"]}
    assert rows[("web1", PROBE)]["status"] == "failed" and rows[("web1", PROBE)]["version"] == "1.0.0"
    assert rows[("web2", PROBE)]["status"] == "never"
    assert rows[("web1", "gogs")]["status"] == "never (disabled)"
    assert "web1 fleetprobe: failed: RuntimeError: fleetprobe 2.0.0 is broken" in report["problems"]
    assert "web2 fleetprobe: never succeeded" in report["problems"]
    assert not any(p.startswith("web1 gogs") for p in report["problems"])
    table = report_file.with_suffix(".txt").read_text().splitlines()
    assert table[0].split() == ["HOST", "MODULE", "VERSION", "LAST", "RUN", "STATUS", "LAST", "SUCCESS"]
    assert any(line.split()[:2] == ["web1", PROBE] and "failed" in line.split() for line in table)
    assert "web1 fleetprobe: failed: RuntimeError: fleetprobe 2.0.0 is broken" in result.stdout


def test_rollout_that_succeeds_reaches_every_host(fleet: Fleet) -> None:
    v3 = fleet.source.publish("3.0.0")
    result = fleet.ansible.playbook("rollout.yml")
    print(f"\nrollout to three hosts (canary, then the rest): {result.seconds:.1f} s")
    assert result.returncode == 0, result.stdout[-5000:]
    # Canary first: web1's batch finished before the others started.
    assert result.stdout.index("changed: [web1]") < result.stdout.index("changed: [web2]")
    for name in NAMES:
        assert fleet.head(name) == v3
        assert fleet.entry(name, PROBE)["version"] == "3.0.0"
        last = fleet.history(name)[-1]
        assert last["only"] == [PROBE] and last["ok"] is True
        # The host's own args reached the module.
        assert last["modules"][0]["summary"] == f"fleetprobe 3.0.0 on {name}"
        metrics = fleet.host(name).path("/var/lib/updates/updates.prom").read_text()
        assert f'updates_module_last_success_timestamp_seconds{{module="{PROBE}"}}' in metrics
    # The signed host moved with `index.py pull` (recorded in its history), the others by checkout.
    assert f"changed: [{SIGNED}]" in task_results(result, "Pull the signed ref (index.py pull)")
    moves = [r["pull"] for r in fleet.history(SIGNED) if isinstance(r.get("pull"), dict)]
    assert moves and moves[-1]["moved"] is True and moves[-1]["new"] == v3
    assert moves[-1]["signed_by"] == "publisher@example.org"


def test_fleet_report_passes_then_flags_a_stale_success(fleet: Fleet) -> None:
    report_file = fleet.workdir / "ok.json"
    result = fleet.ansible.playbook("fleet_report.yml", "-e", f"updates_report_file={report_file}")
    assert result.returncode == 0, result.stdout[-4000:]
    report = json.loads(report_file.read_text())
    assert report["ok"] is True and report["problems"] == []
    assert {r["status"] for r in report["rows"] if r["module"] == PROBE} == {"changed"}
    # The same fleet judged with a maximum age of about a second: every last success is now stale.
    stale = fleet.ansible.playbook("fleet_report.yml", "-e", f"updates_report_file={report_file}",
                                   "-e", "updates_report_max_age_days=0.00001")  # fmt: skip
    assert stale.returncode != 0
    problems = json.loads(report_file.read_text())["problems"]
    assert sorted(p.split(":")[0] for p in problems) == [f"{n} {PROBE}" for n in NAMES]
    assert all("no success for" in p for p in problems)
