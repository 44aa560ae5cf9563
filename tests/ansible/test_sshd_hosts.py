"""The test hosts themselves: each sshd sees a filesystem of its own, and stopping them leaves nothing."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from sshd_support import HostsUnavailable, start_hosts, stop_hosts


def test_each_host_has_its_own_paths_and_stops_by_pid(tmp_path: Path) -> None:
    try:
        hosts = start_hosts(tmp_path, ["alpha", "beta"])
    except HostsUnavailable as exc:
        pytest.skip(f"no sshd test hosts: {exc}")
    real_probe = Path("/usr/local/bin/updates-test-probe")
    assert not real_probe.exists()
    try:
        for host in hosts.hosts:
            proc = hosts.ssh(host, "grep -c . /etc/hosts; hostname_line=$(tail -1 /etc/hosts); echo $hostname_line;"
                                   " echo hello > /usr/local/bin/updates-test-probe;"
                                   " mkdir -p /var/log/updates/x && echo done")  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.split("\n")[1] == f"{host.address} {host.name}"
            assert host.path("/usr/local/bin/updates-test-probe").read_text() == "hello\n"
            assert host.path("/var/log/updates/x").is_dir()
        assert not real_probe.exists() and not Path("/var/log/updates/x").exists()
    finally:
        stop_hosts(hosts)
    for host in hosts.hosts:
        assert host.process is not None and host.process.returncode is not None
        with pytest.raises(ProcessLookupError):
            os.kill(host.process.pid, 0)
        with pytest.raises(OSError), socket.create_connection((host.address, host.port), timeout=1):
            pass
