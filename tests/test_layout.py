"""The tree's architecture, enforced: which part of `updates` may import which.

The rules are those the subpackages' docstrings state: the shared helpers at the top of `utils/` import
only each other; `release/`, `vcs/` and `report/` import helpers and themselves; `orchestrator/` may also
use `report/`; the design-named entry files (`utils/__init__`, `index`, `checksummer`, `rollback`) may use
anything in `utils/`; update modules use helpers, `release/` and those entry files, never each other; and
nothing in `utils/` imports an update module. `requests` is imported by `utils/http.py` alone.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBSYSTEMS = ("orchestrator", "release", "vcs", "report")
FACADES = ("__init__", "index", "checksummer", "rollback")
ALLOWED = {
    "helpers": {"helpers"},
    "bootstrap": set(),
    "release": {"release", "helpers"},
    "vcs": {"vcs", "helpers"},
    "report": {"report", "helpers"},
    # `pull` and the signed-code gate of `run` need git: the orchestrator may use vcs, never release.
    "orchestrator": {"orchestrator", "helpers", "report", "vcs"},
    "facade": {"facade", "helpers", *SUBSYSTEMS},
}
MODULE_ALLOWED = {"helpers", "release", "facade"}


def module_name(root: Path, path: Path) -> str:
    parts = ["updates", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved, lazy ones included."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from . import x` and `from ..utils import y` may name submodules.
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def layer(root: Path, module: str) -> str | None:
    """The part of the tree a dotted name belongs to; None for the standard library and third parties."""
    parts = module.split(".")
    if parts[0] != "updates" or len(parts) < 2:
        return None
    if parts[1] != "utils":
        return f"module:{parts[1]}" if (root / parts[1] / "index.py").is_file() else None
    if len(parts) == 2 or parts[2] in FACADES:
        return "facade"
    if parts[2] in SUBSYSTEMS:
        return parts[2]
    if parts[2] == "bootstrap":
        return "bootstrap"
    return "helpers" if (root / "utils" / f"{parts[2]}.py").is_file() else None


def violations(root: Path) -> list[str]:
    """Every import that crosses the tree against the rules, as `path:line: a -> b`."""
    problems = []
    sources = sorted((root / "utils").rglob("*.py"))
    sources += sorted(p for d in root.iterdir() if (d / "index.py").is_file() for p in d.rglob("*.py"))
    for path in sources:
        if "__pycache__" in path.parts:
            continue
        source = module_name(root, path)
        mine = layer(root, source)
        for line, target in imported_names(root, path):
            theirs = layer(root, target)
            where = f"{path.relative_to(root)}:{line}: {source} -> {target}"
            if target.split(".")[0] in ("requests", "urllib3") and path != root / "utils" / "http.py":
                problems.append(f"{where} (only utils/http.py imports requests)")
            if theirs is None or mine is None:
                continue
            if mine.startswith("module:"):
                if theirs != mine and theirs not in MODULE_ALLOWED:
                    problems.append(where)
            elif theirs.startswith("module:") or theirs not in ALLOWED[mine] | {mine}:
                problems.append(where)
    return problems


def test_the_tree_follows_the_import_rules() -> None:
    assert violations(ROOT) == []


def test_every_subpackage_states_its_contract_and_imports() -> None:
    for name in SUBSYSTEMS:
        doc = ast.get_docstring(ast.parse((ROOT / "utils" / name / "__init__.py").read_text()))
        assert doc, name
        assert "May import:" in doc, name


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in {"utils/__init__.py": "", "utils/errors.py": "", "good/index.py": "", **files}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"utils/errors.py": "from .orchestrator import runner\n", "utils/orchestrator/runner.py": ""},
         "utils/errors.py:1: updates.utils.errors -> updates.utils.orchestrator"),
        ({"utils/release/x.py": "from ..vcs.git import Git\n", "utils/vcs/git.py": ""},
         "utils/release/x.py:1: updates.utils.release.x -> updates.utils.vcs.git"),
        ({"utils/report/x.py": "def f():\n    from ..orchestrator import runner\n", "utils/orchestrator/runner.py": ""},
         "utils/report/x.py:2: updates.utils.report.x -> updates.utils.orchestrator"),
        ({"other/index.py": "from ..good import index\n"},
         "other/index.py:1: updates.other.index -> updates.good"),
        ({"utils/errors.py": "from ..good.index import main\n"},
         "utils/errors.py:1: updates.utils.errors -> updates.good.index"),
        ({"good/index.py": "from ..utils.vcs import git\n", "utils/vcs/git.py": ""},
         "good/index.py:1: updates.good.index -> updates.utils.vcs"),
        ({"utils/bootstrap.py": "from .errors import UpdatesError\n"},
         "utils/bootstrap.py:1: updates.utils.bootstrap -> updates.utils.errors"),
        ({"good/index.py": "import requests\n"},
         "good/index.py:1: updates.good.index -> requests (only utils/http.py imports requests)"),
    ],
)
def test_the_checker_catches_each_kind_of_wrong_import(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    assert expected in violations(_tree(tmp_path, files))


def test_allowed_directions_pass_the_checker(tmp_path: Path) -> None:
    files = {
        "utils/orchestrator/cli.py": "from ..report import views\nfrom ..errors import UpdatesError\n",
        "utils/report/views.py": "from ..results import Status\n",
        "utils/results.py": "from .errors import UpdatesError\n",
        "good/index.py": "from ..utils.release import update\nfrom ..utils import run_children\nfrom . import x\n",
        "good/x.py": "",
        "utils/release/update.py": "from ..http import make_session\nfrom .args import read_args\n",
        "utils/release/args.py": "",
        "utils/http.py": "import requests\n",
        "utils/rollback.py": "from .vcs import operations\nfrom .report.views import table\n",
    }
    assert violations(_tree(tmp_path, files)) == []


def test_importing_the_rollback_api_loads_neither_the_orchestrator_nor_the_http_stack() -> None:
    code = (
        "import runpy, sys\n"
        f"runpy.run_path({str(ROOT / 'utils' / 'bootstrap.py')!r})['register_package']()\n"
        "from updates.utils import rollback_module, list_available_versions\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('updates.utils.orchestrator', 'requests')))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
