"""Test hosts for the Ansible tests: real sshd processes on loopback, each with a filesystem of its own.

`start_hosts(workdir, names)` starts one `/usr/sbin/sshd -D` per name on 127.0.0.11, .12, ... (a free
high port each), every one in its own mount namespace (`unshare --mount --propagation private`, then
host_launcher.py), where per-host temp directories are bind-mounted over the paths the role writes
(HOST_PATHS). The host keys, the client key, known_hosts and the sshd configs live in `workdir`; nothing
on the real machine is written. It raises `HostsUnavailable` (the tests skip with its text) when sshd,
unshare or a mount namespace is not available here. `stop_hosts` ends each sshd by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
LAUNCHER = Path(__file__).with_name("host_launcher.py")
INSTALL_DIR = "/usr/local/lib/user_local_lib/updates"
# Every path the role (or what it runs) writes on a host, mapped to a directory or file of that host's
# own. /root takes Ansible's remote temp files and pip's cache; /run/sshd is sshd's privilege separation
# directory.
HOST_PATHS = (
    INSTALL_DIR,
    "/var/lib/updates",
    "/var/log/updates",
    "/etc/systemd/system",
    "/etc/updates",
    "/usr/local/bin",
    "/etc/hosts",
    "/root",
    "/run/sshd",
)
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


class HostsUnavailable(Exception):
    """sshd test hosts cannot run on this machine; the message says why."""


@dataclass
class SshHost:
    name: str
    address: str
    port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None

    def path(self, target: str) -> Path:
        """Where `target` (a path as the host sees it) lies on the real machine."""
        for mapped in HOST_PATHS:
            if target == mapped or target.startswith(mapped + "/"):
                return self.root / mapped.strip("/").replace("/", "_") / target[len(mapped) + 1 :]
        raise ValueError(f"{target} is not one of this host's own paths")


@dataclass
class Hosts:
    workdir: Path
    key: Path
    known_hosts: Path
    control_dir: Path
    hosts: list[SshHost] = field(default_factory=list)

    def ssh_options(self) -> list[str]:
        return [
            "-F", "/dev/null", "-i", str(self.key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
        ]  # fmt: skip

    def ssh(self, host: SshHost, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `command` as root on `host` (inside its namespace), like Ansible does."""
        argv = ["ssh", *self.ssh_options(), "-p", str(host.port), f"root@{host.address}", command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=CLEAN_ENV, check=False)


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, timeout=30, capture_output=True, env=CLEAN_ENV)  # fmt: skip


def _check_tools() -> None:
    for tool in ("ssh", "ssh-keygen", "unshare"):
        if shutil.which(tool) is None:
            raise HostsUnavailable(f"{tool} is not installed (apt-get install openssh-server util-linux)")
    if not SSHD.exists():
        raise HostsUnavailable(f"{SSHD} is missing (apt-get install openssh-server)")
    if os.geteuid() != 0:
        raise HostsUnavailable("the sshd test hosts need root (mount namespaces, sshd as root)")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    if probe.returncode != 0:
        raise HostsUnavailable(f"no mount namespace here: unshare: {probe.stderr.strip()}")


def _sshd_config(host: SshHost, host_key: Path, authorized: Path) -> str:
    # StrictModes no: the keys live under /tmp, which is world-writable. UsePAM no: no PAM session for
    # root's key login in a container.
    return (
        f"ListenAddress {host.address}:{host.port}\n"
        f"HostKey {host_key}\n"
        f"PidFile {host.root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\n"
        "PrintMotd no\nAcceptEnv LANG LC_*\nSubsystem sftp internal-sftp\nMaxSessions 50\nMaxStartups 50\n"
    )


def _wait_listening(host: SshHost, log: Path, deadline: float) -> None:
    assert host.process is not None
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
            raise HostsUnavailable(f"sshd for {host.name} exited {host.process.returncode}: {lines[-1]}")
        try:
            with socket.create_connection((host.address, host.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise HostsUnavailable(f"sshd for {host.name} did not listen on {host.address}:{host.port} within 10 s")


def start_hosts(workdir: Path, names: list[str]) -> Hosts:
    """See the module docstring. On failure every sshd already started is stopped."""
    _check_tools()
    key = workdir / "client_key"
    _keygen(key)
    # Control sockets need a short path (a unix socket's name is at most 107 bytes).
    hosts = Hosts(workdir, key, workdir / "known_hosts", Path(tempfile.mkdtemp(prefix="upd-ssh-")))
    authorized = workdir / "authorized_keys"
    authorized.write_text(key.with_suffix(".pub").read_text())
    known = []
    try:
        for index, name in enumerate(names):
            address = f"127.0.0.{11 + index}"
            host = SshHost(name, address, _free_port(address), workdir / name)
            host.root.mkdir()
            host_key = host.root / "ssh_host_ed25519_key"
            _keygen(host_key)
            known.append(f"[{address}]:{host.port} {host_key.with_suffix('.pub').read_text().strip()}\n")
            mounts = []
            for target in HOST_PATHS:
                source = host.path(target)
                if target == "/etc/hosts":
                    source.parent.mkdir(parents=True, exist_ok=True)
                    source.write_text(f"127.0.0.1\tlocalhost\n{address}\t{name}\n")
                else:
                    source.mkdir(parents=True, mode=0o755)
                    source.chmod(0o755)
                mounts.append([str(source), target])
            config = host.root / "sshd_config"
            config.write_text(_sshd_config(host, host_key, authorized))
            log = host.root / "sshd.log"
            spec = host.root / "mounts.json"
            spec.write_text(json.dumps({"mounts": mounts, "staging": str(host.root / "staging"),
                                        "argv": [str(SSHD), "-D", "-e", "-f", str(config)]}))  # fmt: skip
            with log.open("wb") as out:
                host.process = subprocess.Popen(
                    ["unshare", "--mount", "--propagation", "private", sys.executable, str(LAUNCHER), str(spec)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=CLEAN_ENV,
                )  # fmt: skip
            hosts.hosts.append(host)
        hosts.known_hosts.write_text("".join(known))
        deadline = time.monotonic() + 10
        for host in hosts.hosts:
            _wait_listening(host, host.root / "sshd.log", deadline)
    except BaseException:
        stop_hosts(hosts)
        raise
    return hosts


def stop_hosts(hosts: Hosts) -> None:
    """Close the reused SSH connections (Ansible's control masters), then stop every sshd by its pid."""
    for sock in sorted(hosts.control_dir.glob("*")) if hosts.control_dir.exists() else []:
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "unused"], capture_output=True,
                       timeout=30, env=CLEAN_ENV, check=False)  # fmt: skip
    for host in hosts.hosts:
        process = host.process
        if process is None or process.poll() is not None:
            continue
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    shutil.rmtree(hosts.control_dir, ignore_errors=True)
