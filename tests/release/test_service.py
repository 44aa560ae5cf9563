"""Telling "stopped" from "no such unit" and from "the command failed", through real child processes that
answer like systemctl (documented exit codes: is-active 0 active, 3 inactive, 4 no such unit; and, as real
systemctl does for a unit it has never heard of, 3 with `LoadState=not-found` from `show`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from updates.utils.release.service import ServiceError, ServiceManager

FAKE_SYSTEMCTL = """#!/bin/sh
# units: running (active), stopped (loaded, inactive); anything else is unknown to this "systemd".
case "$1" in
  is-active)
    [ "$3" = running ] && exit 0
    exit 3 ;;
  show)
    case "$4" in running|stopped) echo loaded ;; *) echo not-found ;; esac
    exit 0 ;;
esac
exit 1
"""


def fake(tmp_path: Path, name: str, text: str) -> tuple[str, ...]:
    script = tmp_path / name
    script.write_text(text)
    script.chmod(0o755)
    return (str(script),)


def test_systemctl_running_stopped_and_unknown_units(tmp_path: Path) -> None:
    manager = ServiceManager(fake(tmp_path, "systemctl", FAKE_SYSTEMCTL), timeout=10)
    assert manager.is_active("running") is True
    assert manager.is_active("stopped") is False
    with pytest.raises(ServiceError) as raised:
        manager.is_active("filebrowsr")
    assert str(raised.value) == (
        f"no service unit named 'filebrowsr' (`{manager.command[0]} is-active --quiet filebrowsr` answered "
        'exit code 3, LoadState not-found); fix the module\'s service arg, or set it to "" when the tool runs '
        "without a service"
    )


@pytest.mark.parametrize(("code", "says"), [(4, "no service unit named 'x'"), (1, "cannot tell whether"),
                                            (5, "cannot tell whether")])
def test_other_commands_are_taken_at_their_exit_code(tmp_path: Path, code: int, says: str) -> None:
    manager = ServiceManager(fake(tmp_path, "svc", f"#!/bin/sh\nexit {code}\n"), timeout=10)
    with pytest.raises(ServiceError, match=says):
        manager.is_active("x")


def test_a_missing_service_command_is_an_error_not_stopped(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"cannot tell whether the service x runs: .*command not found"):
        ServiceManager((str(tmp_path / "nope"),), timeout=10).is_active("x")
