#!/usr/bin/env python3
"""Module digest throughput against the coreutils pipeline of DESIGN.md, on generated trees.

Usage: python bench/checksum.py [--small N] [--large N] [--large-mb M] [--repeat R]
Prints, for a tree of many small files and one of a few large files, both throughputs and their ratio
(ours / coreutils; the target is at least 0.9). Both digests must agree, or it says so and exits 1.
"""
from __future__ import annotations

import argparse
import os
import random
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
runpy.run_path(str(ROOT / "utils" / "bootstrap.py"))["register_package"]()
from updates.utils.digest import compute_folder_sha256  # noqa: E402

PIPELINE = (
    "find . -type f ! -path ./checksum ! -path '*/__pycache__/*' ! -path '*/.pytest_cache/*' "
    "! -name '*.pyc' -printf '%P\\n' | LC_ALL=C sort | xargs -r -d '\\n' sha256sum -- | sha256sum"
)


def make_small_tree(top: Path, count: int) -> int:
    rng = random.Random(1)
    total = 0
    for i in range(count):
        directory = top / f"d{i % 40:02d}" / f"s{i % 7}"
        directory.mkdir(parents=True, exist_ok=True)
        size = rng.randint(200, 16_000)
        (directory / f"file{i:05d}.py").write_bytes(rng.randbytes(size))
        total += size
    return total


def make_large_tree(top: Path, count: int, megabytes: int) -> int:
    block = os.urandom(1 << 20)
    for i in range(count):
        with open(top / f"large{i}.bin", "wb") as out:
            for _ in range(megabytes):
                out.write(block)
    (top / "index.py").write_text("def main(args):\n    pass\n")
    return count * megabytes * (1 << 20)


def best_time(fn, repeat: int) -> tuple[float, str]:
    best = float("inf")
    result = ""
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def coreutils(top: Path) -> str:
    out = subprocess.run(["bash", "-c", PIPELINE], cwd=top, capture_output=True, check=True, timeout=600)
    return out.stdout.split()[0].decode()


def measure(label: str, top: Path, size: int, repeat: int) -> bool:
    coreutils(top)  # warm the page cache for both contenders
    ours_s, ours = best_time(lambda: compute_folder_sha256(top), repeat)
    core_s, core = best_time(lambda: coreutils(top), repeat)
    mb = size / 1e6
    print(f"{label}: {mb:,.1f} MB")
    print(f"  updates   {ours_s * 1000:9.1f} ms  {mb / ours_s:9.1f} MB/s")
    print(f"  coreutils {core_s * 1000:9.1f} ms  {mb / core_s:9.1f} MB/s")
    print(f"  ratio (updates throughput / coreutils throughput): {core_s / ours_s:.2f}x  (target >= 0.90)")
    if ours != core:
        print(f"  DIGESTS DIFFER: {ours} != {core}")
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=5000, help="number of small files")
    parser.add_argument("--large", type=int, default=4, help="number of large files")
    parser.add_argument("--large-mb", type=int, default=128, help="size of each large file in MiB")
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small"
        small.mkdir()
        ok &= measure(f"{opts.small} small files", small, make_small_tree(small, opts.small), opts.repeat)
        large = Path(tmp) / "large"
        large.mkdir()
        size = make_large_tree(large, opts.large, opts.large_mb)
        ok &= measure(f"{opts.large} large files", large, size, opts.repeat)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
