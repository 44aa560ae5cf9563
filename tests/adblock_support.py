"""Shared helpers for the adblock tests: fixture paths, module args, a tiny DNS client, list builders."""
from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "adblock"


def fixture(name: str) -> Path:
    """Path of a shared adblock fixture; skips the test with a reason when ../shared is absent."""
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"shared fixture {path} is absent (../shared/fixtures/adblock not checked out beside the repo)")
    return path


def module_args(tmp_path: Path, sources: list[Any], **extra: Any) -> dict[str, Any]:
    """Args as the orchestrator passes them, writing only under tmp_path."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    args: dict[str, Any] = {
        "name": "adblock",
        "dry_run": False,
        "state_dir": str(state),
        "sources": sources,
        "output": str(tmp_path / "hosts"),
        "http_retries": 0,
        "http_backoff": 0,
        "http_timeout": 5,
    }
    args.update(extra)
    return args


def hosts_list(names: list[str], ip: str = "0.0.0.0") -> bytes:
    return ("# test list\n" + "".join(f"{ip} {n}\n" for n in names)).encode()


def numbered(prefix: str, count: int, tld: str = "com") -> list[str]:
    return [f"{prefix}{i:05d}.{tld}" for i in range(count)]


def block_names(hosts: Path) -> list[str]:
    """The names inside the managed block of a hosts file, in file order."""
    text = hosts.read_text()
    inside = text.split("# BEGIN updates-adblock\n", 1)[1].split("# END updates-adblock\n", 1)[0]
    return [line.split()[1] for line in inside.splitlines() if line and not line.startswith("#")]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dns_query(name: str, port: int, qtype: int = 1, timeout: float = 1.0) -> tuple[int, list[str]]:
    """Ask 127.0.0.1:port for `name` (qtype 1: A, 28: AAAA); returns (rcode, A and AAAA answers).
    Raises socket.timeout when silent."""
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, ("127.0.0.1", port))
        reply, _ = sock.recvfrom(4096)
    rid, flags, _qd, ancount, _ns, _ar = struct.unpack("!HHHHHH", reply[:12])
    assert rid == ident
    offset = 12 + len(question) + 4
    answers = []
    for _ in range(ancount):
        if reply[offset] & 0xC0 == 0xC0:
            offset += 2
        else:
            while reply[offset]:
                offset += reply[offset] + 1
            offset += 1
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", reply[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            answers.append(socket.inet_ntoa(reply[offset : offset + 4]))
        elif rtype == 28 and length == 16:
            answers.append(socket.inet_ntop(socket.AF_INET6, reply[offset : offset + 16]))
        offset += length
    return flags & 0xF, answers


@contextmanager
def cut_short_server(body: bytes, sent: list[int]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers one request per item of `sent`, each announcing all of
    `body` but closing the connection after that many bytes of it (a transfer cut short); yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n" % len(body)

    def answer() -> None:
        for size in sent:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(head + body[:size])

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/list"
    finally:
        listener.close()
        thread.join(timeout=10)


UPSTREAM_A = "192.0.2.53"
UPSTREAM_AAAA = "2001:db8::53"


def _answer(query: bytes) -> bytes:
    """A reply to a DNS query: every A name is UPSTREAM_A, every AAAA name UPSTREAM_AAAA, other types empty."""
    end = 12
    while query[end]:
        end += query[end] + 1
    qtype = struct.unpack("!H", query[end + 1 : end + 3])[0]
    question = query[12 : end + 5]
    rdata = {1: socket.inet_aton(UPSTREAM_A), 28: socket.inet_pton(socket.AF_INET6, UPSTREAM_AAAA)}.get(qtype)
    head = query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if rdata else 0, 0, 0)
    answer = b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 60, len(rdata)) + rdata if rdata else b""
    return head + question + answer


@contextmanager
def upstream_dns() -> Iterator[int]:
    """A DNS server on 127.0.0.1 (UDP, a free port) that answers every name (see _answer): the "normal
    resolution" a resolver forwards to. Yields its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(4096)
                sock.sendto(_answer(query), peer)
            except (TimeoutError, IndexError, struct.error):
                continue
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()
