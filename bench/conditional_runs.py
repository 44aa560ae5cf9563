#!/usr/bin/env python3
"""Bench: a run where atuin, filebrowser and gogs are all up to date costs three conditional requests.

A local HTTP server plays the GitHub API (with ETags); the three modules run twice against tools already
at the latest versions (tiny shell scripts printing the real version formats). The first run fills the
ETag cache; the figures of the second run are printed: requests, conditional requests, 304 answers,
body bytes and downloads. Target: 3 requests, 3 conditional, 3 x 304, 0 body bytes, 0 downloads.
"""
from __future__ import annotations

import hashlib
import json
import runpy
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELEASES = {"atuinsh/atuin": "v18.19.0", "filebrowser/filebrowser": "v2.63.23", "gogs/gogs": "v0.14.3"}
COUNTS = {"requests": 0, "conditional": 0, "not_modified": 0, "body_bytes": 0, "downloads": 0}


class Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        COUNTS["requests"] += 1
        repo = self.path.removeprefix("/repos/").removesuffix("/releases/latest")
        if repo not in RELEASES:
            COUNTS["downloads"] += 1
            self.send_error(404)
            return
        release = {"tag_name": RELEASES[repo], "draft": False, "prerelease": False, "assets": []}
        body = json.dumps(release).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match"):
            COUNTS["conditional"] += 1
        if self.headers.get("If-None-Match") == etag:
            COUNTS["not_modified"] += 1
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        COUNTS["body_bytes"] += len(body)
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def load_package() -> None:
    # Module code is imported directly here, so no bytecode may be written (it would land in module dirs).
    sys.dont_write_bytecode = True
    runpy.run_path(str(ROOT / "utils" / "bootstrap.py"))["register_package"]()


def script(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{line}'\n")
    path.chmod(0o755)


def main() -> None:
    load_package()
    from updates.atuin.index import main as atuin
    from updates.filebrowser.index import main as filebrowser
    from updates.gogs.index import main as gogs

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_port}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        script(root / "bin" / "atuin", "atuin 18.19.0")
        script(root / "bin" / "filebrowser", "File Browser v2.63.23/e8a388f8")
        script(root / "git" / "gogs" / "gogs", "Gogs version 0.14.3")
        runs = {
            "atuin": (atuin, {"binary_path": str(root / "bin" / "atuin")}),
            "filebrowser": (filebrowser, {"binary_path": str(root / "bin" / "filebrowser"), "service": ""}),
            "gogs": (gogs, {"install_dir": str(root / "git" / "gogs"), "service": ""}),
        }
        for run in (1, 2):
            COUNTS.update(dict.fromkeys(COUNTS, 0))
            summaries = []
            for name, (module_main, own) in runs.items():
                state = root / "state" / name
                state.mkdir(parents=True, exist_ok=True)
                args = {"name": name, "dry_run": False, "state_dir": str(state), "api_url": api, **own}
                summaries.append(f"{name}: {module_main(args)['summary']}")
            print(f"run {run}: " + "; ".join(summaries))
            print(
                f"run {run}: requests={COUNTS['requests']} conditional={COUNTS['conditional']} "
                f"304={COUNTS['not_modified']} body_bytes={COUNTS['body_bytes']} "
                f"downloads={COUNTS['downloads']}"
            )
    server.shutdown()
    ok = COUNTS == {"requests": 3, "conditional": 3, "not_modified": 3, "body_bytes": 0, "downloads": 0}
    print("target (3 conditional requests, no body, no download):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
