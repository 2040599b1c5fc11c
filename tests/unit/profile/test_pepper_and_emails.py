"""The token pepper is required, and emails refuse control and format characters."""

from __future__ import annotations

import pydantic
import pytest

from avatario.profile.v1 import profile_pb2 as pb
from services.common.errors import InvalidArgument
from services.common.validation import normalize_email, parse_id_list
from services.profile import validate
from services.profile.settings import ProfileSettings
from tests.helpers import INTERNAL_TOKEN, TOKEN_PEPPER, new_id


@pytest.fixture(autouse=True)
def _no_profile_env(monkeypatch):
    monkeypatch.delenv("AVATARIO_PROFILE_TOKEN_PEPPER", raising=False)


def settings(**kw) -> ProfileSettings:
    return ProfileSettings(internal_token=INTERNAL_TOKEN, **kw)


def test_token_pepper_is_required_and_named_by_its_variable():
    with pytest.raises(pydantic.ValidationError) as missing:
        settings()
    assert "AVATARIO_PROFILE_TOKEN_PEPPER" in str(missing.value)
    with pytest.raises(pydantic.ValidationError) as empty:
        settings(token_pepper="")
    assert "AVATARIO_PROFILE_TOKEN_PEPPER" in str(empty.value)


def test_a_short_pepper_is_refused_without_echoing_it():
    with pytest.raises(pydantic.ValidationError) as short:
        settings(token_pepper="short-pepper-15")
    assert "at least 16" in str(short.value)
    assert "short-pepper-15" not in str(short.value)


def test_pepper_from_the_environment_stays_secret(monkeypatch):
    monkeypatch.setenv("AVATARIO_PROFILE_TOKEN_PEPPER", TOKEN_PEPPER)
    s = settings()
    assert s.token_pepper.get_secret_value() == TOKEN_PEPPER
    assert TOKEN_PEPPER not in repr(s) and TOKEN_PEPPER not in str(s.model_dump())


def test_argon2_pool_settings_have_small_bounded_defaults():
    s = settings(token_pepper=TOKEN_PEPPER)
    assert (s.argon2_max_concurrency, s.argon2_max_waiting) == (2, 16)
    assert s.argon2_retry_after_s > 0
    for bad in ({"argon2_max_concurrency": 0}, {"argon2_max_waiting": -1},
                {"argon2_retry_after_s": 0}):
        with pytest.raises(pydantic.ValidationError):
            settings(token_pepper=TOKEN_PEPPER, **bad)


# Cc: C0 controls, DEL, C1 controls. Cf: zero-width space/joiners, bidi controls,
# BOM, soft hyphen, word joiner, invisible separators, a tag character.
CONTROL = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9f"]
FORMAT = ["\u200b", "\u200c", "\u200d", "\u200e", "\u202e", "\u2066", "\ufeff", "\u00ad",
          "\u2060", "\u2063", "\U000e0041"]


def _email_fields(check, email: str) -> list[str]:
    with pytest.raises(InvalidArgument) as err:
        check(email)
    return err.value.fields


@pytest.mark.parametrize("char", CONTROL + FORMAT,
                         ids=[f"U+{ord(c):04X}" for c in CONTROL + FORMAT])
@pytest.mark.parametrize("where", ["local", "domain", "end"])
def test_emails_with_control_or_format_characters_are_invalid(char, where):
    email = {"local": f"pa{char}rent@example.org", "domain": f"parent@exa{char}mple.org",
             "end": f"parent@example.org{char}"}[where]
    if where == "end" and char.isspace():
        # Surrounding whitespace (NEL is whitespace to str.strip) is trimmed, as
        # the stored address is: what is checked and stored has none.
        assert normalize_email(email) == "parent@example.org"
        return
    assert _email_fields(lambda e: validate.create_parent(pb.CreateParentRequest(
        email=e, password="a fine passphrase", display_name="P")), email) == ["email"]
    assert _email_fields(lambda e: validate.authenticate(pb.AuthenticateRequest(
        email=e, password="whatever")), email) == ["email"]


@pytest.mark.parametrize("email", ["parent@example.org", "  Parent@Example.org ",
                                   "élodie.müller@exämple.de", "名前@例え.jp"])
def test_ordinary_and_international_emails_still_pass(email):
    validate.create_parent(pb.CreateParentRequest(
        email=email, password="a fine passphrase", display_name="P"))
    validate.authenticate(pb.AuthenticateRequest(email=email, password="whatever"))


def test_id_lists_from_lines_or_json():
    a, b = new_id(), new_id()
    assert parse_id_list(f"# erased\n{a}\n\n{b}  # second\n{a}\n") == [a, b]
    assert parse_id_list(f'["{b}", "{a}"]') == [b, a]
    assert parse_id_list(f'[{{"family_id": "{a}", "erased_at": "2026-01-01T00:00:00+00:00"}}]'
                         ) == [a]
    assert parse_id_list("") == []
    for bad, where in ((f"{a}\nnot-an-id\n", "line 2"), (f'["{a}", 7]', "item 1"),
                       (a.upper(), "line 1")):
        with pytest.raises(ValueError, match=where):
            parse_id_list(bad)
