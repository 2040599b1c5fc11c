"""Every service's real entry point, as a process with a clean environment: a missing or
malformed setting ends with exit status 2 and one line naming the variable (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import INTERNAL_TOKEN, ROOT, TOKEN_PEPPER

# What each service needs to start, besides the shared token.
REQUIRED = {
    "gateway": {"AVATARIO_GATEWAY_JWT_SIGNING_KEYS": '{"k1": "' + "s" * 40 + '"}',
                "AVATARIO_GATEWAY_JWT_ACTIVE_KID": "k1"},
    "profile": {"AVATARIO_PROFILE_TOKEN_PEPPER": TOKEN_PEPPER},
    "analytics": {},
    "inference": {"AVATARIO_INFERENCE_MODEL_PATH": "/nonexistent/model.pth"},
}
# One malformed variable per service (the rest valid) and what the line must say.
MALFORMED = {
    "gateway": ("AVATARIO_GATEWAY_PORT", "70000",
                "AVATARIO_GATEWAY_PORT: Input should be less than or equal to 65535"),
    "profile": ("AVATARIO_PROFILE_DATABASE_URL", "postgres://admin:pw-secret@db/profile",
                "AVATARIO_PROFILE_DATABASE_URL must be a database URL"),
    "analytics": ("AVATARIO_INTERNAL_TOKEN", "short-secret",
                  "AVATARIO_INTERNAL_TOKEN must be at least 16 characters"),
    "inference": ("AVATARIO_INFERENCE_DRAIN_DELAY_S", "soon",
                  "AVATARIO_INFERENCE_DRAIN_DELAY_S: Input should be a valid number"),
}


def start(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=clean, timeout=120,
                          capture_output=True, text=True)


def assert_one_line(proc: subprocess.CompletedProcess, service: str, expected: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"{service}: configuration error: "), lines[0]
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize("service", list(REQUIRED))
def test_missing_internal_token(service: str):
    proc = start([f"services.{service}"], REQUIRED[service])
    assert_one_line(proc, service, "AVATARIO_INTERNAL_TOKEN is required")


@pytest.mark.parametrize("service", list(MALFORMED))
def test_malformed_variable(service: str):
    var, value, expected = MALFORMED[service]
    proc = start([f"services.{service}"],
                 {"AVATARIO_INTERNAL_TOKEN": INTERNAL_TOKEN, **REQUIRED[service], var: value})
    assert_one_line(proc, service, expected)
    assert value not in proc.stderr  # values (they may be secrets) are never echoed


def test_migrate_command_names_a_bad_database_url():
    proc = start(["services.profile.migrate"],
                 {"AVATARIO_PROFILE_DATABASE_URL": "not a url at all"})
    assert_one_line(proc, "profile", "AVATARIO_PROFILE_DATABASE_URL must be a database URL")
