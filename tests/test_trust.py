"""The trust boundary as root (DESIGN.md "Trust boundary"): what root executes, imports and writes.

- An executable another user can change runs as that user, or not at all; never as root.
- Module code is imported only from the bytes its verified digest covered: no sourceless `.pyc`, no file
  changed or added after the verification.
- State files are written without following a link planted where they go.
Real files, real child processes and real imports throughout (run as root, as CI does).
"""

from __future__ import annotations

import json
import os
import py_compile
import textwrap
from pathlib import Path

import pytest
from orchestrator_support import add_module, group, seal_module, write_manifest
from updates.utils.digest import digest_folder
from updates.utils.errors import ModuleLoadError, UnsafePermissions
from updates.utils.executables import exec_decision, exec_identity, run_executable
from updates.utils.fsutil import atomic_write_bytes, atomic_write_text
from updates.utils.orchestrator.cli import main
from updates.utils.orchestrator.loader import forget, load_main
from updates.utils.proc import Identity

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners other than ourselves need root (CI runs as root)")
SERVICE_UID = 4242
OTHER_UID = 4343

PROBE = "#!/bin/sh\nid -u\n"


def make_dir(path: Path, *, owner: int = 0, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, owner, owner)
    path.chmod(mode)
    return path


def make_probe(path: Path, *, owner: int = 0, mode: int = 0o755, text: str = PROBE) -> Path:
    path.write_text(text)
    os.chown(path, owner, owner)
    path.chmod(mode)
    return path


# --- executables ------------------------------------------------------------------------------------------


@needs_root
def test_a_binary_owned_by_the_service_user_runs_as_that_user_not_root(tmp_path: Path) -> None:
    # The gogs case: the upgrade gave the install directory's files to `git`, and root asks for the version.
    install = make_dir(tmp_path / "gogs")
    probe = make_probe(install / "gogs", owner=SERVICE_UID)
    decision = exec_decision(probe)
    assert decision.problem is None and decision.identity == Identity(SERVICE_UID, 65534)
    assert exec_identity(probe) == Identity(SERVICE_UID, 65534)
    done = run_executable(probe, ["--version"], timeout=10)
    assert done.stdout.decode().strip() == str(SERVICE_UID)


@needs_root
def test_a_root_owned_binary_in_root_owned_directories_runs_as_root(tmp_path: Path) -> None:
    probe = make_probe(make_dir(tmp_path / "bin") / "tool")
    assert exec_decision(probe).identity is None and exec_decision(probe).problem is None
    assert run_executable(probe, timeout=10).stdout.decode().strip() == "0"


@needs_root
def test_a_group_writable_root_owned_binary_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    probe = make_probe(make_dir(tmp_path / "bin") / "tool", mode=0o775, text=f"#!/bin/sh\ntouch {marker}\n")
    with pytest.raises(UnsafePermissions) as refused:
        run_executable(probe, ["--version"], timeout=10)
    assert str(refused.value) == f"refusing to run {probe}: {probe}: writable by group (mode 0775)"
    assert refused.value.exit_code == 2
    assert not marker.exists()


@needs_root
def test_a_root_owned_binary_in_the_service_users_directory_runs_as_that_user(tmp_path: Path) -> None:
    # The directory's owner can swap the file for another: root must not run whatever is there.
    probe = make_probe(make_dir(tmp_path / "home", owner=SERVICE_UID) / "tool")
    assert exec_decision(probe).identity == Identity(SERVICE_UID, 65534)
    assert run_executable(probe, timeout=10).stdout.decode().strip() == str(SERVICE_UID)


@needs_root
def test_a_binary_that_two_users_can_change_is_refused(tmp_path: Path) -> None:
    directory = make_dir(tmp_path / "shared", owner=OTHER_UID)
    probe = make_probe(directory / "tool", owner=SERVICE_UID)
    problem = exec_decision(probe).problem
    assert problem is not None
    assert problem.startswith(f"refusing to run {probe}: more than one user can change it: ")
    assert f"uid {OTHER_UID} (owner of {directory})" in problem and f"uid {SERVICE_UID} (owner of {probe})" in problem


@needs_root
def test_a_world_writable_directory_on_the_way_is_refused_unless_sticky_and_roots(tmp_path: Path) -> None:
    directory = make_dir(tmp_path / "drop", mode=0o777)
    probe = make_probe(directory / "tool")
    assert exec_decision(probe).problem == f"refusing to run {probe}: {directory}: writable by group and others (mode 0777)"
    directory.chmod(0o1777)  # like /tmp: nobody else can rename or remove root's file in it
    assert exec_decision(probe).problem is None
    assert run_executable(probe, timeout=10).stdout.decode().strip() == "0"


@needs_root
def test_links_are_resolved_and_every_hop_is_checked(tmp_path: Path) -> None:
    real_dir = make_dir(tmp_path / "opt" / "gogs")
    make_dir(tmp_path / "opt")
    probe = make_probe(real_dir / "gogs", owner=SERVICE_UID)
    links = make_dir(tmp_path / "bin")
    link = links / "gogs"
    link.symlink_to("../opt/gogs/gogs")
    decision = exec_decision(link)
    assert decision.path == probe and decision.identity == Identity(SERVICE_UID, 65534)
    assert run_executable(link, timeout=10).stdout.decode().strip() == str(SERVICE_UID)
    # Whoever can write the directory holding the link chooses what runs: refused.
    links.chmod(0o777)
    assert exec_decision(link).problem == f"refusing to run {link}: {links}: writable by group and others (mode 0777)"
    links.chmod(0o755)
    # A link's owner counts as well (in a sticky directory they could replace it): two users, refused.
    os.chown(link, OTHER_UID, OTHER_UID, follow_symlinks=False)
    assert "more than one user can change it" in (exec_decision(link).problem or "")


def test_outside_roots_runs_the_checks_do_not_apply(tmp_path: Path) -> None:
    probe = make_probe(tmp_path / "tool", mode=0o777)
    assert exec_decision(probe, euid=1000).problem is None
    assert exec_decision(probe, euid=1000).identity is None


def test_a_missing_or_non_regular_executable_is_refused_as_root(tmp_path: Path) -> None:
    assert exec_decision(tmp_path / "missing", euid=0).problem == (
        f"refusing to run {tmp_path / 'missing'}: {tmp_path / 'missing'}: No such file or directory"
    )
    (tmp_path / "dir").mkdir()
    assert exec_decision(tmp_path / "dir", euid=0).problem == (
        f"refusing to run {tmp_path / 'dir'}: {tmp_path / 'dir'}: not a regular file"
    )


# --- module imports ---------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "root"
    monkeypatch.setenv("UPDATES_STATE_DIR", str(directory / "state"))
    directory.mkdir()
    return directory


def run_json(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["run", "--json"], root=root)
    return code, json.loads(capsys.readouterr().out)


def marker_source(marker: Path, value: str) -> str:
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nVALUE = {value!r}\n"


@pytest.mark.parametrize(
    "index",
    [
        "from .helper import VALUE\ndef main(args):\n    return {'summary': VALUE}\n",
        "from . import helper\ndef main(args):\n    return {'summary': helper.VALUE}\n",
        # Imported lazily, from inside main: the same rule holds after load_main returned.
        "def main(args):\n    from .helper import VALUE\n    return {'summary': VALUE}\n",
    ],
)
def test_a_sourceless_pyc_in_a_module_directory_is_never_imported(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], index: str
) -> None:
    marker = tmp_path / "marker"
    module = add_module(root, "planted", index)
    evil = tmp_path / "evil.py"
    evil.write_text(marker_source(marker, "planted"))
    py_compile.compile(str(evil), cfile=str(module / "helper.pyc"), doraise=True)
    seal_module(module)  # *.pyc is outside the digest: the checksum still matches
    write_manifest(root, [group(["planted"]), {"name": "planted"}])
    code, report = run_json(root, capsys)
    assert code == 1
    entry = report["modules"][0]
    assert entry["status"] == "failed"
    assert f"refusing to import {module / 'helper.pyc'}" in entry["error"]
    assert not marker.exists()


def test_an_extension_module_beside_no_source_is_refused(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.machinery

    module = add_module(root, "native", "from . import fast\ndef main(args):\n    return None\n")
    planted = module / f"fast{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    planted.write_bytes(b"\x7fELF not really")
    seal_module(module)
    write_manifest(root, [group(["native"]), {"name": "native"}])
    code, report = run_json(root, capsys)
    assert code == 1 and f"refusing to import {planted}" in report["modules"][0]["error"]


def test_a_source_swapped_after_verification_is_not_executed(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The module's own __init__ (verified code) rewrites its sibling before index.py imports it: whatever
    # changes a file between the digest and the import, the bytes compiled must be the bytes hashed.
    marker = tmp_path / "marker"
    swap = textwrap.dedent(f"""\
        import pathlib
        (pathlib.Path(__file__).parent / "helper.py").write_text({marker_source(marker, "swapped")!r})
    """)
    module = add_module(
        root,
        "swapper",
        "from .helper import VALUE\ndef main(args):\n    return {'summary': VALUE}\n",
        files={"helper.py": "VALUE = 'verified'\n"},
        seal=False,
    )
    (module / "__init__.py").write_text(swap)
    seal_module(module)
    write_manifest(root, [group(["swapper"]), {"name": "swapper"}])
    code, report = run_json(root, capsys)
    assert code == 1
    error = report["modules"][0]["error"]
    assert f"{module / 'helper.py'}: changed since {module} was verified" in error
    assert not marker.exists()


def test_load_main_compiles_only_what_the_given_digest_covered(tmp_path: Path) -> None:
    # The runner's verification and the import are two steps: a digest taken at verification time is what
    # the import must match, whatever happened to the files in between.
    marker = tmp_path / "marker"
    module = add_module(
        tmp_path, "gap", "from .helper import VALUE\ndef main(args):\n    return VALUE\n", files={"helper.py": "VALUE = 1\n"}
    )
    verified = digest_folder(module)
    try:
        assert load_main("gap", module, verified)({}) == 1
        (module / "helper.py").write_text(marker_source(marker, "swapped"))
        with pytest.raises(ModuleLoadError, match=r"helper\.py: changed since"):
            load_main("gap", module, verified)
        assert not marker.exists()
        # A file the digest never saw is refused, even when the file importing it is unchanged.
        (module / "helper.py").write_text("VALUE = 1\n")
        (module / "index.py").write_text("def main(args):\n    from . import late\n    return late.VALUE\n")
        later = digest_folder(module)
        main_of_later = load_main("gap", module, later)
        (module / "late.py").write_text(marker_source(marker, "late"))
        with pytest.raises(ImportError, match=rf"refusing to import {module / 'late.py'}: not source covered"):
            main_of_later({})
        assert not marker.exists()
    finally:
        forget("gap")


def test_load_main_without_a_digest_checks_the_checksum_file_itself(tmp_path: Path) -> None:
    module = add_module(tmp_path, "selfcheck", "def main(args):\n    return 'ok'\n")
    try:
        assert load_main("selfcheck", module)({}) == "ok"
        (module / "index.py").write_text("def main(args):\n    return 'edited'\n")
        with pytest.raises(ModuleLoadError, match="checksum mismatch at import"):
            load_main("selfcheck", module)
        with pytest.raises(ModuleLoadError, match="the verified digest is of"):
            load_main("selfcheck", module, digest_folder(tmp_path))
    finally:
        forget("selfcheck")


def test_packages_namespaces_and_optional_imports_still_work(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = textwrap.dedent("""\
        from .lib import A
        from .ns.part import B
        try:
            from . import optional_speedups
        except ImportError:
            optional_speedups = None

        def main(args):
            from .lib.deep import C
            return {"summary": f"{A}{B}{C}{optional_speedups}"}
    """)
    files = {"lib/__init__.py": "A = 'a'\n", "lib/deep.py": "C = 'c'\n", "ns/part.py": "B = 'b'\n"}
    add_module(root, "shaped", index, files=files)
    write_manifest(root, [group(["shaped"]), {"name": "shaped"}])
    code, report = run_json(root, capsys)
    assert code == 0, report
    assert report["modules"][0]["summary"] == "abcNone"


def test_an_extended_package_path_does_not_reach_outside_the_module(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "stray.py").write_text(marker_source(marker, "stray"))
    module = add_module(root, "wander", "from .stray import VALUE\ndef main(args):\n    return None\n", seal=False)
    with (module / "__init__.py").open("a") as init:
        init.write(f"__path__.append({str(outside)!r})\n")
    seal_module(module)
    write_manifest(root, [group(["wander"]), {"name": "wander"}])
    code, report = run_json(root, capsys)
    assert code == 1 and "No module named 'updates.wander.stray'" in report["modules"][0]["error"]
    assert not marker.exists()


# --- state files ------------------------------------------------------------------------------------------


def test_state_writes_refuse_a_planted_link_and_leave_its_target_alone(tmp_path: Path) -> None:
    victim = tmp_path / "shadow"
    victim.write_bytes(b"root:secret\n")
    state = tmp_path / "state"
    state.mkdir()
    link = state / "adblock.json"
    link.symlink_to(victim)
    with pytest.raises(UnsafePermissions, match="is a symbolic link; refusing to write through it"):
        atomic_write_bytes(link, b"{}", follow_symlinks=False)
    with pytest.raises(UnsafePermissions):
        atomic_write_text(link, "{}", mode=0o600, follow_symlinks=False)
    assert victim.read_bytes() == b"root:secret\n"
    assert link.is_symlink()
    assert sorted(p.name for p in state.iterdir()) == ["adblock.json"]  # no temp file left behind
    os.mkfifo(state / "fifo")
    with pytest.raises(UnsafePermissions, match="not a regular file"):
        atomic_write_bytes(state / "fifo", b"x", follow_symlinks=False)
    # A regular file (or none) is replaced as always, its mode kept.
    regular = state / "cache.json"
    atomic_write_bytes(regular, b"one", mode=0o600, follow_symlinks=False)
    atomic_write_bytes(regular, b"two", follow_symlinks=False)
    assert regular.read_bytes() == b"two" and regular.stat().st_mode & 0o777 == 0o600


def test_the_default_still_writes_through_a_link_for_files_like_etc_hosts(tmp_path: Path) -> None:
    real = tmp_path / "hosts.real"
    real.write_text("old\n")
    link = tmp_path / "hosts"
    link.symlink_to(real)
    atomic_write_text(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
