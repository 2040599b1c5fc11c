"""A missing or bad setting becomes one line naming the environment variable, never a value."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from services.common.settings import ServiceSettings, env_name, load_settings, settings_problem
from services.gateway.settings import GatewaySettings
from services.inference.settings import InferenceSettings
from services.profile.settings import ProfileDatabaseSettings, ProfileSettings
from tests.helpers import INTERNAL_TOKEN, TOKEN_PEPPER

KEYS = '{"k1": "' + "s" * 40 + '"}'


@pytest.fixture
def env(monkeypatch):
    """A clean AVATARIO_* environment; returns a setter."""
    for key in list(os.environ):
        if key.startswith("AVATARIO_"):
            monkeypatch.delenv(key)

    def set_env(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
    return set_env


def problem(cls, **values) -> str:
    with pytest.raises(ValidationError) as ei:
        cls(**values)
    return settings_problem(cls, ei.value)


def test_env_names_follow_prefix_and_alias():
    assert env_name(ProfileSettings, "token_pepper") == "AVATARIO_PROFILE_TOKEN_PEPPER"
    assert env_name(InferenceSettings, "internal_token") == "AVATARIO_INTERNAL_TOKEN"
    assert env_name(InferenceSettings, "AVATARIO_INTERNAL_TOKEN") == "AVATARIO_INTERNAL_TOKEN"
    assert env_name(GatewaySettings, "drain_delay_s") == "AVATARIO_GATEWAY_DRAIN_DELAY_S"


def test_missing_required_variables_are_named(env):
    assert problem(InferenceSettings) == (
        "AVATARIO_INTERNAL_TOKEN is required; AVATARIO_INFERENCE_MODEL_PATH is required")
    env(AVATARIO_INTERNAL_TOKEN=INTERNAL_TOKEN)
    assert problem(GatewaySettings) == (
        "AVATARIO_GATEWAY_JWT_SIGNING_KEYS is required; AVATARIO_GATEWAY_JWT_ACTIVE_KID is required")
    # A validator's own "is required" message keeps its hint.
    assert problem(ProfileSettings).startswith("AVATARIO_PROFILE_TOKEN_PEPPER is required: set ")


def test_bad_values_are_named_without_the_value(env):
    env(AVATARIO_INTERNAL_TOKEN="short-secret", AVATARIO_INFERENCE_MODEL_PATH="/m.pth",
        AVATARIO_INFERENCE_PORT="fifty", AVATARIO_INFERENCE_DRAIN_DELAY_S="-1")
    line = problem(InferenceSettings)
    assert "AVATARIO_INTERNAL_TOKEN must be at least 16 characters" in line
    assert "AVATARIO_INFERENCE_PORT: Input should be a valid integer" in line
    assert "AVATARIO_INFERENCE_DRAIN_DELAY_S: Input should be greater than or equal to 0" in line
    assert "short-secret" not in line and "fifty" not in line and "\n" not in line

    env(AVATARIO_PROFILE_DATABASE_URL="postgres://admin:hunter2-secret@db/profile")
    line = problem(ProfileDatabaseSettings)
    assert line.startswith("AVATARIO_PROFILE_DATABASE_URL must be a database URL postgresql+asyncpg")
    assert "hunter2" not in line


def test_checks_across_fields_name_the_variables(env, tmp_path):
    env(AVATARIO_INTERNAL_TOKEN=INTERNAL_TOKEN, AVATARIO_GATEWAY_JWT_SIGNING_KEYS=KEYS,
        AVATARIO_GATEWAY_JWT_ACTIVE_KID="k2")
    assert problem(GatewaySettings) == (
        "AVATARIO_GATEWAY_JWT_ACTIVE_KID must name one of AVATARIO_GATEWAY_JWT_SIGNING_KEYS")
    env(AVATARIO_PROFILE_TOKEN_PEPPER=TOKEN_PEPPER,
        AVATARIO_PROFILE_TLS_CERT_FILE=str(tmp_path / "a.crt"))
    assert problem(ProfileSettings) == ("AVATARIO_PROFILE_TLS_CERT_FILE, AVATARIO_PROFILE_TLS_KEY_FILE"
                                        " and AVATARIO_PROFILE_TLS_CA_FILE go together")


def test_load_settings_exits_2_with_one_line(env, capsys):
    with pytest.raises(SystemExit) as ei:
        load_settings(ServiceSettings, service="demo")
    assert ei.value.code == 2
    assert capsys.readouterr().err == "demo: configuration error: AVATARIO_INTERNAL_TOKEN is required\n"
    env(AVATARIO_INTERNAL_TOKEN=INTERNAL_TOKEN)
    s = load_settings(ServiceSettings, service="demo", drain_delay_s=2.5)
    assert s.drain_delay_s == 2.5 and s.shutdown_grace_s == 10.0
