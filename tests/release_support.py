"""Real parts for the GitHub-release installer tests.

- `tool_script(...)`: the text of a fake tool "binary" (an executable Python script) that prints the real
  version format of atuin, atuin-server, filebrowser or gogs and, started as `<binary> serve <port>`,
  serves the tool's health endpoint (and `/version`) on 127.0.0.1.
- `tar_gz(entries)` and `*_archive(...)`: real release tarballs with the real upstream layouts.
- `ServiceRig`: a service-manager test double (a script taking `is-active --quiet|start|stop UNIT`) that
  really starts and stops the service process via pid files in the test's tmp dir and logs every call. It
  answers with systemctl's documented exit codes: is-active 0 running, 3 stopped, 4 no such unit (a unit
  never `add`ed); start/stop 5 for no such unit; a `<unit>.stop-fails` file makes `stop` fail (exit 1).
- `FakeGitHub` (from `release_github_support`): the GitHub API and a separate download host.
- the `github` and `services` fixtures, `module_args`, `install_script` and `snapshot`.
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from release_github_support import FakeGitHub, sha256  # noqa: F401 - sha256 is re-exported for the tests

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "releases" / "release_assets.json"

_TOOL = r'''#!{python}
"""Fake {kind} {version} for tests ({pad})."""
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

KIND, VERSION, REPORTED, VERSION_EXIT, HEALTH = {kind!r}, {version!r}, {reported!r}, {version_exit!r}, {health!r}
VERSION_ARGS = {{"atuin": ["-V"], "atuin-server": ["--version"], "filebrowser": ["version"], "gogs": ["--version"]}}
FORMAT = {{"atuin": "atuin {{}}", "atuin-server": "atuin-server {{}}",
          "filebrowser": "File Browser v{{}}/e8a388f8", "gogs": "Gogs version {{}}"}}
HERE = os.path.dirname(os.path.realpath(sys.argv[0]))


def health():
    if KIND == "gogs":
        # Gogs 0.14 answers 200 even when the database is down; the body carries the error.
        ok = HEALTH == "ok" and os.path.isfile(os.path.join(HERE, "custom", "conf", "app.ini"))
        body = "* Database connection: OK\n" if ok else "* Database connection: ERROR: no such table\n"
        return "/healthcheck", 200, body
    path = "/healthz" if KIND == "atuin-server" else "/health"
    good = '{{"status":"healthy"}}' if KIND == "atuin-server" else '{{"status":"OK"}}'
    return (path, 200, good) if HEALTH == "ok" else (path, 503, '{{"status":"unhealthy"}}')


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        path, status, body = health()
        if self.path == "/version":
            status, body = 200, VERSION
        elif self.path != path:
            status, body = 404, "not found"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


args = sys.argv[1:]
if args == VERSION_ARGS[KIND]:
    if VERSION_EXIT:
        print("error while loading shared libraries: libfoo.so.1", file=sys.stderr)
        sys.exit(VERSION_EXIT)
    print(FORMAT[KIND].format(REPORTED))
elif args[:1] == ["serve"]:
    if HEALTH == "crash":
        sys.exit(1)
    if KIND == "gogs" and os.path.isdir(os.path.join(HERE, "log")):
        with open(os.path.join(HERE, "log", "gogs.log"), "a") as fh:
            fh.write("started " + VERSION + "\n")
    HTTPServer(("127.0.0.1", int(args[1])), Handler).serve_forever()
else:
    print("usage: " + KIND, file=sys.stderr)
    sys.exit(2)
'''


def tool_script(
    kind: str, version: str, *, reported: str | None = None, version_exit: int = 0, health: str = "ok"
) -> bytes:
    """A fake `kind` binary; `reported` lies about the version, `version_exit` breaks the version command,
    `health` is "ok", "bad" (unhealthy answer) or "crash" (exits at once when served)."""
    text = _TOOL.format(
        python=sys.executable, kind=kind, version=version, reported=reported or version,
        version_exit=version_exit, health=health, pad="x" * (len(version) * 7),
    )
    return text.encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- archives -----------------------------------------------------------------------------------------

def tar_gz(entries: list[tuple[str, Any]]) -> bytes:
    """Entries: (name, bytes) regular file (0755 when it starts with #!), (name, None) directory,
    (name, ("symlink"|"hardlink", target)), (name, ("chr"|"fifo",))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, bytes):
                info.size, info.mode = len(content), 0o755 if content.startswith(b"#!") else 0o644
                tar.addfile(info, io.BytesIO(content))
            else:
                kind = content[0]
                info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                             "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
                if kind in ("symlink", "hardlink"):
                    info.linkname = content[1]
                tar.addfile(info)
    return buf.getvalue()


def atuin_archive(version: str, triple: str = "x86_64-unknown-linux-gnu", program: str = "atuin",
                  **script: Any) -> bytes:
    top = f"{program}-{triple}"
    return tar_gz([(f"{top}/", None), (f"{top}/{program}", tool_script(program, version, **script)),
                   (f"{top}/README.md", b"# atuin\n"), (f"{top}/LICENSE", b"MIT\n"),
                   (f"{top}/CHANGELOG.md", b"changes\n")])


def filebrowser_archive(version: str, **script: Any) -> bytes:
    return tar_gz([("filebrowser", tool_script("filebrowser", version, **script)), ("LICENSE", b"Apache-2.0\n"),
                   ("README.md", b"# File Browser\n"), ("CHANGELOG.md", b"changes\n")])


def gogs_archive(version: str, **script: Any) -> bytes:
    return tar_gz([("gogs/", None), ("gogs/gogs", tool_script("gogs", version, **script)),
                   ("gogs/LICENSE", b"MIT\n"), ("gogs/README.md", b"# Gogs " + version.encode() + b"\n"),
                   ("gogs/scripts/", None), ("gogs/scripts/systemd/", None),
                   ("gogs/scripts/systemd/gogs.service", b"[Unit]\nDescription=Gogs\n")])


def fixture_facts() -> dict[str, Any]:
    if not FIXTURES.is_file():
        pytest.skip(f"release fixtures not found at {FIXTURES} (../shared is absent)")
    return json.loads(FIXTURES.read_text())


# --- service manager double ----------------------------------------------------------------------------

_SVCCTL = r'''#!{python}
"""Service-manager double: is-active --quiet|start|stop UNIT; config and pid files beside this script."""
import json, os, signal, subprocess, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))

def alive(pid):
    try:
        with open(f"/proc/{{pid}}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

def pid_of(unit):
    try:
        pid = int(open(os.path.join(HERE, unit + ".pid")).read())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None

args = [a for a in sys.argv[1:] if a != "--quiet"]
with open(os.path.join(HERE, "calls.log"), "a") as fh:
    fh.write(" ".join(args) + "\n")
verb, unit = args
if not os.path.exists(os.path.join(HERE, unit + ".json")):
    # systemctl's documented codes: is-active 4 "no such unit"; start/stop 5 "not installed" (LSB).
    print(f"Unit {{unit}}.service could not be found.", file=sys.stderr)
    sys.exit(4 if verb == "is-active" else 5)
if verb == "stop" and os.path.exists(os.path.join(HERE, unit + ".stop-fails")):
    print(f"Job for {{unit}}.service canceled.", file=sys.stderr)
    sys.exit(1)
if verb == "is-active":
    sys.exit(0 if pid_of(unit) else 3)
if verb == "stop":
    pid = pid_of(unit)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    try:
        os.unlink(os.path.join(HERE, unit + ".pid"))
    except FileNotFoundError:
        pass
    sys.exit(0)
if verb == "start":
    if pid_of(unit):
        sys.exit(0)
    conf = json.load(open(os.path.join(HERE, unit + ".json")))
    log = open(os.path.join(HERE, unit + ".out"), "ab")
    proc = subprocess.Popen(conf["argv"], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=conf.get("cwd"))
    with open(os.path.join(HERE, unit + ".pid"), "w") as fh:
        fh.write(str(proc.pid))
    sys.exit(0)
sys.exit(2)
'''


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class ServiceRig:
    """Units whose process is `<binary> serve <port>`; `command` is the module's service_command arg."""

    root: Path
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        script = self.root / "svcctl"
        script.write_text(_SVCCTL.format(python=sys.executable))
        script.chmod(0o755)

    @property
    def command(self) -> list[str]:
        return [str(self.root / "svcctl")]

    def add(self, unit: str, binary: Path, cwd: Path | None = None) -> str:
        """Register `unit`; returns its health base URL (http://127.0.0.1:<port>)."""
        port = free_port()
        self.ports[unit] = port
        conf = {"argv": [str(binary), "serve", str(port)], "cwd": str(cwd) if cwd else None}
        (self.root / f"{unit}.json").write_text(json.dumps(conf))
        return f"http://127.0.0.1:{port}"

    def ctl(self, verb: str, unit: str) -> int:
        import subprocess

        return subprocess.run([*self.command, verb, unit], check=False).returncode

    def start(self, unit: str) -> None:
        """Start `unit` and wait until it answers."""
        assert self.ctl("start", unit) == 0
        assert self.wait_version(unit) is not None, (self.root / f"{unit}.out").read_text(errors="replace")
        self.calls_path.unlink(missing_ok=True)  # the test's own setup is not part of what it checks

    def pid(self, unit: str) -> int | None:
        try:
            pid = int((self.root / f"{unit}.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def running_version(self, unit: str) -> str | None:
        """What the running service process says its version is (None when nothing answers)."""
        if self.pid(unit) is None:
            return None
        try:
            return requests.get(f"http://127.0.0.1:{self.ports[unit]}/version", timeout=2).text
        except requests.RequestException:
            return None

    def wait_version(self, unit: str, timeout: float = 10.0) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            version = self.running_version(unit)
            if version:
                return version
            time.sleep(0.05)
        return None

    @property
    def calls_path(self) -> Path:
        return self.root / "calls.log"

    def calls(self) -> list[str]:
        return self.calls_path.read_text().splitlines() if self.calls_path.exists() else []

    def stop_all(self) -> None:
        for pid_file in self.root.glob("*.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass


def snapshot(*roots: Path, dir_mtimes: bool = True) -> dict[str, tuple[bytes | None, int]]:
    """Every path under `roots` with its bytes (None for directories) and mtime in ns. Failed installs
    create and remove temp files in the destination directory, so they compare with `dir_mtimes=False`;
    a dry run must leave even the directories' mtimes alone."""
    state: dict[str, tuple[bytes | None, int]] = {}
    for root in roots:
        if not root.exists():
            continue
        for path in sorted([root, *root.rglob("*")]):
            st = path.lstat()
            if path.is_dir() and not path.is_symlink():
                state[str(path)] = (None, st.st_mtime_ns if dir_mtimes else 0)
            else:
                data = path.read_bytes() if path.is_file() else os.readlink(path).encode()
                state[str(path)] = (data, st.st_mtime_ns)
    return state


# --- fixtures (import them by name into a test file) -----------------------------------------------------

@pytest.fixture(name="github")
def github_fixture(httpserver: HTTPServer, httpserver_ipv4: HTTPServer) -> FakeGitHub:
    """API on `localhost`, downloads on `127.0.0.1`: two hosts, so the token must not cross."""
    return FakeGitHub(httpserver, httpserver_ipv4)


@pytest.fixture(name="services")
def services_fixture(tmp_path: Path) -> Iterator[ServiceRig]:
    rig = ServiceRig(tmp_path / "svc")
    yield rig
    rig.stop_all()


def module_args(github: FakeGitHub, tmp_path: Path, name: str, **extra: Any) -> dict[str, Any]:
    """Module args for a test run: local API, fast retries and health polling, tmp state dir."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    args: dict[str, Any] = {
        "name": name, "dry_run": False, "state_dir": str(state), "api_url": github.api_url,
        "token_env": "UPDATES_TEST_GITHUB_TOKEN", "http_backoff": 0, "health_timeout": 5,
        "health_interval": 0.05,
    }
    args.update(extra)
    return args


def install_script(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755)
    return path
