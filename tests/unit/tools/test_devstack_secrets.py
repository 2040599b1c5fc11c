"""`make run` gives profile its required token pepper, kept in var/ so paired
devices survive a restart (an older secrets file gains one, keeping the rest)."""

from __future__ import annotations

import json

from avatario_tools.devstack.__main__ import _inference_env, _secrets
from avatario_tools.devstack.stack import StackConfig, consecutive_ports, service_specs


def test_the_pepper_is_made_once_and_kept(tmp_path):
    first = _secrets(tmp_path)
    assert len(first["token_pepper"]) >= 16
    assert _secrets(tmp_path) == first
    assert (tmp_path / "devstack-secrets.json").stat().st_mode & 0o777 == 0o600


def test_an_older_secrets_file_gains_a_pepper_and_keeps_its_tokens(tmp_path):
    path = tmp_path / "devstack-secrets.json"
    old = {"internal_token": "kept-internal-token-0123456789",
           "jwt_signing_keys": json.dumps({"local-1": "kept-signing-key"}),
           "jwt_active_kid": "local-1"}
    path.write_text(json.dumps(old))
    sec = _secrets(tmp_path)
    assert {k: sec[k] for k in old} == old and len(sec["token_pepper"]) >= 16
    assert json.loads(path.read_text()) == sec
    assert _secrets(tmp_path)["token_pepper"] == sec["token_pepper"]


def test_profile_is_started_with_the_pepper(tmp_path):
    cfg = StackConfig(var=tmp_path, ports=consecutive_ports(50051),
                      metrics_ports=consecutive_ports(9101),
                      database_urls=StackConfig.sqlite(tmp_path), model=tmp_path / "m.pth",
                      token_pepper="a-local-pepper-0123456789")
    specs = service_specs(cfg)
    assert specs["profile"].env["AVATARIO_PROFILE_TOKEN_PEPPER"] == "a-local-pepper-0123456789"
    assert not any("PEPPER" in k for name in ("gateway", "analytics", "inference")
                   for k in specs[name].env)
    # Without one given (the e2e stack), a fresh random pepper is used.
    fresh = StackConfig(var=tmp_path, ports={}, metrics_ports={}, database_urls={},
                        model=tmp_path / "m.pth")
    assert len(fresh.token_pepper) >= 16


def test_the_demo_models_never_judge_safety_a_named_model_keeps_the_default(tmp_path):
    def inference_env(model_given: bool, replicas: int) -> list[dict[str, str]]:
        cfg = StackConfig(var=tmp_path, ports=consecutive_ports(50051, replicas),
                          metrics_ports=consecutive_ports(9101, replicas),
                          database_urls=StackConfig.sqlite(tmp_path), model=tmp_path / "m.pth",
                          inference_replicas=replicas, extra_env=_inference_env(model_given))
        specs = service_specs(cfg)
        return [specs[name].env for name in cfg.inference_names]

    key = "AVATARIO_INFERENCE_SAFETY_MODEL_OPINION"
    for replicas in (1, 2):
        assert all(env[key] == "off" for env in inference_env(False, replicas))
        assert not any(key in env for env in inference_env(True, replicas))
