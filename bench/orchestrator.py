#!/usr/bin/env python3
"""Orchestrator overhead: a run over N trivial modules against a bare interpreter start.

Usage: python bench/orchestrator.py [--modules 50] [--repeat 7]
Builds a real installation in a temp dir (this checkout's code, N sealed modules whose main returns None),
then times `python index.py -q` and `python -c pass` as subprocesses (best of R). Prints the overhead per
module (target: at most 10 ms) and whether `index.py --help` imports requests (target: it does not).
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
runpy.run_path(str(ROOT / "utils" / "bootstrap.py"))["register_package"]()
from updates.utils.digest import compute_folder_sha256  # noqa: E402

INIT = (
    "import os\nfrom ..utils.index import compute_folder_sha256\n"
    "_HERE = os.path.dirname(os.path.abspath(__file__))\n"
    "LIVE_CHECKSUM = compute_folder_sha256(_HERE)\n"
)


def build(install: Path, count: int) -> None:
    shutil.copy2(ROOT / "index.py", install / "index.py")
    shutil.copy2(ROOT / "__init__.py", install / "__init__.py")
    shutil.copytree(ROOT / "utils", install / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    names = [f"mod{i:03d}" for i in range(count)]
    for name in names:
        directory = install / name
        directory.mkdir()
        (directory / "__init__.py").write_text(INIT)
        (directory / "index.py").write_text("def main(args):\n    return None\n")
        (directory / "checksum").write_text(compute_folder_sha256(directory) + "\n")
    manifest = {"updates": [{"name": "all_services", "children": names}, *({"name": n} for n in names)],
                "entrypoint": "all_services"}
    (install / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


# As on a server: our own code's bytecode is cached (module directories never get any, by design).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def best(argv: list[str], cwd: Path, repeat: int) -> float:
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True, timeout=300, env=ENV)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True, timeout=300, env=ENV)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        install = Path(tmp)
        build(install, opts.modules)
        bare = best([sys.executable, "-c", "pass"], install, opts.repeat)
        run = best([sys.executable, "index.py", "-q"], install, opts.repeat)
        empty = best([sys.executable, "index.py", "-q", "--only", "mod000"], install, opts.repeat)
        helped = subprocess.run(
            [sys.executable, "-X", "importtime", "index.py", "--help"],
            cwd=install, capture_output=True, text=True, check=True, timeout=60,
        )
    imports_requests = any(line.rstrip().endswith("| requests") for line in helped.stderr.splitlines())
    per_module = (run - bare) / opts.modules * 1000
    print(f"interpreter start (python -c pass):     {bare * 1000:8.1f} ms")
    print(f"run of 1 module (--only mod000):        {empty * 1000:8.1f} ms")
    print(f"run of {opts.modules} trivial modules:             {run * 1000:8.1f} ms")
    print(f"overhead per module over bare start:    {per_module:8.2f} ms  (target <= 10 ms)")
    print(f"marginal cost per extra module:         {(run - empty) / (opts.modules - 1) * 1000:8.2f} ms")
    print(f"index.py --help imports requests:       {'yes' if imports_requests else 'no'}  (target: no)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
