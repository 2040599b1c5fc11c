"""Every generated stub imports, and every service in the contracts is present."""

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROTOS = sorted((ROOT / "protos").rglob("*.proto"))


@pytest.mark.parametrize("proto", PROTOS, ids=lambda p: str(p.relative_to(ROOT / "protos")))
def test_stub_imports(proto):
    module = str(proto.relative_to(ROOT / "protos").with_suffix("")).replace("/", ".")
    pb2 = importlib.import_module(module + "_pb2")
    grpc_mod = importlib.import_module(module + "_pb2_grpc")
    assert (ROOT / "gen" / (str(proto.relative_to(ROOT / "protos").with_suffix("")) + "_pb2.pyi")).exists()
    for service in pb2.DESCRIPTOR.services_by_name:
        assert hasattr(grpc_mod, f"{service}Stub")
        assert hasattr(grpc_mod, f"add_{service}Servicer_to_server")


def test_contract_services():
    from avatario.analytics.v1 import analytics_pb2
    from avatario.gateway.v1 import gateway_pb2
    from avatario.inference.v1 import inference_pb2
    from avatario.profile.v1 import profile_pb2

    assert set(gateway_pb2.DESCRIPTOR.services_by_name) == {
        "AuthService", "FamilyService", "AvatarService", "DeviceService", "PlayService",
        "ReportService", "ChatService", "PrivacyService",
    }
    assert "AwardXp" in profile_pb2.DESCRIPTOR.services_by_name["ProfileService"].methods_by_name
    assert "SubmitGameSession" in analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].methods_by_name
    chat = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].methods_by_name["Chat"]
    assert chat.server_streaming
