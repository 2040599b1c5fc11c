import grpc
import pytest
from google.rpc import code_pb2
from pydantic import ValidationError

from services.common import errors
from services.common.pagination import MAX_PAGE_SIZE, encode_token, parse_page
from services.common.settings import ServiceSettings
from services.common.status import (
    field_violations,
    internal_status,
    retry_delay_s,
    status_code,
    to_rpc_status,
)
from services.common.validation import Violations, normalize_email
from tests.helpers import INTERNAL_TOKEN


def test_invalid_argument_maps_to_bad_request():
    st = to_rpc_status(errors.InvalidArgument([("email", "bad"), ("birth_month", "range")]))
    assert st.code == code_pb2.INVALID_ARGUMENT
    assert field_violations(st) == [("email", "bad"), ("birth_month", "range")]


def test_resource_exhausted_carries_retry_info():
    st = to_rpc_status(errors.ResourceExhausted("slow down", retry_after_s=2.5))
    assert st.code == code_pb2.RESOURCE_EXHAUSTED
    assert retry_delay_s(st) == pytest.approx(2.5)


@pytest.mark.parametrize(
    "exc, code",
    [
        (errors.NotFound("child"), code_pb2.NOT_FOUND),
        (errors.AlreadyExists("dup"), code_pb2.ALREADY_EXISTS),
        (errors.FailedPrecondition("no consent", violation_type="CONSENT_REQUIRED"), code_pb2.FAILED_PRECONDITION),
        (errors.PermissionDenied("no"), code_pb2.PERMISSION_DENIED),
        (errors.Unauthenticated("who"), code_pb2.UNAUTHENTICATED),
        (errors.Unavailable("down"), code_pb2.UNAVAILABLE),
        (errors.DeadlineExceeded("late"), code_pb2.DEADLINE_EXCEEDED),
    ],
)
def test_codes(exc, code):
    assert to_rpc_status(exc).code == code
    assert status_code(exc).value[0] == code


def test_internal_status_is_generic():
    st = internal_status("rid-1")
    assert st.code == code_pb2.INTERNAL and "rid-1" in st.message and "Traceback" not in st.message


def test_violations_collects_everything():
    v = Violations()
    v.uuid("child_id", "nope")
    v.email("email", "a@b")
    v.text("nickname", "x" * 41, max_len=40)
    v.text("title", "two\nlines", max_len=40)
    v.int_range("birth_month", 13, 1, 12)
    v.enum("scope", 99, [1, 2, 3])
    v.enum("scope2", 0, [1])
    v.uuid("optional_id", "", required=False)
    with pytest.raises(errors.InvalidArgument) as ei:
        v.raise_if_any()
    assert ei.value.fields == ["child_id", "email", "nickname", "title", "birth_month", "scope", "scope2"]


def test_uuid_must_be_canonical():
    v = Violations()
    assert v.uuid("id", "0b6a3e52-8d0e-4a59-9d0b-2f1a8e7e1c11")
    assert not v.uuid("id", "0B6A3E528D0E4A599D0B2F1A8E7E1C11")


def test_normalize_email():
    assert normalize_email("  Ana@Example.COM ") == "ana@example.com"


def test_pagination_round_trip_and_bad_tokens():
    token = encode_token({"after": "x", "n": 3})
    page = parse_page(10, token)
    assert page.size == 10 and page.cursor == {"after": "x", "n": 3}
    assert parse_page(0, "").size == 50
    for size, token, field in [(-1, "", "page_size"), (MAX_PAGE_SIZE + 1, "", "page_size"),
                               (10, "%%%", "page_token"), (10, "bm90IGpzb24", "page_token"),
                               (10, "W10", "page_token"), (10, "x" * 600, "page_token")]:
        with pytest.raises(errors.InvalidArgument) as ei:
            parse_page(size, token)
        assert ei.value.fields == [field]


def test_settings_reject_short_token_and_partial_tls(tmp_path):
    with pytest.raises(ValidationError):
        ServiceSettings(internal_token="short")
    with pytest.raises(ValidationError):
        ServiceSettings(internal_token=INTERNAL_TOKEN, tls_cert_file=tmp_path / "a.crt")
    s = ServiceSettings(internal_token=INTERNAL_TOKEN)
    assert INTERNAL_TOKEN not in repr(s) and not s.mtls


def test_settings_from_environment(monkeypatch):
    class ProfileLike(ServiceSettings):
        model_config = {"env_prefix": "AVATARIO_DEMO_"}

    monkeypatch.setenv("AVATARIO_INTERNAL_TOKEN", INTERNAL_TOKEN)
    monkeypatch.setenv("AVATARIO_DEMO_PORT", "50099")
    s = ProfileLike()
    assert s.port == 50099 and s.internal_token.get_secret_value() == INTERNAL_TOKEN


def test_status_code_enum_sanity():
    assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT


def test_every_error_kind_maps_to_its_own_code_in_the_chassis_only():
    import ast
    import inspect

    from services.common.status import STATUS_CODES, error_for_code

    kinds = [k for k in vars(errors).values()
             if isinstance(k, type) and issubclass(k, errors.DomainError) and k is not errors.DomainError]
    assert set(kinds) == set(STATUS_CODES)
    assert len(set(STATUS_CODES.values())) == len(kinds)  # one kind per code
    for kind, code in STATUS_CODES.items():
        relayed = error_for_code(code, "from a backend")
        assert type(relayed) is kind and status_code(relayed) is code
        assert to_rpc_status(relayed).code == code.value[0]
    assert status_code(errors.DomainError("no kind")) is grpc.StatusCode.UNKNOWN
    assert error_for_code(grpc.StatusCode.INTERNAL, "bug") is None
    tree = ast.parse(inspect.getsource(errors))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"grpc", "google", "grpc_status"}


def test_a_relayed_invalid_argument_without_fields_keeps_its_code_and_message():
    from services.common.status import error_for_code

    exc = error_for_code(grpc.StatusCode.INVALID_ARGUMENT, "bad")
    st = to_rpc_status(exc)
    assert st.code == code_pb2.INVALID_ARGUMENT and st.message == "bad"
    assert field_violations(st) == []
    with pytest.raises(ValueError):
        errors.InvalidArgument([])  # domain code must name the field
