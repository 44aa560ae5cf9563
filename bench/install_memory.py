#!/usr/bin/env python3
"""Bench: peak memory while the atuin module installs a 200 MB release asset, against the idle process.

A child process builds a real atuin release tarball (the `atuin` binary is a shell script printing
`atuin 18.19.0`, padded with 200 MB of incompressible data so the archive really is ~200 MB) and serves
it as a local GitHub API + asset download. This process then runs the module's `main()` for a real
upgrade into a temporary directory: lookup, streamed download to the destination directory, SHA-256 check
against the API digest, archive scan, exact-member extraction, version check, atomic replace.
Peak RSS (VmHWM, reset through /proc/self/clear_refs before the run) is compared with the idle RSS.
Target: peak within 30 MB of idle.  Usage: install_memory.py [--mb 200]
"""

from __future__ import annotations

import argparse
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SERVER = r"""
import hashlib, io, json, os, sys, tarfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

size_mb, path = int(sys.argv[1]), sys.argv[2]
top = "atuin-x86_64-unknown-linux-gnu"
script = b"#!/bin/sh\necho 'atuin 18.19.0'\n"
with tarfile.open(path, "w:gz", compresslevel=1) as tar:
    info = tarfile.TarInfo(top); info.type = tarfile.DIRTYPE; info.mode = 0o755; tar.addfile(info)
    info = tarfile.TarInfo(top + "/atuin"); info.size = len(script); info.mode = 0o755
    tar.addfile(info, io.BytesIO(script))
    info = tarfile.TarInfo(top + "/padding.bin"); info.size = size_mb * 1024 * 1024; info.mode = 0o644

    class Random(io.RawIOBase):
        left = info.size
        def readable(self): return True
        def readinto(self, b):
            n = min(len(b), self.left); b[:n] = os.urandom(n); self.left -= n; return n
    tar.addfile(info, io.BufferedReader(Random(), 1 << 20))
digest = hashlib.sha256()
with open(path, "rb") as fh:
    for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
size = os.path.getsize(path)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        base = f"http://127.0.0.1:{self.server.server_port}"
        if self.path.endswith("/releases/latest"):
            asset = {"name": top + ".tar.gz", "size": size, "browser_download_url": base + "/dl",
                     "url": base + "/repos/atuinsh/atuin/releases/assets/1",
                     "digest": "sha256:" + digest.hexdigest()}
            body = json.dumps({"tag_name": "v18.19.0", "assets": [asset]}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size)); self.end_headers()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                self.wfile.write(block)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_port, size, flush=True)
server.serve_forever()
"""


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    opts = parser.parse_args()
    sys.dont_write_bytecode = True  # module code is imported directly: no bytecode into module dirs
    runpy.run_path(str(ROOT / "utils" / "bootstrap.py"))["register_package"]()
    from updates.atuin.index import main as atuin

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(opts.mb), str(root / "asset.tar.gz")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port, size = (int(x) for x in server.stdout.readline().split())
            binary = root / "bin" / "atuin"
            binary.parent.mkdir()
            binary.write_text("#!/bin/sh\necho 'atuin 18.18.1'\n")
            binary.chmod(0o755)
            (root / "state").mkdir()
            args = {
                "name": "atuin",
                "dry_run": False,
                "state_dir": str(root / "state"),
                "api_url": f"http://127.0.0.1:{port}",
                "binary_path": str(binary),
                "arch": "x86_64",
                "libc": "gnu",
            }
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
            idle = status_kb("VmRSS")
            started = time.monotonic()
            result = atuin(args)
            elapsed = time.monotonic() - started
            peak = status_kb("VmHWM")
        finally:
            server.terminate()
            server.wait()
    print(f"result: {result}")
    print(f"asset size: {size / 1024 / 1024:.1f} MiB, install took {elapsed:.1f} s")
    print(
        f"idle RSS: {idle / 1024:.1f} MiB, peak RSS: {peak / 1024:.1f} MiB, "
        f"delta: {(peak - idle) / 1024:.1f} MiB"
    )
    print("target (peak within 30 MB of idle):", "met" if (peak - idle) * 1024 <= 30_000_000 else "NOT met")


if __name__ == "__main__":
    main()
