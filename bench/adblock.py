#!/usr/bin/env python3
"""Benchmark the adblock compiler on the 1,000,000-line list from ../shared/bench/gen_blocklist.py.

Run from the repository root: `venv/bin/python bench/adblock.py [--lines N] [--runs R]`.

Each measurement runs in a fresh worker process (this script again, with `--worker`), so that every
figure covers one process tree and nothing else: the worker and the parse helper it forks. This process
only samples their memory (every few ms, from /proc/<pid>/smaps_rollup) and serves the HTTP list.
Printed, for the compile (read, parse, dedupe, sort, render hosts format) with the two-process parse and
with the one-process parse: lines/s, domains, wall time (best of R), and memory:
- peak RSS of the worker and of its helper (getrusage: exact, but the two peaks happen at different times
  and both count the pages they share after the fork);
- peak of RSS summed over both at one instant (sampled; shared pages still counted twice);
- peak of PSS summed over both (sampled): the physical memory the run really holds at once, each shared
  page counted once; this is what a memory cgroup (systemd MemoryMax=) charges, page cache aside.
Then two full module runs against a local HTTP server: the first download (200, writes the hosts file)
and the nightly "nothing new upstream" run where every conditional GET answers 304.
hblock 3.5.0 takes about 3.2 s for the compile; the target is at most a third of that, under 300 MB.
"""
from __future__ import annotations

import argparse
import http.server
import json
import resource
import runpy
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT.parent / "shared" / "bench" / "gen_blocklist.py"
NO_PARALLEL = 1 << 62


# ---------------------------------------------------------------- worker side (a fresh process per job)

def load_package() -> None:
    # Module code is imported directly here, so no bytecode may be written (it would land in module dirs).
    sys.dont_write_bytecode = True
    runpy.run_path(str(ROOT / "utils" / "bootstrap.py"))["register_package"]()


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def compile_once(path: Path, parallel_min: int | None) -> dict[str, Any]:
    from updates.adblock.lists import Rules, merge
    from updates.adblock.parse import PARALLEL_MIN, parse_list
    from updates.adblock.render import Meta, render

    start = time.perf_counter()
    # No name holds the bytes: parse_list frees them once decoded, as the module's own call does.
    threshold = PARALLEL_MIN if parallel_min is None else parallel_min
    parsed = parse_list(path.read_bytes(), parallel_min=threshold)
    names = merge([parsed.names], allow=Rules(), deny=Rules())
    out = render(names, "hosts", Meta([("bench", parsed.stats.names)], 0))
    wall = time.perf_counter() - start
    return {"wall": wall, "lines": parsed.stats.lines, "domains": len(names), "bytes": len(out)}


def module_run(url: str, workdir: Path) -> dict[str, Any]:
    from updates.adblock.index import main

    state = workdir / "state"
    state.mkdir(exist_ok=True)
    args = {"name": "adblock", "dry_run": False, "state_dir": str(state), "sources": [url],
            "output": str(workdir / "hosts"), "http_retries": 0}
    start = time.perf_counter()
    result = main(args)
    return {"wall": time.perf_counter() - start, "result": result}


def worker(job: str, target: str, workdir: Path, runs: int, parallel: bool) -> None:
    load_package()
    if job == "compile":
        report: dict[str, Any] = {
            "runs": [compile_once(Path(target), None if parallel else NO_PARALLEL) for _ in range(runs)]
        }
    else:
        report = module_run(target, workdir)
    report["self_mb"] = peak_rss_mb()
    report["helper_mb"] = peak_rss_mb(resource.RUSAGE_CHILDREN)
    print(json.dumps(report))


# ---------------------------------------------------------------- sampling side

def _tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text(encoding="ascii").split():
                pids += _tree(int(child))
    except OSError:
        pass
    return pids


def _rss_pss_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def sampled(argv: list[str], *, sample: bool = True) -> tuple[dict[str, Any], float, float]:
    """Run a worker; its JSON report, and the peaks of summed RSS and summed PSS over its tree (MB).
    Reading smaps_rollup takes the worker's memory-map lock, so runs that are timed are not sampled."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while sample and proc.poll() is None:
        sums = [_rss_pss_kb(pid) for pid in _tree(proc.pid)]
        peak_rss = max(peak_rss, sum(r for r, _ in sums))
        peak_pss = max(peak_pss, sum(p for _, p in sums))
        time.sleep(0.003)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"worker failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), peak_rss / 1024, peak_pss / 1024


def memory_line(report: dict[str, Any], rss_sum: float, pss_sum: float) -> str:
    helper = f" + helper {report['helper_mb']:.0f} MB" if report["helper_mb"] else " (no helper)"
    return (f"peak RSS worker {report['self_mb']:.0f} MB{helper}; at one instant: RSS sum {rss_sum:.0f} MB, "
            f"PSS sum {pss_sum:.0f} MB")


class _ListServer(http.server.BaseHTTPRequestHandler):
    body = b""
    etag = '"v1"'

    def do_GET(self) -> None:
        if self.headers.get("If-None-Match") == self.etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", self.etag)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--worker", nargs=3, metavar=("JOB", "TARGET", "WORKDIR"), help=argparse.SUPPRESS)
    parser.add_argument("--serial", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        job, target, workdir = opts.worker
        worker(job, target, Path(workdir), opts.runs, parallel=not opts.serial)
        return
    me = [sys.executable, str(Path(__file__).resolve()), "--runs", str(opts.runs)]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        source = workdir / "blocklist.txt"
        subprocess.run([sys.executable, str(GENERATOR), str(source), "--lines", str(opts.lines)], check=True)
        for label, extra in (("two processes", []), ("one process", ["--serial"])):
            report, _, _ = sampled([*me, *extra, "--worker", "compile", str(source), tmp], sample=False)
            runs = report["runs"]
            best = min(runs, key=lambda r: r["wall"])
            walls = ", ".join(f"{r['wall']:.3f}" for r in runs)
            print(f"compile, {label}: best {best['wall']:.3f} s wall (runs: {walls}; the first one in a "
                  f"fresh process, like a nightly run), {best['lines'] / best['wall']:,.0f} lines/s, "
                  f"{best['domains']:,} domains, {best['bytes'] / 1e6:.1f} MB hosts output")
            report, rss_sum, pss_sum = sampled([*me[:2], "--runs", "1", *extra, "--worker", "compile",
                                                str(source), tmp])
            print(f"  memory (one run, sampled): {memory_line(report, rss_sum, pss_sum)}")

        other = workdir / "other.txt"  # another seed: every name differs, about as many of them
        argv = [sys.executable, str(GENERATOR), str(other), "--lines", str(opts.lines), "--seed", "8"]
        subprocess.run(argv, check=True)
        _ListServer.body = source.read_bytes()
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ListServer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/list.txt"
        lists = [("first run (200, writes the hosts file)", source), ("all sources 304", None),
                 ("changed list (200, every name replaced)", other)]
        try:
            # The sequence twice, in two state dirs: timed without sampling, then sampled.
            for sample in (False, True):
                run_dir = workdir / f"module-{sample}"
                run_dir.mkdir()
                for label, new_list in lists:
                    if new_list is not None:
                        _ListServer.body, _ListServer.etag = new_list.read_bytes(), f'"{new_list.name}"'
                    report, rss_sum, pss_sum = sampled([*me, "--worker", "module", url, str(run_dir)],
                                                       sample=sample)
                    if sample:
                        print(f"  memory of the {label}: {memory_line(report, rss_sum, pss_sum)}")
                    else:
                        print(f"module run, {label}: {report['wall']:.3f} s -> {report['result']}")
        finally:
            server.shutdown()


if __name__ == "__main__":
    main()
