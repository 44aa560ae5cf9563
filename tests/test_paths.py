"""Where state and logs live: one default per user, the same for the timer and a hand run (DESIGN.md)."""

from __future__ import annotations

from pathlib import Path

from updates.utils.paths import Paths


def test_root_without_the_variable_uses_the_units_directories(tmp_path: Path) -> None:
    paths = Paths.create(tmp_path, environ={}, euid=0)
    assert paths.state == Path("/var/lib/updates")
    assert paths.logs == Path("/var/log/updates")
    assert paths.lock == Path("/var/lib/updates/updates.lock")
    assert paths.module_state("gogs") == Path("/var/lib/updates/modules/gogs")
    assert paths.state_source == "default for root"
    assert paths.legacy_state == tmp_path.resolve() / "state"


def test_the_variable_wins_and_logs_follow_the_state(tmp_path: Path) -> None:
    paths = Paths.create(tmp_path, environ={"UPDATES_STATE_DIR": str(tmp_path / "s")}, euid=0)
    assert paths.state == tmp_path / "s"
    assert paths.logs == tmp_path / "s" / "logs"
    assert paths.state_source == "UPDATES_STATE_DIR"


def test_a_log_directory_of_its_own(tmp_path: Path) -> None:
    environ = {"UPDATES_STATE_DIR": str(tmp_path / "s"), "UPDATES_LOG_DIR": str(tmp_path / "l")}
    assert Paths.create(tmp_path, environ=environ, euid=0).logs == tmp_path / "l"
    assert Paths.create(tmp_path, environ={"UPDATES_LOG_DIR": str(tmp_path / "l")}, euid=0).logs == tmp_path / "l"


def test_other_users_get_their_xdg_state_home(tmp_path: Path) -> None:
    paths = Paths.create(tmp_path, environ={"XDG_STATE_HOME": str(tmp_path / "xdg"), "HOME": "/nowhere"}, euid=1000)
    assert paths.state == tmp_path / "xdg" / "updates"
    assert paths.logs == tmp_path / "xdg" / "updates" / "logs"
    home = Paths.create(tmp_path, environ={"HOME": str(tmp_path / "home")}, euid=1000)
    assert home.state == tmp_path / "home" / ".local" / "state" / "updates"
    # The XDG spec ignores a relative value.
    relative = Paths.create(tmp_path, environ={"XDG_STATE_HOME": "rel", "HOME": str(tmp_path)}, euid=1000)
    assert relative.state == tmp_path / ".local" / "state" / "updates"


def test_the_root_never_decides_where_state_lives(tmp_path: Path) -> None:
    one = Paths.create(tmp_path / "a", environ={}, euid=0)
    two = Paths.create(tmp_path / "b", environ={}, euid=0)
    assert one.state == two.state and one.logs == two.logs


def test_building_paths_creates_nothing(tmp_path: Path) -> None:
    paths = Paths.create(tmp_path, environ={"UPDATES_STATE_DIR": str(tmp_path / "s")}, euid=1000)
    assert list(tmp_path.iterdir()) == []
    assert paths.describe_state() == f"{tmp_path / 's'} (UPDATES_STATE_DIR; not created yet: no run has used it)"
