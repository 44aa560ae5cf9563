"""`index.py new`: a module for any GitHub-release tool, made in a copy of the project (a real git
repository), run by the real orchestrator against the local GitHub stand-in (install, up to date, a failed
upgrade undone, a good one), and rolled back like any module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from git_support import ROOT, Repo
from release_support import (  # noqa: F401 - fixtures
    FakeGitHub,
    ServiceRig,
    github_fixture,
    install_script,
    services_fixture,
    tar_gz,
)
from updates.utils.digest import compute_folder_sha256

REPO = "acme/mytool"
ASSET = "mytool_{v}_linux_amd64.tar.gz"

TOOL = r'''#!{python}
"""Fake mytool {version} ({pad})."""
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        status, body = {{"/health": ({health}, "ok"), "/version": (200, "{version}")}}.get(self.path, (404, "no"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass

if sys.argv[1:] == ["--version"]:
    print("mytool version v{version} (linux/amd64)")
elif sys.argv[1:2] == ["serve"]:
    HTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
else:
    sys.exit(2)
'''


def tool(version: str, health: int = 200) -> bytes:
    return TOOL.format(python=sys.executable, version=version, health=health, pad="x" * 7 * len(version)).encode()


def publish(github: FakeGitHub, version: str, health: int = 200) -> None:
    """Like GoReleaser: archives per platform, no API digest, `checksums.txt`; the binary in a subfolder."""
    top = f"mytool-{version}"
    assets = {
        ASSET.format(v=version): tar_gz([(f"{top}/", None), (f"{top}/mytool", tool(version, health)),
                                         (f"{top}/LICENSE", b"MIT\n")]),
        f"mytool_{version}_darwin_amd64.tar.gz": b"not for linux",
        f"mytool_{version}_linux_arm64.tar.gz": b"another arch",
    }
    github.add_release(REPO, f"v{version}", assets, digests=False, checksums="checksums.txt")


def make_project(root: Path) -> Repo:
    """A copy of the orchestrator in a git repository, with a manifest that has no module yet."""
    root.mkdir()
    for name in ("index.py", "__init__.py"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "utils", root / "utils", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / ".gitignore").write_text("state/\n__pycache__/\n*.pyc\n")
    manifest = {"updates": [{"name": "all_services", "children": []}], "entrypoint": "all_services"}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    repo = Repo(root)
    repo.git("init", "-q", "-b", "main")
    for key, value in (("user.name", "New Tests"), ("user.email", "tests@example.invalid"),
                       ("commit.gpgSign", "false"), ("tag.gpgSign", "false")):
        repo.git("config", key, value)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "orchestrator")
    return repo


def cli(repo: Repo, *args: str, script: str = "index.py") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, script, *args], cwd=repo.root, capture_output=True, text=True, timeout=120,
        env={**os.environ, "UPDATES_STATE_DIR": str(repo.root / "state")}, check=False,
    )


def run_module(repo: Repo) -> tuple[int, dict[str, Any]]:
    done = cli(repo, "run", "--only", "mytool", "--json")
    report = json.loads(done.stdout)
    (module,) = report["modules"]
    return done.returncode, module


def test_new_module_is_made_run_and_rolled_back_like_any_other(
    tmp_path: Path, github: FakeGitHub, services: ServiceRig
) -> None:
    repo = make_project(tmp_path / "updates")
    binary = tmp_path / "bin" / "mytool"
    binary.parent.mkdir()
    health = services.add("mytool", binary) + "/health"

    done = cli(repo, "new", "mytool", "--github", REPO, "--service", "mytool", "--health", health)
    assert done.returncode == 0, done.stderr
    module = repo.root / "mytool"
    assert done.stdout.startswith(f"created module mytool in {module} (sealed; manifest entry added, disabled)")
    assert sorted(p.name for p in module.iterdir()) == ["README.md", "__init__.py", "checksum", "index.py"]
    assert len((module / "index.py").read_text().splitlines()) < 25  # a few lines on the shared installer
    assert "What it changes on this system" in (module / "README.md").read_text()
    entry = repo.entry("mytool")
    digest = compute_folder_sha256(module)
    assert (module / "checksum").read_text() == digest + "\n" and entry["checksum"] == digest
    assert entry["enabled"] is False and repo.manifest()["updates"][0]["children"] == ["mytool"]
    assert cli(repo, "verify").returncode == 0

    # Refused with one line, nothing written: a taken name, a bad name, a project directory's name.
    before = (repo.root / "manifest.json").read_bytes()
    for name, says in (("mytool", "exists already"), ("My-Tool", "use lowercase"), ("utils", "own names")):
        done = cli(repo, "new", name, "--github", REPO)
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and says in errors[0], done.stderr
    assert (repo.root / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in repo.root.iterdir() if p.name.startswith(".m")) == []

    # Disabled: a run does nothing with it, and asks GitHub nothing.
    assert run_module(repo)[1]["status"] == "skipped" and github.seen == []

    # The administrator enables it and points it at this machine; commits and tags it as 1.0.0.
    args = {"api_url": github.api_url, "binary_path": str(binary), "service_command": services.command,
            "arch": "x86_64", "install_missing": True, "health_timeout": 3, "health_interval": 0.05,
            "http_backoff": 0, "token_env": "UPDATES_TEST_GITHUB_TOKEN"}
    repo.set_entry("mytool", enabled=True, args=args)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "mytool 1.0.0")
    assert cli(repo, "tag", "mytool", script="utils/rollback.py").returncode == 0

    publish(github, "1.2.0")
    code, result = run_module(repo)
    assert (code, result["status"], result["summary"]) == (0, "changed", "installed 1.2.0")
    assert binary.read_bytes() == tool("1.2.0")
    services.start("mytool")

    code, result = run_module(repo)
    assert (code, result["summary"]) == (0, "up to date (1.2.0)")
    assert github.api_requests()[-1].status == 304

    publish(github, "1.3.0", health=503)  # starts, but never healthy: undone
    code, result = run_module(repo)
    assert (code, result["status"]) == (1, "failed") and "rolled back" in result["error"]
    assert binary.read_bytes() == tool("1.2.0") and services.running_version("mytool") == "1.2.0"

    publish(github, "1.3.1")
    code, result = run_module(repo)
    assert (code, result["summary"]) == (0, "1.2.0 -> 1.3.1")
    assert services.running_version("mytool") == "1.3.1"
    fetched = [s.path.rsplit("/", 1)[1] for s in github.dl_requests()]
    assert fetched[-2:] == ["checksums.txt", ASSET.format(v="1.3.1")]

    # The module's own code changes (1.1.0), then is rolled back to 1.0.0 like any module.
    original = {p.name: p.read_bytes() for p in module.iterdir()}
    (module / "README.md").write_text((module / "README.md").read_text() + "\nLocal note.\n")
    (module / "checksum").write_text(compute_folder_sha256(module) + "\n")
    repo.set_entry("mytool", version="1.1.0", checksum=compute_folder_sha256(module))
    repo.git("commit", "-q", "-am", "mytool 1.1.0")
    assert cli(repo, "tag", "mytool", script="utils/rollback.py").returncode == 0
    done = cli(repo, "rollback", "mytool", "--to", "1.0.0", script="utils/rollback.py")
    assert done.returncode == 0, done.stderr
    assert {p.name: p.read_bytes() for p in module.iterdir()} == original
    assert repo.entry("mytool")["version"] == "1.0.0"
    code, result = run_module(repo)
    assert (code, result["summary"]) == (0, "up to date (1.3.1)")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--github", "not-a-repo"], "expected OWNER/REPO"),
        (["--github", REPO, "--binary", "../evil"], "plain file name"),
        (["--github", REPO, "--health", "http://127.0.0.1:1/health"], "--health needs --service"),
        (["--github", REPO, "--service", "x", "--health", "ftp://host/"], "http:// or https://"),
    ],
)
def test_bad_values_are_refused_with_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    repo = make_project(tmp_path / "updates")
    before = (repo.root / "manifest.json").read_bytes()
    done = cli(repo, "new", "tool", *args)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert (repo.root / "manifest.json").read_bytes() == before and not (repo.root / "tool").exists()
