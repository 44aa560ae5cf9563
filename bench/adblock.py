#!/usr/bin/env python3
"""Benchmark the adblock module: full module runs through index.py against hblock, memory, busy CPUs.

Run from the repository root:
`venv/bin/python bench/adblock.py [--sizes N ...] [--runs R] [--no-busy] [--python PATH]`.

Lists come from ../shared/bench/gen_blocklist.py (1,000,000 lines give 949,211 distinct names). For each
size it prints:
- the wall time of a full module run: `python index.py run --only adblock` in a throwaway installation
  (this checkout's index.py, utils/ and adblock/, a manifest with only adblock, a fresh state directory
  and output file each run, the list as a file:// source), interpreter start-up and the orchestrator's
  checks included: median and best of R (each run after a sync, in a directory emptied before it, see
  `timed`). The state directory of each run holds nothing of an earlier run but the compiled module code
  a warm-up run left (`<state>/bytecode`, which a server keeps from its first run on, as it keeps the
  orchestrator's `__pycache__`). The installation runs from its own virtual environment made by
  `setup_venv.sh` as an administrator's is (runtime requirements only: as root the
  orchestrator checks every file of its venv before a run, so the test and lint tools of a --dev venv,
  9,000 files with Ansible, would add about 0.1 s); `--python` picks another interpreter, and without
  network access the bench falls back to the one running it, saying so;
- the same for `hblock` on the same list, run alternately with ours, when `hblock` is on PATH (or the
  script `--hblock` names); otherwise
  the figure recorded in issue 11 (hblock 3.5.0: 5.78 s at 1,000,000 lines on an idle 2-CPU VM), scaled
  linearly for other sizes (which leaves out hblock's own start-up, so it flatters hblock at small sizes).
  Only the paired figure is fair: on the VM whose figures README.md gives, hblock 3.4.0 takes 2.9 to 4 s
  (by the hour), not 5.78 s (a slower machine, or a slower 3.5.0), so the recorded figure flatters us;
- memory of one run, sampled every few ms from /proc/<pid>/smaps_rollup over the whole process tree (the
  orchestrator, the module, the parse helper it may fork): peak PSS summed over the tree (each shared page
  counted once: what a memory cgroup, systemd MemoryMax=, charges) and peak RSS summed (shared pages
  counted twice);
- at the largest size up to 1,000,000 lines: the nightly run where nothing changed, and the default path
  against the one-process path (a second installation whose parse never forks), first on the machine as
  it is, then with every CPU kept busy by spinning processes (unless --no-busy).
The load average is printed before each part: figures taken on a busy machine are slower.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT.parent / "shared" / "bench" / "gen_blocklist.py"
HBLOCK_RECORDED = (1_000_000, 5.78)  # lines, seconds (issue 11: hblock 3.5.0, idle 2-CPU VM)
runpy.run_path(str(ROOT / "utils" / "bootstrap.py"))["register_package"]()
from updates.utils.digest import compute_folder_sha256  # noqa: E402

# As on a server: bytecode of the orchestrator is cached; module directories never get any, by design.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
PYTHON = [sys.executable]  # the interpreter of the installation's runs (main() may choose another)
HBLOCK = ["hblock"]  # the hblock to pair with (--hblock)


# ---------------------------------------------------------------- installations and runs

def production_python(tmp: Path) -> str | None:
    """The interpreter of a venv made by setup_venv.sh (runtime requirements), or None when that fails."""
    source = tmp / "venv-source"
    (source / "config").mkdir(parents=True)
    for name in ("setup_venv.sh", "requirements.txt", "config/utils.sh"):
        shutil.copy2(ROOT / name, source / name)
    env = {**os.environ, "VENV_DIR": str(tmp / "venv")}
    done = subprocess.run(["bash", str(source / "setup_venv.sh")], env=env, capture_output=True, text=True,
                          check=False, timeout=900)
    if done.returncode != 0:
        print(f"setup_venv.sh failed ({done.stderr.strip().splitlines()[-1:]})")
        return None
    return str(tmp / "venv" / "bin" / "python")


def warm_up(app: Path, source: Path) -> None:
    """One run of `app`, whose compiled module code the later runs of `app` start with (see module_argv)."""
    argv, env = module_argv(app, source, app.parent / f"{app.name}-warm-up")
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, timeout=3600)
    shutil.copytree(Path(env["UPDATES_STATE_DIR"]) / "bytecode", app.parent / f"{app.name}-bytecode")


def install(target: Path, serial: bool = False) -> Path:
    """A throwaway installation of this checkout's code; `serial`: its parse never forks a helper."""
    target.mkdir(parents=True)
    for name in ("index.py", "__init__.py"):
        shutil.copy2(ROOT / name, target / name)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "utils", target / "utils", ignore=ignore)
    shutil.copytree(ROOT / "adblock", target / "adblock", ignore=ignore)
    if serial:
        parse = target / "adblock" / "parse.py"
        text, count = re.subn(r"^PARALLEL_MIN = .*$", "PARALLEL_MIN = 1 << 62", parse.read_text(), flags=re.M)
        assert count == 1, "PARALLEL_MIN not found in adblock/parse.py"
        parse.write_text(text)
    checksum = compute_folder_sha256(target / "adblock")
    (target / "adblock" / "checksum").write_text(checksum + "\n")
    entry = {"name": "adblock", "version": "1.0.0", "enabled": True, "checksum": checksum, "timeout": 3600,
             "args": {"sources": ["SOURCE"], "output": "OUTPUT"}}
    (target / "manifest.json").write_text(json.dumps({"updates": [entry], "entrypoint": "adblock"}))
    return target


def module_argv(app: Path, source: Path, work: Path) -> tuple[list[str], dict[str, str]]:
    """The command for one module run with a fresh state directory and output file under `work`: nothing of
    an earlier run in it but the code compiled from the installation's module source (`<state>/bytecode`),
    which a server keeps from its first run on, as it keeps the orchestrator's own `__pycache__`."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    compiled = app.parent / f"{app.name}-bytecode"
    if compiled.is_dir():
        shutil.copytree(compiled, work / "state" / "bytecode")
        (work / "state").chmod(0o700)
    manifest = json.loads((app / "manifest.json").read_text())
    manifest["updates"][0]["args"] = {"sources": [f"file://{source}"], "output": str(work / "hosts")}
    (work / "manifest.json").write_text(json.dumps(manifest))
    env = {**ENV, "UPDATES_STATE_DIR": str(work / "state"), "UPDATES_LOG_DIR": str(work / "logs")}
    argv = [PYTHON[0], str(app / "index.py"), "run", "--manifest", str(work / "manifest.json"),
            "--only", "adblock", "-q"]
    return argv, env


def hblock_argv(source: Path, work: Path) -> tuple[list[str], dict[str, str]]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "sources.list").write_text(f"file://{source}\n")
    env = {**ENV, "HOME": str(work), "ETCDIR": str(work), "TMPDIR": str(work)}
    return [HBLOCK[0], "-q", "-S", str(work / "sources.list"), "-O", str(work / "hosts")], env


def timed(argv: list[str], env: dict[str, str]) -> float:
    """The wall time of one run, started with no writes of an earlier run pending.

    hblock writes its list without waiting for the disk, and the next run's first fsync waited for those
    writes too (ours took 0.72 s right after hblock, 0.68 s after a sync): every run, ours and hblock's,
    starts after a sync, so that none pays for the one before. Each tool runs in one directory of its own,
    emptied before each run (module_argv, hblock_argv), as a server writes its list to one place night
    after night: runs in a new directory each time, the files of the last one removed or not, measured
    0.1 s slower (0.79 s against 0.68 s; the file system's allocation and the page cache of the files
    left behind, on this VM)."""
    os.sync()
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, timeout=3600)
    return time.perf_counter() - start


# ---------------------------------------------------------------- memory sampling

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


def sampled(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Peaks of summed PSS and summed RSS over the run's process tree (MB). Reading smaps_rollup takes each
    process's memory-map lock and slows it down: runs that are timed are never sampled."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        sums = [_rss_pss_kb(pid) for pid in _tree(proc.pid)]
        peak_rss = max(peak_rss, sum(r for r, _ in sums))
        peak_pss = max(peak_pss, sum(p for _, p in sums))
        time.sleep(0.003)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed with exit code {proc.returncode}")
    return peak_pss / 1024, peak_rss / 1024


# ---------------------------------------------------------------- report

def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min), {len(os.sched_getaffinity(0))} CPUs"


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):.3f} s (best {min(times):.3f}, {len(times)} runs)"


def hblock_version() -> str | None:
    if shutil.which(HBLOCK[0]) is None:
        return None
    out = subprocess.run([HBLOCK[0], "--version"], capture_output=True, text=True, check=False, timeout=60)
    return (out.stdout.splitlines() or ["hblock (version unknown)"])[0]


def size_report(lines: int, source: Path, app: Path, tmp: Path, *, runs: int, with_hblock: bool) -> None:
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(runs):
        ours.append(timed(*module_argv(app, source, tmp / "ours")))
        if with_hblock:
            theirs.append(timed(*hblock_argv(source, tmp / "hblock")))
    hosts = (tmp / "ours" / "hosts").read_text()
    names = sum(1 for line in hosts.splitlines() if line.startswith("0.0.0.0 "))
    print(f"\n{lines:,} lines ({names:,} domains), {load()}")
    print(f"  module run via index.py: {summary(ours)}")
    if with_hblock:
        reference, label = statistics.median(theirs), f"hblock {summary(theirs)}, same list, alternating"
        hb_names = sum(1 for line in (tmp / "hblock" / "hosts").read_text().splitlines()
                       if line.startswith("0.0.0.0 ") and "hblock-check" not in line)
        label += f", {hb_names:,} domains"
    else:
        recorded_lines, recorded = HBLOCK_RECORDED
        reference = recorded * lines / recorded_lines
        label = (f"hblock {reference:.2f} s recorded" if lines == recorded_lines else
                 f"hblock about {reference:.2f} s (the recorded {recorded} s at {recorded_lines:,} lines, "
                 "scaled)")
    print(f"  {label}: ours is {reference / statistics.median(ours):.2f}x faster")
    shutil.rmtree(tmp / "hblock", ignore_errors=True)
    pss, rss = sampled(*module_argv(app, source, tmp / "ours"))
    shutil.rmtree(tmp / "ours", ignore_errors=True)
    print(f"  memory (one run, sampled): peak PSS of the process tree {pss:.0f} MB, peak RSS sum "
          f"{rss:.0f} MB ({pss / lines * 1e6:.0f} MB per million lines)")


def paths_report(label: str, source: Path, apps: tuple[Path, Path], tmp: Path, runs: int) -> None:
    app, serial_app = apps
    default: list[float] = []
    simple: list[float] = []
    for _ in range(runs):
        default.append(timed(*module_argv(app, source, tmp / "default")))
        simple.append(timed(*module_argv(serial_app, source, tmp / "serial")))
    for name in ("default", "serial"):
        shutil.rmtree(tmp / name, ignore_errors=True)
    ratio = statistics.median(simple) / statistics.median(default)
    print(f"  {label}: default {summary(default)}; one process {summary(simple)}: default is {ratio:.2f}x "
          f"the speed of one process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-busy", action="store_true", help="skip the run with every CPU kept busy")
    parser.add_argument("--hblock", default="hblock",
                        help="the hblock script to pair with (default: hblock on PATH)")
    parser.add_argument("--python", help="run the installation with this interpreter (default: a new venv "
                        "made by setup_venv.sh, as an administrator's)")
    opts = parser.parse_args()
    HBLOCK[0] = opts.hblock
    version = hblock_version()
    print(f"hblock: {version}" if version else
          f"hblock: {opts.hblock} not found; compared with the figure recorded in issue 11 "
          f"({HBLOCK_RECORDED[1]} s at {HBLOCK_RECORDED[0]:,} lines; hblock ran faster in paired runs: "
          "this flatters us)")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        made = opts.python or production_python(tmp)
        PYTHON[0] = made or sys.executable
        print(f"interpreter of the runs: {PYTHON[0]}" + ("" if made else
              " (the one running the bench: a new venv could not be made; its venv's files are checked too)"))
        app = install(tmp / "app")
        serial_app = install(tmp / "app-serial", serial=True)
        small = tmp / "warm-up.txt"
        small.write_text("0.0.0.0 warm-up.example.org\n")
        warm_up(app, small)
        warm_up(serial_app, small)
        paths_size = max([n for n in opts.sizes if n <= 1_000_000] or [min(opts.sizes)])
        for lines in opts.sizes:
            source = tmp / f"list-{lines}.txt"
            subprocess.run([sys.executable, str(GENERATOR), str(source), "--lines", str(lines)], check=True)
            work = tmp / f"size-{lines}"
            size_report(lines, source, app, work, runs=opts.runs, with_hblock=version is not None)
            if lines > 1_000_000 and lines != paths_size:
                source.unlink()  # the largest lists weigh 150 MB each
        source = tmp / f"list-{paths_size}.txt"
        argv, env = module_argv(app, source, tmp / "nightly")
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, timeout=3600)
        nightly = [timed(argv, env) for _ in range(opts.runs)]
        print(f"\nnightly run at {paths_size:,} lines, the list unchanged since the last run: "
              f"{summary(nightly)}")
        print(f"default path (two processes where it pays) against one process, {paths_size:,} lines:")
        print(f"  ({load()})")
        paths_report("as the machine is", source, (app, serial_app), tmp / "paths", opts.runs)
        if not opts.no_busy:
            spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                        for _ in range(len(os.sched_getaffinity(0)))]
            try:
                time.sleep(1)
                busy = f"{len(spinners)} CPUs kept busy"
                paths_report(busy, source, (app, serial_app), tmp / "busy", opts.runs)
            finally:
                for proc in spinners:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    main()
