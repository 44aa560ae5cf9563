"""What the Ansible tests deploy, and how they run Ansible.

- `Source`: the project as it is in this checkout, copied to a temp dir with a test module `fleetprobe`
  (version 1.0.0 succeeds and is tagged and safe; `publish(version, fails=...)` commits, tags and pushes a
  new one), sealed by the project's own checksummer, in a git repository (its commits SSH-signed when a
  key is given) whose bare clone the hosts pull from over a file path (the hosts see /tmp; nothing is
  served over the network).
- `wheelhouse(dest)`: the runtime requirements as wheels, repacked from this venv's installed
  distributions, so that `setup_venv.sh` on a test host installs with `PIP_NO_INDEX=1` and never reaches
  a package registry.
- `Ansible`: ansible-playbook with an inventory of the sshd test hosts, an ansible.cfg and every Ansible
  directory in the test's temp dir, pipelining on, a UTF-8 locale; `recap()` parses the PLAY RECAP.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from sshd_support import CLEAN_ENV, Hosts

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "config" / "ansible"
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = BIN / "ansible-playbook"
PROBE = "fleetprobe"
GIT_ENV = {
    **CLEAN_ENV, "HOME": "/nonexistent", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Publisher", "GIT_AUTHOR_EMAIL": "publisher@example.org",
    "GIT_COMMITTER_NAME": "Publisher", "GIT_COMMITTER_EMAIL": "publisher@example.org",
}  # fmt: skip


def probe_source(version: str, fails: bool) -> str:
    body = (f'    raise RuntimeError("fleetprobe {version} is broken")\n' if fails
            else f'    return {{"changed": True, "summary": "fleetprobe {version} on " + str(args.get("site"))}}\n')  # fmt: skip
    return f'"""A test module: version {version}."""\n\n\ndef main(args):\n{body}'


def signing_env(key: Path) -> dict[str, str]:
    """git configuration, through the environment, that signs every commit with the SSH key `key`."""
    pairs = {"gpg.format": "ssh", "user.signingKey": str(key), "commit.gpgSign": "true"}
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for index, (key_name, value) in enumerate(pairs.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key_name
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


@dataclass
class Source:
    work: Path  # the publisher's working copy
    bare: Path  # what the hosts clone and fetch
    env: dict[str, str]  # GIT_ENV, plus the signing configuration when commits are signed

    def git(self, *args: str) -> str:
        out = subprocess.run(["git", *args], cwd=self.work, capture_output=True, text=True, timeout=120,
                             env=self.env, check=True)  # fmt: skip
        return out.stdout.strip()

    def _tool(self, *args: str) -> None:
        env = {**self.env, "UPDATES_STATE_DIR": str(self.work.parent / "publisher-state"),
               "UPDATES_ALLOWED_SIGNERS": str(self.work.parent / "no-signers")}  # fmt: skip
        subprocess.run([sys.executable, *args], cwd=self.work, capture_output=True, text=True, timeout=300,
                       env=env, check=True)  # fmt: skip

    def publish(self, version: str, *, fails: bool = False, safe: str | None = None) -> str:
        """Commit `fleetprobe` at `version`, seal, tag and push it; return the commit."""
        (self.work / PROBE / "index.py").write_text(probe_source(version, fails))
        manifest = json.loads((self.work / "manifest.json").read_text())
        for entry in manifest["updates"]:
            if entry["name"] == PROBE:
                entry["version"] = version
                if safe is not None:
                    entry["lastSafeVersion"] = safe
        (self.work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        self._tool("utils/checksummer.py")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", f"{PROBE} {version}")
        self._tool("utils/rollback.py", "tag", PROBE)
        if self.bare.exists():
            self.git("push", "-q", "origin", "HEAD:main", "--tags")
        return self.git("rev-parse", "HEAD")


def build_source(tmp: Path, signing_key: Path | None = None) -> Source:
    """See the module docstring: the project at fleetprobe 1.0.0, published; every commit signed with
    `signing_key` when given."""
    work = tmp / "publisher" / "updates"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, timeout=60, env=GIT_ENV, check=True).stdout  # fmt: skip
    for name in filter(None, listed.decode().split("\0")):
        src = ROOT / name
        if name.startswith(("venv/", "state/")) or not src.is_file() or src.is_symlink():
            continue
        dst = work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    (work / PROBE).mkdir()
    manifest = json.loads((work / "manifest.json").read_text())
    manifest["updates"].append({"name": PROBE, "version": "1.0.0", "lastSafeVersion": "1.0.0", "lastApplied": None,
                                "enabled": True, "description": "test module", "checksum": None,
                                "timeout": 60, "args": {}})  # fmt: skip
    group = next(e for e in manifest["updates"] if e["name"] == manifest["entrypoint"])
    group["children"].append(PROBE)
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    env = {**GIT_ENV, **(signing_env(signing_key) if signing_key else {})}
    source = Source(work, tmp / "repo.git", env)
    source.git("init", "-q", "-b", "main")
    source.publish("1.0.0")
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(source.bare)], capture_output=True,
                   timeout=120, env=GIT_ENV, check=True)  # fmt: skip
    source.git("remote", "add", "origin", str(source.bare))
    return source


def _closure(requirements: list[str]) -> list[metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if key in seen:
            continue
        dist = metadata.distribution(req.name)
        seen[key] = dist
        todo.extend(Requirement(r) for r in dist.requires or [])
    return list(seen.values())


def _record_hash(data: bytes) -> str:
    return "sha256=" + urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheelhouse(dest: Path) -> Path:
    """See the module docstring."""
    dest.mkdir(parents=True, exist_ok=True)
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    requirements = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    for dist in _closure(requirements):
        name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
        wheel = dest / f"{name}-{dist.version}-py3-none-any.whl"
        rows = []
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
            for file in dist.files or []:
                rel = file.as_posix()
                if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
                    continue
                if rel.endswith(("/RECORD", "/INSTALLER", "/REQUESTED", "/direct_url.json")):
                    continue
                data = Path(str(file.locate())).read_bytes()
                zf.writestr(rel, data)
                rows.append([rel, _record_hash(data), str(len(data))])
            info = next(f.as_posix() for f in dist.files or [] if f.as_posix().endswith(".dist-info/METADATA"))
            record = info.rsplit("/", 1)[0] + "/RECORD"
            rows.append([record, "", ""])
            zf.writestr(record, _csv(rows))
    return dest


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP: host -> {"ok": n, "changed": n, "failed": n, ...}."""
        found = {}
        for match in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", self.stdout, re.M):
            found[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
        return found


@dataclass
class Ansible:
    workdir: Path
    hosts: Hosts
    inventory: Path
    config: Path

    def env(self) -> dict[str, str]:
        return {
            **CLEAN_ENV, "PATH": f"{BIN}:{CLEAN_ENV['PATH']}", "HOME": str(self.workdir / "home"),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "ANSIBLE_CONFIG": str(self.config),
            "ANSIBLE_PIPELINING": "True", "ANSIBLE_HOME": str(self.workdir / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-local"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "False", "PYTHONDONTWRITEBYTECODE": "1",
        }  # fmt: skip

    def playbook(self, name: str, *extra: str, timeout: float = 280) -> Result:
        started = time.monotonic()
        proc = subprocess.run(
            [str(ANSIBLE_PLAYBOOK), "-i", str(self.inventory), str(ANSIBLE_DIR / name), *extra],
            capture_output=True, text=True, timeout=timeout, env=self.env(), cwd=self.workdir, check=False,
        )  # fmt: skip
        return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def write_ansible(workdir: Path, hosts: Hosts, group_vars: dict[str, object],
                  host_vars: dict[str, dict[str, object]]) -> Ansible:  # fmt: skip
    """The inventory (JSON is YAML) and ansible.cfg for `hosts`; see the module docstring."""
    for sub in ("home", "ansible-home", "ansible-local"):
        (workdir / sub).mkdir(exist_ok=True)
    ssh_args = " ".join([*hosts.ssh_options(), "-o", "ControlMaster=auto", "-o", "ControlPersist=300s"])
    config = workdir / "ansible.cfg"
    config.write_text(
        "[defaults]\n"
        f"roles_path = {ANSIBLE_DIR / 'roles'}\n"
        "forks = 10\nhost_key_checking = True\ninterpreter_python = /usr/bin/python3\n"
        "[ssh_connection]\npipelining = True\n"
        f"ssh_args = {ssh_args}\ncontrol_path_dir = {hosts.control_dir}\ncontrol_path = %(directory)s/%%C\n"
    )
    inventory = workdir / "inventory.yml"
    members = {
        host.name: {"ansible_host": host.address, "ansible_port": host.port, **host_vars.get(host.name, {})}
        for host in hosts.hosts
    }
    common = {"ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3", **group_vars}
    inventory.write_text(json.dumps({"updates": {"vars": common, "hosts": members}}, indent=2))
    os.chmod(inventory, 0o600)
    return Ansible(workdir, hosts, inventory, config)
