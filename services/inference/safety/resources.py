"""Help-line resources per country: the fixed answers carry them."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from services.inference.planner import ConfigError

RESOURCES_PATH = Path(__file__).resolve().parent.parent / "safety_resources.json"


@dataclass(frozen=True, slots=True)
class CountryResources:
    code: str
    country: str
    emergency: str
    crisis_line: str
    poison_line: str
    child_protection_line: str
    medical_advice_line: str


def load_resources(path: str | Path | None = None) -> dict[str, CountryResources]:
    """Country code -> resources; the file must have a 'default' entry."""
    p = Path(path) if path is not None else RESOURCES_PATH
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read safety resources {p}: {exc}") from exc
    names = [f.name for f in fields(CountryResources) if f.name != "code"]
    out: dict[str, CountryResources] = {}
    for code, entry in raw.items():
        if code.startswith("_"):
            continue
        missing = [n for n in names if not isinstance(entry.get(n), str)]
        if missing:
            raise ConfigError(f"safety resources {p}: {code} lacks {', '.join(missing)}")
        out[code] = CountryResources(code=code, **{n: entry[n] for n in names})
    if "default" not in out:
        raise ConfigError(f"safety resources {p}: no 'default' entry")
    return out


