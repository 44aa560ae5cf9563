#!/usr/bin/env python3
"""Benchmark the adblock compiler on the 1,000,000-line list from ../shared/bench/gen_blocklist.py.

Run from the repository root: `venv/bin/python bench/adblock.py [--lines N] [--runs R]`.
Prints, for the compile (read, parse, dedupe, sort, render hosts format): lines/s, domains, wall time and
peak RSS; then the wall time of a full module run against a local HTTP server that answers 304 to every
conditional GET (the "nothing new upstream" nightly case). hblock 3.5.0 takes about 3.2 s for the compile.
"""
from __future__ import annotations

import argparse
import http.server
import importlib.util
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT.parent / "shared" / "bench" / "gen_blocklist.py"


def load_package() -> None:
    sys.dont_write_bytecode = True
    spec = importlib.util.spec_from_file_location("_updates_entry", ROOT / "index.py")
    assert spec is not None and spec.loader is not None
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    entry.load_package()


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def compile_once(path: Path) -> tuple[float, int, int, int]:
    from updates.adblock.lists import Rules, merge
    from updates.adblock.parse import parse_list
    from updates.adblock.render import Meta, render

    start = time.perf_counter()
    data = path.read_bytes()
    parsed = parse_list(data)
    del data
    names = merge([parsed.names], allow=Rules(), deny=Rules())
    out = render(names, "hosts", Meta([("bench", parsed.stats.names)], 0))
    wall = time.perf_counter() - start
    return wall, parsed.stats.lines, len(names), len(out)


class _NotModified(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.headers.get("If-None-Match") == '"v1"':
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def all_304_run(path: Path, workdir: Path) -> tuple[float, float, dict]:
    from updates.adblock.index import main

    _NotModified.body = path.read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotModified)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/list.txt"
    state = workdir / "state"
    state.mkdir()
    args = {"name": "adblock", "dry_run": False, "state_dir": str(state), "sources": [url],
            "output": str(workdir / "hosts"), "http_retries": 0}
    try:
        start = time.perf_counter()
        main(args)
        first = time.perf_counter() - start
        start = time.perf_counter()
        result = main(args)
        second = time.perf_counter() - start
    finally:
        server.shutdown()
    return first, second, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    load_package()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        source = workdir / "blocklist.txt"
        subprocess.run([sys.executable, str(GENERATOR), str(source), "--lines", str(opts.lines)], check=True)
        walls = []
        for run in range(opts.runs):
            wall, lines, domains, size = compile_once(source)
            walls.append(wall)
            print(f"compile run {run + 1}: {wall:.3f} s, {lines / wall:,.0f} lines/s, {domains:,} domains, "
                  f"{size / 1e6:.1f} MB hosts output")
        best = min(walls)
        print(f"compile best of {opts.runs}: {best:.3f} s wall, {lines / best:,.0f} lines/s, "
              f"{domains:,} domains, peak RSS {peak_rss_mb():.0f} MB "
              f"(+ parse helper process {peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB)")
        first, second, result = all_304_run(source, workdir)
        print(f"module run, first (200, writes hosts): {first:.3f} s")
        print(f"module run, all sources 304: {second:.3f} s -> {result}")
        print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
