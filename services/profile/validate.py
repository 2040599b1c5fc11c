"""Request validation: one function per request, every violation named by its
proto field. Raises services.common.errors.InvalidArgument.

Checks that need the database (existence, consent, ownership, the age of a
child at creation for updates) live in the repository functions.
"""

from __future__ import annotations

from datetime import datetime

from avatario.profile.v1 import profile_pb2 as pb
from services.common.validation import Violations
from services.profile import passwords, tokens
from services.profile.domain import catalog, rules

EMAIL_PASSWORD_MAX = passwords.MAX_LEN


def _done(v: Violations) -> None:
    v.raise_if_any()


def _family(v: Violations, req) -> None:
    v.uuid("family_id", req.family_id)


def _pattern(v: Violations, field: str, value: str, regex, max_len: int) -> None:
    if not value:
        v.add(field, "is required")
    elif len(value) > max_len:
        v.add(field, f"must be at most {max_len} characters")
    elif not regex.fullmatch(value):
        v.add(field, "contains characters that are not allowed")


def _login_password(v: Violations, field: str, value: str) -> None:
    # No policy on sign-in (it may change), only bounds.
    if not value:
        v.add(field, "is required")
    elif len(value) > EMAIL_PASSWORD_MAX:
        v.add(field, f"must be at most {EMAIL_PASSWORD_MAX} characters")


def family_only(req) -> None:
    v = Violations()
    _family(v, req)
    _done(v)


def family_and(req, *id_fields: str, optional: tuple[str, ...] = ()) -> None:
    """family_id plus the named UUID fields (required) and optional UUID fields."""
    v = Violations()
    _family(v, req)
    for name in id_fields:
        v.uuid(name, getattr(req, name))
    for name in optional:
        v.uuid(name, getattr(req, name), required=False)
    _done(v)


def _code(v: Violations, field: str, value: str, *, required: bool = True) -> str | None:
    """A typed pairing or invite code, normalized; None (with a violation) if it cannot be one."""
    if not value:
        if required:
            v.add(field, "is required")
        return None
    code = tokens.normalize_code(value)
    if code is None:
        v.add(field, f"must be {tokens.CODE_LEN} letters and digits")
    return code


def create_parent(req: pb.CreateParentRequest) -> str | None:
    """Returns the normalized invite code, if one was given."""
    v = Violations()
    v.email("email", req.email.strip())
    passwords.check_policy(v, "password", req.password)
    v.text("display_name", req.display_name, max_len=rules.DISPLAY_NAME_MAX)
    code = _code(v, "invite_code", req.invite_code, required=False)
    _done(v)
    return code


def join_family(req: pb.JoinFamilyRequest) -> str:
    """Returns the normalized invite code."""
    v = Violations()
    _family(v, req)
    v.uuid("parent_id", req.parent_id)
    code = _code(v, "code", req.code)
    _done(v)
    assert code is not None
    return code


def authenticate(req: pb.AuthenticateRequest) -> None:
    v = Violations()
    v.email("email", req.email.strip())
    _login_password(v, "password", req.password)
    _done(v)


def change_password(req: pb.ChangePasswordRequest) -> None:
    v = Violations()
    _family(v, req)
    v.uuid("parent_id", req.parent_id)
    _login_password(v, "current_password", req.current_password)
    if passwords.check_policy(v, "new_password", req.new_password) and (
        req.new_password == req.current_password
    ):
        v.add("new_password", "must differ from the current password")
    _done(v)


def record_consent(req: pb.RecordConsentRequest) -> list[int]:
    v = Violations()
    _family(v, req)
    v.uuid("parent_id", req.parent_id)
    scopes = list(req.scopes)
    if not scopes:
        v.add("scopes", "is required")
    seen: set[int] = set()
    for i, scope in enumerate(scopes):
        if v.enum(f"scopes[{i}]", scope, rules.CONSENT_SCOPES):
            if scope in seen:
                v.add(f"scopes[{i}]", "is listed twice")
            seen.add(scope)
    _pattern(v, "policy_version", req.policy_version, rules.POLICY_VERSION_RE,
             rules.POLICY_VERSION_MAX)
    _done(v)
    return scopes


def withdraw_consent(req: pb.WithdrawConsentRequest) -> None:
    v = Violations()
    _family(v, req)
    v.uuid("parent_id", req.parent_id)
    v.enum("scope", req.scope, rules.CONSENT_SCOPES)
    _done(v)


def create_child(req: pb.CreateChildRequest, now: datetime) -> None:
    v = Violations()
    _family(v, req)
    v.uuid("parent_id", req.parent_id)
    v.text("nickname", req.nickname, max_len=rules.NICKNAME_MAX)
    rules.check_birth(v, req.birth_year, req.birth_month, now)
    _done(v)


def update_child(req: pb.UpdateChildRequest) -> None:
    """Shape only; the birth date is checked against the stored child in the repository."""
    v = Violations()
    _family(v, req)
    v.uuid("child_id", req.child_id)
    if req.parent_id:
        v.uuid("parent_id", req.parent_id)
    if req.HasField("nickname"):
        v.text("nickname", req.nickname, max_len=rules.NICKNAME_MAX)
    if req.HasField("birth_year") and not 1900 <= req.birth_year <= 2200:
        v.add("birth_year", "is not a plausible year")
    if req.HasField("birth_month") and not 1 <= req.birth_month <= 12:
        v.add("birth_month", "must be between 1 and 12")
    _done(v)


def customize_avatar(req: pb.CustomizeAvatarRequest) -> None:
    v = Violations()
    _family(v, req)
    v.uuid("child_id", req.child_id)
    if len(req.item_ids) > catalog.MAX_ITEMS:
        v.add("item_ids", f"must hold at most {catalog.MAX_ITEMS} items")
    for i, item_id in enumerate(req.item_ids[: catalog.MAX_ITEMS]):
        if not item_id:
            v.add(f"item_ids[{i}]", "is required")
        elif len(item_id) > catalog.ITEM_ID_MAX_LEN:
            v.add(f"item_ids[{i}]", f"must be at most {catalog.ITEM_ID_MAX_LEN} characters")
    _done(v)


def award_xp(req: pb.AwardXpRequest) -> None:
    v = Violations()
    _family(v, req)
    v.uuid("child_id", req.child_id)
    v.int_range("amount", req.amount, rules.XP_AWARD_MIN, rules.XP_AWARD_MAX)
    _pattern(v, "source_id", req.source_id, rules.SOURCE_ID_RE, rules.SOURCE_ID_MAX)
    v.text("reason", req.reason, min_len=0, max_len=rules.REASON_MAX)
    _done(v)


def redeem_pairing_code(req: pb.RedeemPairingCodeRequest) -> str:
    """Returns the normalized code."""
    v = Violations()
    code = _code(v, "code", req.code)
    v.text("device_name", req.device_name, max_len=rules.DEVICE_NAME_MAX)
    _done(v)
    assert code is not None
    return code


def authenticate_device(req: pb.AuthenticateDeviceRequest) -> None:
    v = Violations()
    if not req.device_token:
        v.add("device_token", "is required")
    elif len(req.device_token) > tokens.DEVICE_TOKEN_MAX_LEN:
        v.add("device_token", f"must be at most {tokens.DEVICE_TOKEN_MAX_LEN} characters")
    _done(v)


def create_conversation(req: pb.CreateConversationRequest) -> None:
    v = Violations()
    _family(v, req)
    v.uuid("child_id", req.child_id)
    v.uuid("parent_id", req.parent_id, required=False)
    v.text("title", req.title, min_len=0, max_len=rules.TITLE_MAX)
    _done(v)


def append_turn(req: pb.AppendTurnRequest) -> None:
    v = Violations()
    _family(v, req)
    v.uuid("conversation_id", req.conversation_id)
    v.uuid("turn_id", req.turn_id)
    v.uuid("parent_id", req.parent_id, required=False)
    v.text("user_message", req.user_message, max_len=rules.USER_MESSAGE_MAX, multiline=True)
    if v.enum("finish_reason", req.finish_reason, rules.FINISH_REASONS):
        # A reply cut short may be empty; a finished one may not.
        min_len = 0 if not rules.is_complete(req.finish_reason) else 1
        v.text("assistant_message", req.assistant_message, min_len=min_len,
               max_len=rules.ASSISTANT_MESSAGE_MAX, multiline=True)
    _done(v)
