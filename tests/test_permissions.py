"""StrictModes-like checks on files whose modes and owners the tests set (chown cases need root)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from updates.utils.permissions import (
    check_ancestors,
    check_file,
    check_install,
    check_tree,
    enforced,
    running_venv,
)

ME = os.geteuid()
OTHER = 54321  # a uid that owns nothing on this machine
needs_root = pytest.mark.skipif(ME != 0, reason="changing a file's owner needs root (CI runs as root)")


def make_module(base: Path) -> Path:
    module = base / "adblock"
    (module / "lib").mkdir(parents=True)
    (module / "index.py").write_text("def main(args):\n    return None\n")
    (module / "lib" / "parse.py").write_text("X = 1\n")
    for path in (module, module / "lib"):
        path.chmod(0o755)
    for path in (module / "index.py", module / "lib" / "parse.py"):
        path.chmod(0o644)
    return module


def make_install(base: Path) -> Path:
    root = base / "updates"
    (root / "utils").mkdir(parents=True)
    (root / "config").mkdir()
    for name in ("index.py", "__init__.py", "manifest.json", "utils/__init__.py", "config/utils.sh"):
        (root / name).write_text("# test\n")
        (root / name).chmod(0o644)
    for path in (base, root, root / "utils", root / "config"):
        path.chmod(0o755)
    return root


def test_enforced_only_for_root() -> None:
    assert enforced(0) is True
    assert enforced(1000) is False
    assert enforced() is (ME == 0)


def test_a_clean_tree_has_no_problems(tmp_path: Path) -> None:
    assert check_tree(make_module(tmp_path), euid=ME) == []


@pytest.mark.parametrize(
    ("relative", "mode", "expected"),
    [
        ("index.py", 0o664, "writable by group (mode 0664)"),
        ("lib/parse.py", 0o646, "writable by others (mode 0646)"),
        ("lib/parse.py", 0o666, "writable by group and others (mode 0666)"),
        ("lib", 0o775, "writable by group (mode 0775)"),
        ("", 0o777, "writable by group and others (mode 0777)"),
        ("", 0o1777, "writable by group and others (mode 1777)"),  # sticky does not excuse a module dir
    ],
)
def test_writable_by_group_or_others_is_reported(tmp_path: Path, relative: str, mode: int, expected: str) -> None:
    module = make_module(tmp_path)
    target = module / relative if relative else module
    target.chmod(mode)
    assert check_tree(module, euid=ME) == [f"{target}: {expected}"]


@needs_root
def test_a_file_owned_by_another_user_is_reported(tmp_path: Path) -> None:
    module = make_module(tmp_path)
    os.chown(module / "lib" / "parse.py", OTHER, 0)
    assert check_tree(module, euid=0) == [f"{module / 'lib' / 'parse.py'}: owned by uid {OTHER}, not root"]
    # Run by that user itself (not root), the file is theirs, so no problem with it; root's files are fine.
    assert check_tree(module, euid=OTHER) == []
    os.chown(module, OTHER, 0)
    assert check_tree(module, euid=0)[0] == f"{module}: owned by uid {OTHER}, not root"
    assert len(check_tree(module, euid=0)) == 2


def test_links_are_reported_and_never_followed(tmp_path: Path) -> None:
    module = make_module(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.py").write_text("X = 2\n")
    (outside / "evil.py").chmod(0o666)
    outside.chmod(0o777)
    (module / "lib" / "evil.py").symlink_to(outside / "evil.py")
    (module / "shared").symlink_to(outside)
    problems = check_tree(module, euid=ME)
    assert problems == [
        f"{module / 'shared'}: is a symbolic link; not followed",
        f"{module / 'lib' / 'evil.py'}: is a symbolic link; not followed",
    ]
    assert not any(str(outside) in p.split(":")[0] for p in problems)
    link_to_module = tmp_path / "linked"
    link_to_module.symlink_to(module)
    assert check_tree(link_to_module, euid=ME) == [f"{link_to_module}: is a symbolic link; refusing to follow it"]


def test_a_missing_tree_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    assert check_tree(tmp_path / "gone", euid=ME) == [f"{tmp_path / 'gone'}: cannot check: No such file or directory"]


def test_check_file_looks_at_the_file_and_its_directory(tmp_path: Path) -> None:
    root = make_install(tmp_path)
    manifest = root / "manifest.json"
    assert check_file(manifest, euid=ME) == []
    manifest.chmod(0o666)
    assert check_file(manifest, euid=ME) == [f"{manifest}: writable by group and others (mode 0666)"]
    manifest.chmod(0o644)
    root.chmod(0o1777)  # the root holds index.py, which Python puts first on sys.path: sticky is no excuse
    assert check_file(manifest, euid=ME) == [f"{root}: writable by group and others (mode 1777)"]
    root.chmod(0o755)
    (root / "dir.json").mkdir()
    assert check_file(root / "dir.json", euid=ME) == [f"{root / 'dir.json'}: not a regular file"]


def test_check_file_follows_a_link_to_check_its_target(tmp_path: Path) -> None:
    root = make_install(tmp_path)
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    elsewhere.chmod(0o777)
    (elsewhere / "manifest.json").write_text("{}\n")
    (elsewhere / "manifest.json").chmod(0o644)
    link = root / "linked.json"
    link.symlink_to(elsewhere / "manifest.json")
    assert check_file(link, euid=ME) == [f"{elsewhere}: writable by group and others (mode 0777)"]


def test_ancestors_allow_sticky_root_directories_only(tmp_path: Path) -> None:
    root = make_install(tmp_path)
    # tmp_path lives under /tmp (sticky, root's): that is fine for an ancestor.
    assert check_ancestors(root, euid=ME) == []
    tmp_path.chmod(0o777)
    assert check_ancestors(root, euid=ME) == [f"{tmp_path}: writable by group and others (mode 0777)"]
    tmp_path.chmod(0o1777)
    if ME == 0:
        assert check_ancestors(root, euid=ME) == []
    else:  # sticky excuses only a directory of root's, as nobody else could then rename ours away
        assert check_ancestors(root, euid=ME) == [f"{tmp_path}: writable by group and others (mode 1777)"]
    tmp_path.chmod(0o755)


@needs_root
def test_a_sticky_ancestor_of_another_user_is_reported(tmp_path: Path) -> None:
    root = make_install(tmp_path)
    tmp_path.chmod(0o1777)
    os.chown(tmp_path, OTHER, 0)
    assert check_ancestors(root, euid=0) == [
        f"{tmp_path}: owned by uid {OTHER}, not root",
        f"{tmp_path}: writable by group and others (mode 1777)",
    ]


def test_check_install_bundles_the_core_checks(tmp_path: Path) -> None:
    root = make_install(tmp_path)
    manifest = root / "manifest.json"
    assert check_install(root, manifest, euid=ME, venv=None) == []
    (root / "index.py").chmod(0o646)
    (root / "utils" / "__init__.py").chmod(0o664)
    (root / "config" / "utils.sh").chmod(0o666)
    assert check_install(root, manifest, euid=ME, venv=None) == [
        f"{root / 'index.py'}: writable by others (mode 0646)",
        f"{root / 'utils' / '__init__.py'}: writable by group (mode 0664)",
        f"{root / 'config' / 'utils.sh'}: writable by group and others (mode 0666)",
    ]


@needs_root
def test_check_install_reports_a_manifest_owned_by_another_user(tmp_path: Path) -> None:
    root = make_install(tmp_path)
    os.chown(root / "manifest.json", OTHER, OTHER)
    assert check_install(root, root / "manifest.json", euid=0, venv=None) == [
        f"{root / 'manifest.json'}: owned by uid {OTHER}, not root"
    ]


def make_venv(root: Path) -> Path:
    """A venv-shaped tree: links to the interpreter and lib64 -> lib, third-party code in site-packages."""
    venv = root / "venv"
    site = venv / "lib" / "python3" / "site-packages" / "requests"
    site.mkdir(parents=True)
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "lib64").symlink_to("lib")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (site / "__init__.py").write_text("# requests\n")
    for path in [venv, *venv.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    return venv


def test_check_install_covers_the_venv_root_runs_from(tmp_path: Path) -> None:
    root = make_install(tmp_path)
    venv = make_venv(root)
    manifest = root / "manifest.json"
    assert check_install(root, manifest, euid=ME, venv=venv) == []  # its links are its normal make-up
    planted = venv / "lib" / "python3" / "site-packages" / "requests" / "__init__.py"
    planted.chmod(0o666)
    (venv / "bin").chmod(0o775)
    assert check_install(root, manifest, euid=ME, venv=venv) == [
        f"{venv / 'bin'}: writable by group (mode 0775)",
        f"{planted}: writable by group and others (mode 0666)",
    ]
    assert check_install(root, manifest, euid=ME, venv=None) == []
    # Reached through a link (root/venv -> elsewhere): the real tree is what gets checked.
    planted.chmod(0o644)
    (venv / "bin").chmod(0o755)
    elsewhere = tmp_path / "venvs" / "updates"
    elsewhere.parent.mkdir()
    elsewhere.parent.chmod(0o755)
    venv.rename(elsewhere)
    venv.symlink_to(elsewhere)
    assert check_install(root, manifest, euid=ME, venv=venv) == []
    (elsewhere / "pyvenv.cfg").chmod(0o664)
    assert check_install(root, manifest, euid=ME, venv=venv) == [
        f"{elsewhere / 'pyvenv.cfg'}: writable by group (mode 0664)"
    ]


def test_the_default_venv_is_the_running_interpreters(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "env")],
        capture_output=True,
        timeout=120,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv here: {made.stderr.decode().strip()[-200:]}")
    root = make_install(tmp_path)
    (tmp_path / "env").chmod(0o775)  # group-writable: someone else could plant code root would import
    code = (
        "import runpy, sys\n"
        "sys.dont_write_bytecode = True\n"
        f"runpy.run_path({str(Path(__file__).parents[1] / 'utils' / 'bootstrap.py')!r})['register_package']()\n"
        "from updates.utils import permissions as mod\n"
        "print(mod.running_venv())\n"
        f"print('\\n'.join(mod.check_install(sys.argv[1], sys.argv[2], euid={ME})))\n"
    )
    done = subprocess.run(
        [str(tmp_path / "env" / "bin" / "python"), "-c", code, str(root), str(root / "manifest.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == str(tmp_path / "env")
    assert f"{tmp_path / 'env'}: writable by group (mode 0775)" in lines[1:]
    assert running_venv() == (Path(sys.prefix) if sys.prefix != sys.base_prefix else None)


def test_check_state_dir_holds_the_state_to_the_rule_for_code(tmp_path: Path) -> None:
    from updates.utils.permissions import check_state_dir

    base = tmp_path / "var"
    base.mkdir(mode=0o755)
    state = base / "updates"
    assert check_state_dir(state, euid=ME) == []  # not there yet: the caller creates it
    assert check_state_dir(state / "deeper" / "still", euid=ME) == []
    state.mkdir(mode=0o700)
    assert check_state_dir(state, euid=ME) == []
    state.chmod(0o1777)  # sticky does not excuse the state directory itself
    assert check_state_dir(state, euid=ME) == [f"{state}: writable by group and others (mode 1777)"]
    state.chmod(0o700)
    base.chmod(0o775)
    assert check_state_dir(state, euid=ME) == [f"{base}: writable by group (mode 0775)"]
    base.chmod(0o755)
    state.rmdir()
    state.write_text("a file")
    assert check_state_dir(state, euid=ME) == [f"{state}: not a directory"]


def test_check_state_dir_checks_a_link_and_where_it_leads(tmp_path: Path) -> None:
    from updates.utils.permissions import check_state_dir

    real = tmp_path / "srv" / "updates"
    real.mkdir(parents=True)
    (tmp_path / "srv").chmod(0o777)
    link = tmp_path / "state"
    link.symlink_to(real)
    assert check_state_dir(link, euid=ME) == [f"{tmp_path / 'srv'}: writable by group and others (mode 0777)"]
    (tmp_path / "srv").chmod(0o755)
    assert check_state_dir(link, euid=ME) == []
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert check_state_dir(dangling, euid=ME) == [f"{dangling}: a link to {tmp_path / 'nowhere'}, which does not exist"]


@needs_root
def test_check_state_dir_reports_other_owners(tmp_path: Path) -> None:
    from updates.utils.permissions import check_state_dir

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, OTHER, OTHER)
    assert check_state_dir(state, euid=0) == [f"{state}: owned by uid {OTHER}, not root"]
    assert check_state_dir(state, euid=OTHER) == []  # that user's own run uses its own directory
    os.chown(state, 0, 0)
    os.chown(tmp_path, OTHER, OTHER)
    assert check_state_dir(state, euid=0) == [f"{tmp_path}: owned by uid {OTHER}, not root"]
    os.chown(tmp_path, 0, 0)
