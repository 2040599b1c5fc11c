"""The CLI's per-user credentials file.

`$XDG_CONFIG_HOME/avatario/credentials.json` (default `~/.config/avatario/`),
the folder created 0700 and the file 0600, written atomically. One section per
gateway address: the parent's tokens and, separately, the device tokens of
children paired from this machine (a device token is a child-mode credential,
kept apart from the parent's so either can be dropped on its own).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def config_dir(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".config")
    return Path(base) / "avatario"


class CredentialStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "credentials.json"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"gateways": {}}
        except ValueError as exc:
            raise ValueError(f"{self.path} is not valid JSON; remove it and sign in again") from exc
        data.setdefault("gateways", {})
        return data

    def _save(self, data: dict[str, Any]) -> None:
        folder = self.path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        fd, tmp = tempfile.mkstemp(prefix=".credentials-", dir=folder)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def section(self, gateway: str) -> dict[str, Any]:
        return self._load()["gateways"].get(gateway, {})

    def update(self, gateway: str, **values: Any) -> dict[str, Any]:
        data = self._load()
        section = data["gateways"].setdefault(gateway, {})
        for key, value in values.items():
            if value is None:
                section.pop(key, None)
            else:
                section[key] = value
        self._save(data)
        return section

    def parent(self, gateway: str) -> dict[str, Any] | None:
        return self.section(gateway).get("parent")

    def set_parent(self, gateway: str, parent: dict[str, Any] | None) -> None:
        self.update(gateway, parent=parent)

    def device(self, gateway: str, child_id: str) -> dict[str, Any] | None:
        return self.section(gateway).get("devices", {}).get(child_id)

    def set_device(self, gateway: str, child_id: str, device: dict[str, Any] | None) -> None:
        devices = dict(self.section(gateway).get("devices", {}))
        if device is None:
            devices.pop(child_id, None)
        else:
            devices[child_id] = device
        self.update(gateway, devices=devices)

    def forget(self, gateway: str) -> None:
        data = self._load()
        data["gateways"].pop(gateway, None)
        self._save(data)
