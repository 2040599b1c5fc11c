"""Kubernetes base: every server drains with a delay (NOT_SERVING, still serving) and the
whole shutdown (any preStop sleep + DRAIN_DELAY_S + SHUTDOWN_GRACE_S) fits the pod's
terminationGracePeriodSeconds, with room for the stop hooks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.common.settings import ServiceSettings
from tests.helpers import INTERNAL_TOKEN

BASE = Path(__file__).resolve().parents[3] / "deploy" / "k8s" / "base"
SERVICES = ("gateway", "profile", "analytics", "inference")
HOOKS_S = 5  # after the grace: closing channels and pools


def _env(name: str) -> dict[str, str]:
    lines = (BASE / "config" / f"{name}.env").read_text().splitlines()
    return dict(ln.split("=", 1) for ln in lines if ln and not ln.startswith("#"))


def _pod_spec(name: str) -> dict:
    (deployment,) = [d for d in yaml.safe_load_all((BASE / f"{name}.yaml").read_text())
                     if d and d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    return deployment["spec"]["template"]["spec"]


def _prestop_sleep_s(container: dict) -> float:
    command = ((container.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get(
        "command") or []
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


@pytest.mark.parametrize("name", SERVICES)
def test_drain_delay_and_grace_fit_the_termination_period(name: str):
    env, spec = _env(name), _pod_spec(name)
    prefix = f"AVATARIO_{name.upper()}_"
    drain = float(env[prefix + "DRAIN_DELAY_S"])
    grace = float(env[prefix + "SHUTDOWN_GRACE_S"])
    assert drain > 0, "health must say NOT_SERVING before calls are refused"
    # Values the settings accept (the same parsing as at start).
    parsed = ServiceSettings(internal_token=INTERNAL_TOKEN, drain_delay_s=env[prefix + "DRAIN_DELAY_S"],
                             shutdown_grace_s=env[prefix + "SHUTDOWN_GRACE_S"])
    assert (parsed.drain_delay_s, parsed.shutdown_grace_s) == (drain, grace)
    (container,) = [c for c in spec["containers"] if c["name"] == name]
    total = _prestop_sleep_s(container) + drain + grace + HOOKS_S
    assert total <= spec["terminationGracePeriodSeconds"], (name, total)
