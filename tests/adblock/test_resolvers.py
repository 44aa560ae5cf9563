"""The configs adblock writes, fed to the real resolvers: dnsmasq and unbound check them, and live daemons on
127.0.0.1 (high ports) answer a blocked name with the block answer and an allowed name normally.
The tests skip with a reason when the binaries are missing (.ci/run installs dnsmasq-base and unbound)."""
from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from adblock_support import (
    UPSTREAM_A,
    UPSTREAM_AAAA,
    dns_query,
    fixture,
    free_udp_port,
    module_args,
    upstream_dns,
)
from updates.adblock.index import main

BLOCKED = "ads.tracker-network.net"
ALLOWED = "allowed.site.org"
LOCAL_ANSWER = "192.0.2.10"


def need(program: str) -> str:
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/sbin/{program}") if Path(p).exists()), None
    )
    if path is None:
        pytest.skip(f"{program} is not installed (apt-get install dnsmasq-base unbound)")
    return path


def compile_to(tmp_path: Path, fmt: str, real_lists: bool = True, **extra: object) -> Path:
    source = tmp_path / "list.txt"
    source.write_text(f"0.0.0.0 {BLOCKED}\n0.0.0.0 {ALLOWED}\n")
    sources = [f"file://{source}"]
    if real_lists:
        sources += [str(fixture(n)) for n in ("adaway.github.io-hosts.txt", "PiHoleBlocklist-SmartTV-AGH.txt",
                                              "adblock-nocoin-list-nocoin.txt", "hosts.extras-add.2o7Net-hosts")]
    out = tmp_path / f"blocklist.{fmt}.conf"
    main(module_args(tmp_path, sources, format=fmt, output=str(out), allow=[ALLOWED], **extra))
    return out


def wait_for_answer(port: int, proc: subprocess.Popen, probe: str = ALLOWED) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"resolver exited with {proc.returncode}: {out}")
        try:
            dns_query(probe, port, timeout=0.3)
            return
        except (TimeoutError, ConnectionRefusedError):
            time.sleep(0.1)
    pytest.fail("resolver did not answer within 20 s")


@contextmanager
def daemon(argv: list[str], port: int, probe: str = ALLOWED) -> Iterator[None]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_answer(port, proc, probe)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_dnsmasq_accepts_the_config(tmp_path: Path) -> None:
    dnsmasq = need("dnsmasq")
    conf = compile_to(tmp_path, "dnsmasq")
    proc = subprocess.run([dnsmasq, "--test", f"--conf-file={conf}"], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"syntax check OK" in proc.stdout + proc.stderr
    assert f"address=/{BLOCKED}/#\n" in conf.read_text()


def test_dnsmasq_rejects_a_broken_config(tmp_path: Path) -> None:
    # The check above can fail: a config dnsmasq does not understand is refused.
    dnsmasq = need("dnsmasq")
    conf = tmp_path / "broken.conf"
    conf.write_text("address=/ok.example.com/0.0.0.0\nlocal-zone: \"x\" always_nxdomain\n")
    proc = subprocess.run([dnsmasq, "--test", f"--conf-file={conf}"], capture_output=True, check=False)
    assert proc.returncode != 0


def test_unbound_accepts_the_config(tmp_path: Path) -> None:
    checkconf = need("unbound-checkconf")
    conf = compile_to(tmp_path, "unbound")
    proc = subprocess.run([checkconf, str(conf)], capture_output=True, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()
    assert f'local-zone: "{BLOCKED}" always_nxdomain\n' in conf.read_text()
    broken = tmp_path / "broken.conf"
    broken.write_text(conf.read_text().replace("always_nxdomain", "always_sometimes", 1))
    assert subprocess.run([checkconf, str(broken)], capture_output=True, check=False).returncode != 0


@pytest.mark.parametrize(
    ("redirect", "answer_a", "answer_aaaa"),
    [({}, "0.0.0.0", "::"), ({"redirect_ip": "192.0.2.99"}, "192.0.2.99", "::")],
    ids=["null-address", "redirect-ip"],
)
def test_live_dnsmasq_blocks_and_allows(tmp_path: Path, redirect: dict, answer_a: str, answer_aaaa: str) -> None:
    dnsmasq = need("dnsmasq")
    conf = compile_to(tmp_path, "dnsmasq", real_lists=False, **redirect)
    port = free_udp_port()
    argv = [
        dnsmasq, "--keep-in-foreground", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
        "--no-resolv", "--no-hosts", f"--conf-file={conf}", f"--pid-file={tmp_path / 'dnsmasq.pid'}",
        f"--host-record={ALLOWED},{LOCAL_ANSWER}", "--log-facility=-",
    ]
    with daemon(argv, port):
        assert dns_query(BLOCKED, port) == (0, [answer_a])
        assert dns_query(f"deeper.{BLOCKED}", port) == (0, [answer_a])  # address=/x/ covers subdomains
        # AAAA too: with no upstream (--no-resolv) a forwarded query would come back REFUSED (5).
        assert dns_query(BLOCKED, port, qtype=28) == (0, [answer_aaaa])
        assert dns_query(ALLOWED, port) == (0, [LOCAL_ANSWER])


def test_live_unbound_blocks_and_allows(tmp_path: Path) -> None:
    unbound = need("unbound")
    ours = compile_to(tmp_path, "unbound", real_lists=False)
    port = free_udp_port()
    main_conf = tmp_path / "unbound.conf"
    main_conf.write_text(
        "server:\n"
        f'  interface: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  do-tcp: no\n  username: ""\n  chroot: ""\n'
        f'  directory: "{tmp_path}"\n  pidfile: "{tmp_path / "unbound.pid"}"\n  use-syslog: no\n'
        f'  local-data: "{ALLOWED}. 60 IN A {LOCAL_ANSWER}"\n'
        f'include: "{ours}"\n'
    )
    with daemon([unbound, "-d", "-c", str(main_conf)], port):
        assert dns_query(BLOCKED, port) == (3, [])  # NXDOMAIN
        assert dns_query(BLOCKED, port, qtype=28) == (3, [])
        assert dns_query(ALLOWED, port) == (0, [LOCAL_ANSWER])


# Allow rules below a blocked parent: dnsmasq, unbound and RPZ wildcards block a listed name's subdomains,
# so an allowed name there needs the resolver's own exception. "Resolves normally" means: forwarded to the
# upstream server (a real one on 127.0.0.1, see adblock_support.upstream_dns), whose answer comes back.
PARENT = "parent-test.org"
OK_NAME = f"ok.{PARENT}"
UNRELATED = "unrelated.example.net"  # no rule touches it: upstream answers


def compile_parent(tmp_path: Path, fmt: str, **extra: object) -> Path:
    source = tmp_path / "parent-list.txt"
    source.write_text(f"0.0.0.0 {PARENT}\n0.0.0.0 {OK_NAME}\n0.0.0.0 bad.{OK_NAME}\n0.0.0.0 {BLOCKED}\n")
    out = tmp_path / f"parent.{fmt}"
    main(module_args(tmp_path, [f"file://{source}"], format=fmt, output=str(out), allow=[OK_NAME], **extra))
    return out


@pytest.mark.parametrize("redirect", [{}, {"redirect_ip": "192.0.2.99"}], ids=["null-address", "redirect-ip"])
def test_live_dnsmasq_resolves_an_allowed_name_below_a_blocked_parent(tmp_path: Path, redirect: dict) -> None:
    dnsmasq = need("dnsmasq")
    conf = compile_parent(tmp_path, "dnsmasq", **redirect)
    assert f"server=/{OK_NAME}/#\n" in conf.read_text()
    blocked = redirect.get("redirect_ip", "0.0.0.0")
    port = free_udp_port()
    with upstream_dns() as upstream:
        argv = [
            dnsmasq, "--keep-in-foreground", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", f"--server=127.0.0.1#{upstream}", f"--conf-file={conf}",
            f"--pid-file={tmp_path / 'dnsmasq.pid'}", "--log-facility=-", "--cache-size=0",
        ]
        with daemon(argv, port, probe=UNRELATED):
            assert dns_query(UNRELATED, port) == (0, [UPSTREAM_A])
            assert dns_query(PARENT, port) == (0, [blocked])
            assert dns_query(f"x.{PARENT}", port) == (0, [blocked])
            assert dns_query(OK_NAME, port) == (0, [UPSTREAM_A])
            assert dns_query(OK_NAME, port, qtype=28) == (0, [UPSTREAM_AAAA])
            assert dns_query(f"bad.{OK_NAME}", port) == (0, [blocked])  # listed itself: still blocked


def unbound_conf(tmp_path: Path, port: int, upstream: int, body: str) -> Path:
    conf = tmp_path / "unbound.conf"
    conf.write_text(
        "server:\n"
        f'  interface: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  do-tcp: no\n  username: ""\n  chroot: ""\n'
        f'  directory: "{tmp_path}"\n  pidfile: "{tmp_path / "unbound.pid"}"\n  use-syslog: no\n'
        "  do-not-query-localhost: no\n  qname-minimisation: no\n  cache-max-ttl: 0\n"
        + body
        + f'forward-zone:\n  name: "."\n  forward-addr: 127.0.0.1@{upstream}\n'
    )
    return conf


def test_live_unbound_resolves_an_allowed_name_below_a_blocked_parent(tmp_path: Path) -> None:
    unbound = need("unbound")
    ours = compile_parent(tmp_path, "unbound")
    assert f'local-zone: "{OK_NAME}" transparent\n' in ours.read_text()
    port = free_udp_port()
    with upstream_dns() as upstream:
        conf = unbound_conf(tmp_path, port, upstream, f'include: "{ours}"\n')
        with daemon([unbound, "-d", "-c", str(conf)], port, probe=UNRELATED):
            assert dns_query(UNRELATED, port) == (0, [UPSTREAM_A])
            assert dns_query(PARENT, port) == (3, [])
            assert dns_query(f"x.{PARENT}", port) == (3, [])
            assert dns_query(OK_NAME, port) == (0, [UPSTREAM_A])
            assert dns_query(OK_NAME, port, qtype=28) == (0, [UPSTREAM_AAAA])
            assert dns_query(f"bad.{OK_NAME}", port) == (3, [])


def test_live_rpz_passthru_outranks_a_later_wildcard(tmp_path: Path) -> None:
    """Our RPZ blocks exact names; an administrator's own zone after it may block whole subtrees
    (`*.name`). unbound's `rpz:` clauses are policy zones in order: the first that matches decides, so
    our `rpz-passthru.` keeps the allowed name resolving."""
    unbound = need("unbound")
    ours = compile_parent(tmp_path, "rpz")
    assert f"{OK_NAME} CNAME rpz-passthru.\n" in ours.read_text()
    admin = tmp_path / "admin.rpz"
    admin.write_text(
        "$TTL 60\n@ IN SOA localhost. root.localhost. 1 3600 600 86400 60\n@ IN NS localhost.\n"
        f"{PARENT} CNAME .\n*.{PARENT} CNAME .\n"
    )
    port = free_udp_port()
    body = (
        '  module-config: "respip validator iterator"\n'
        f'rpz:\n  name: "adblock.rpz."\n  zonefile: "{ours}"\n'
        f'rpz:\n  name: "admin.rpz."\n  zonefile: "{admin}"\n'
    )
    with upstream_dns() as upstream:
        conf = unbound_conf(tmp_path, port, upstream, body)
        checkconf = need("unbound-checkconf")
        checked = subprocess.run([checkconf, str(conf)], capture_output=True, check=False)
        assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
        with daemon([unbound, "-d", "-c", str(conf)], port, probe=UNRELATED):
            assert dns_query(UNRELATED, port) == (0, [UPSTREAM_A])
            assert dns_query(BLOCKED, port) == (3, [])  # our zone: CNAME . is NXDOMAIN
            assert dns_query(PARENT, port) == (3, [])
            assert dns_query(f"x.{PARENT}", port) == (3, [])  # the administrator's wildcard
            assert dns_query(f"bad.{OK_NAME}", port) == (3, [])
            assert dns_query(OK_NAME, port) == (0, [UPSTREAM_A])
            assert dns_query(OK_NAME, port, qtype=28) == (0, [UPSTREAM_AAAA])
