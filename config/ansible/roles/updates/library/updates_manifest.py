#!/usr/bin/python
"""Ansible module `updates_manifest`: write a host's own settings into the manifest.json of `updates`.

Only host fields are written (per entry `enabled`, `args`, `timeout`, `description`; the top-level
`notify` object), never a code field (`version`, `checksum`, `children`, ...), so a signed checkout stays
clean where it matters. The file keeps its key order and 2-space indentation, is replaced atomically (temp
file, fsync, rename) with its mode kept, and is not touched when nothing changes (a second run reports
`changed: false`). A module name the manifest does not have, or a key that is not a host setting, fails
with one message naming it and changes nothing. The file is read and written under the host's run lock
(module_utils/updates_lock.py): a nightly run that read the manifest before would otherwise write it back
without the new settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.updates_files import write_atomic
from ansible.module_utils.updates_lock import LockBusy, module_lock

DOCUMENTATION = r"""
module: updates_manifest
short_description: Write a host's own settings into the manifest of updates
description:
  - Sets C(enabled), C(args), C(timeout) and C(description) of named entries and the top-level C(notify)
    object in manifest.json; code fields are never written.
options:
  path:
    description: The manifest.json to change.
    type: path
    required: true
  modules:
    description: Entry name to its host settings (C(enabled), C(args), C(timeout), C(description)).
    type: dict
    default: {}
  notify:
    description: The top-level notify object; omit or null to leave it as it is, {} to remove it.
    type: dict
  lock:
    description: The run lock of updates (C(<state>/updates.lock)), held while the file is written.
    type: path
    default: /var/lib/updates/updates.lock
  lock_timeout:
    description: Seconds to wait for a run that holds the lock before failing with nothing changed.
    type: int
    default: 900
author: updates
"""

RETURN = r"""
changed_fields:
  description: The settings that changed, as C(entry.field) or C(notify).
  type: list
  elements: str
  returned: always
"""

HOST_SETTINGS = ("enabled", "args", "timeout", "description")
TYPES: dict[str, tuple[type, ...]] = {"enabled": (bool,), "args": (dict,), "timeout": (int, float),
                                      "description": (str,)}  # fmt: skip


def apply(raw: dict[str, Any], modules: dict[str, Any], notify: dict[str, Any] | None) -> list[str]:
    """Change `raw` in place; return what changed. Raises ValueError naming a bad setting."""
    entries = {e.get("name"): e for e in raw.get("updates") or [] if isinstance(e, dict)}
    changed = []
    for name, settings in sorted(modules.items()):
        if name not in entries:
            known = ", ".join(sorted(str(n) for n in entries))
            raise ValueError(f"updates_modules.{name}: not in the manifest (known: {known})")
        if not isinstance(settings, dict):
            raise ValueError(f"updates_modules.{name}: must be a mapping of host settings")
        for key, value in settings.items():
            if key not in HOST_SETTINGS:
                allowed = ", ".join(HOST_SETTINGS)
                raise ValueError(f"updates_modules.{name}.{key}: not a host setting (allowed: {allowed})")
            bad_timeout = key == "timeout" and (isinstance(value, bool) or value <= 0)
            if not isinstance(value, TYPES[key]) or bad_timeout:
                raise ValueError(f"updates_modules.{name}.{key}: wrong type or value: {value!r}")
            if key not in entries[name] or entries[name][key] != value:
                entries[name][key] = value
                changed.append(f"{name}.{key}")
    if notify is not None:
        if notify == {}:
            if "notify" in raw:
                del raw["notify"]
                changed.append("notify")
        elif raw.get("notify") != notify:
            raw["notify"] = notify
            changed.append("notify")
    return changed


def dump(raw: dict[str, Any]) -> str:
    return json.dumps(raw, indent=2, ensure_ascii=False) + "\n"


def update(
    path: Path, modules: dict[str, Any], notify: dict[str, Any] | None, *, write: bool
) -> tuple[str, str, list[str]]:
    """Read the manifest, apply the settings and (with `write`) replace it when they changed anything:
    (text before, text after, what changed). Raises ValueError naming an unreadable file or a bad setting."""
    try:
        before = path.read_text(encoding="utf-8")
        raw = json.loads(before)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the manifest: {exc}") from None
    changed = apply(raw, modules, notify)
    after = dump(raw)
    if after != before and changed and write:
        write_atomic(path, after)
    return before, after, changed


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "modules": {"type": "dict", "default": {}},
            "notify": {"type": "dict", "required": False, "default": None},
            "lock": {"type": "path", "default": "/var/lib/updates/updates.lock"},
            "lock_timeout": {"type": "int", "default": 900},
        },
        supports_check_mode=True,
    )
    path = Path(module.params["path"])
    try:
        with module_lock(module):
            before, after, changed = update(path, module.params["modules"], module.params["notify"],
                                            write=not module.check_mode)  # fmt: skip
    except (LockBusy, ValueError) as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:  # writing the new manifest (a full disk, a read-only file system)
        module.fail_json(msg=f"{path}: cannot write the manifest: {exc.strerror or exc}")
    result: dict[str, Any] = {"changed": bool(changed), "changed_fields": changed}
    if module._diff:
        result["diff"] = {"before": before, "after": after, "before_header": str(path),
                          "after_header": str(path)}  # fmt: skip
    module.exit_json(**result)


if __name__ == "__main__":
    main()
