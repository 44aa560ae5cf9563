"""Real parts for the GitHub-release installer tests.

- `tool_script(...)`: the text of a fake tool "binary" (an executable Python script) that prints the real
  version format of atuin, atuin-server, filebrowser or gogs and, started as `<binary> serve <port>`,
  serves the tool's health endpoint (and `/version`) on 127.0.0.1.
- `tar_gz(entries)` and `*_archive(...)`: real release tarballs with the real upstream layouts.
- `ServiceRig`: a service-manager test double (a script taking `is-active --quiet|start|stop UNIT`) that
  really starts and stops the service process via pid files in the test's tmp dir and logs every call.
- `FakeGitHub`: the GitHub REST API on one pytest-httpserver (host `localhost`) and the download host on a
  second one (`127.0.0.1`); an asset's API URL redirects to the download host, like GitHub does.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
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
from werkzeug import Request, Response

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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


# --- fake GitHub -------------------------------------------------------------------------------------------

@dataclass
class FakeAsset:
    id: int
    name: str
    data: bytes
    digest: bool


@dataclass
class FakeRelease:
    tag: str
    assets: list[FakeAsset]
    prerelease: bool = False
    draft: bool = False


@dataclass
class Seen:
    host: str
    path: str
    headers: dict[str, str]
    status: int
    body_bytes: int


class FakeGitHub:
    """GitHub API on `api` (localhost), release files on `dl` (127.0.0.1). Faults are set per test."""

    def __init__(self, api: HTTPServer, dl: HTTPServer) -> None:
        self.api, self.dl = api, dl
        self.releases: dict[str, list[FakeRelease]] = {}
        self._next_id = 100
        self.seen: list[Seen] = []
        self.rate_limited_until: int | None = None  # epoch seconds of x-ratelimit-reset
        self.api_failures = 0  # answer this many API requests with 500 first
        self.dl_faults: dict[str, list[str]] = {}  # asset name -> faults to apply, one per request
        api.expect_request(re.compile("^/.*")).respond_with_handler(self._api)
        dl.expect_request(re.compile("^/.*")).respond_with_handler(self._dl)

    @property
    def api_url(self) -> str:
        return self.api.url_for("").rstrip("/")

    def add_release(self, repo: str, tag: str, assets: dict[str, bytes], *, digests: bool = True,
                    checksums: str | None = None, prerelease: bool = False, draft: bool = False) -> FakeRelease:
        """Add a release (newest last). `checksums`: also publish a checksum file with this name, listing
        every asset (`<hex> *<name>` when the name ends with .sha256/.sum, else `<hex>  <name>`)."""
        items = dict(assets)
        if checksums:
            star = "*" if checksums.endswith((".sha256", ".sum")) else " "
            items[checksums] = "".join(f"{sha256(d)} {star}{n}\n" for n, d in assets.items()).encode()
        fake = []
        for name, data in items.items():
            self._next_id += 1
            fake.append(FakeAsset(self._next_id, name, data, digests))
        release = FakeRelease(tag, fake, prerelease, draft)
        self.releases.setdefault(repo, []).append(release)
        return release

    def api_requests(self) -> list[Seen]:
        return [s for s in self.seen if s.host == "api"]

    def dl_requests(self) -> list[Seen]:
        return [s for s in self.seen if s.host == "dl"]

    def _asset_json(self, repo: str, asset: FakeAsset) -> dict[str, Any]:
        return {
            "id": asset.id, "name": asset.name, "size": len(asset.data), "content_type": "application/gzip",
            "url": f"{self.api_url}/repos/{repo}/releases/assets/{asset.id}",
            "browser_download_url": self.dl.url_for(f"/download/{asset.id}/{asset.name}"),
            "digest": f"sha256:{sha256(asset.data)}" if asset.digest else None,
        }

    def _release_json(self, repo: str, release: FakeRelease) -> dict[str, Any]:
        return {"tag_name": release.tag, "name": release.tag, "draft": release.draft,
                "prerelease": release.prerelease, "assets": [self._asset_json(repo, a) for a in release.assets]}

    def _record(self, host: str, request: Request, response: Response) -> Response:
        body = 0 if response.status_code == 304 else len(response.get_data())
        self.seen.append(Seen(host, request.path, dict(request.headers), response.status_code, body))
        return response

    def _api(self, request: Request) -> Response:
        return self._record("api", request, self._api_answer(request))

    def _api_answer(self, request: Request) -> Response:
        if self.api_failures > 0:
            self.api_failures -= 1
            return Response("upstream error", status=500)
        limit = {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59", "x-ratelimit-reset": "1900000000"}
        if self.rate_limited_until is not None:
            limit.update({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(self.rate_limited_until)})
            return Response(json.dumps({"message": "API rate limit exceeded"}), status=403, headers=limit,
                            content_type="application/json")
        match = re.match(r"^/repos/([^/]+/[^/]+)/releases(?:/(latest|tags/(.+)|assets/(\d+)))?$", request.path)
        if not match or match.group(1) not in self.releases:
            return Response('{"message": "Not Found"}', status=404, content_type="application/json")
        repo, which, tag, asset_id = match.groups()
        releases = self.releases[repo]
        if asset_id:
            asset = next((a for r in releases for a in r.assets if a.id == int(asset_id)), None)
            if asset is None:
                return Response('{"message": "Not Found"}', status=404)
            if request.headers.get("Accept") != "application/octet-stream":
                return Response(json.dumps(self._asset_json(repo, asset)), content_type="application/json")
            return Response(status=302, headers={"Location": self.dl.url_for(f"/objects/{asset.id}/{asset.name}")})
        if which is None:
            data: Any = [self._release_json(repo, r) for r in reversed(releases)]
        else:
            if which == "latest":
                found = [r for r in releases if not r.draft and not r.prerelease]
            else:
                found = [r for r in releases if r.tag == tag and not r.draft]
            if not found:
                return Response('{"message": "Not Found"}', status=404, content_type="application/json")
            data = self._release_json(repo, found[-1])
        body = json.dumps(data)
        etag = f'W/"{hashlib.sha1(body.encode()).hexdigest()}"'
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers={"ETag": etag, **limit})
        return Response(body, content_type="application/json", headers={"ETag": etag, **limit})

    def _dl(self, request: Request) -> Response:
        return self._record("dl", request, self._dl_answer(request))

    def _dl_answer(self, request: Request) -> Response:
        match = re.match(r"^/(?:objects|download)/(\d+)/(.+)$", request.path)
        asset = next((a for rs in self.releases.values() for r in rs for a in r.assets
                      if match and a.id == int(match.group(1))), None)
        if asset is None:
            return Response("no such object", status=404)
        faults = self.dl_faults.get(asset.name) or []
        fault = faults.pop(0) if faults else None
        if fault == "500":
            return Response("<html>server error</html>", status=500, content_type="text/html")
        if fault == "html":
            return Response("<!DOCTYPE html><html><body>Sign in to GitHub</body></html>",
                            content_type="text/html; charset=utf-8")
        if fault == "truncate":
            return Response(asset.data[: len(asset.data) // 2], content_type="application/octet-stream")
        return Response(asset.data, content_type="application/octet-stream")


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
