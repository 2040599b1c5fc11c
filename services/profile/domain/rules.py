"""Domain rules that need no database: children's ages, consent scopes, limits."""

from __future__ import annotations

import re
from datetime import datetime

from services.common.limits import CHAT_MESSAGE_MAX_CHARS
from services.common.timeutil import age_months
from services.common.validation import Violations
from services.profile.domain.enums import ConsentScope, FinishReason

MIN_AGE_YEARS = 2
MAX_AGE_YEARS = 14

NICKNAME_MAX = 40
DISPLAY_NAME_MAX = 80
TITLE_MAX = 120
DEVICE_NAME_MAX = 64
POLICY_VERSION_MAX = 32
SOURCE_ID_MAX = 128
REASON_MAX = 200
# A stored parent message: the contract's chat message limit, defined once.
USER_MESSAGE_MAX = CHAT_MESSAGE_MAX_CHARS
ASSISTANT_MESSAGE_MAX = 32_000
XP_AWARD_MIN = 1
XP_AWARD_MAX = 10_000

POLICY_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SOURCE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._/-]*$")

CONSENT_SCOPES = frozenset(ConsentScope)
# Child-data writes (children, avatars, XP, pairing) need this scope.
CHILD_DATA_SCOPE = ConsentScope.CONSENT_SCOPE_CHILD_PROFILE
# Conversation writes need this scope.
CHAT_SCOPE = ConsentScope.CONSENT_SCOPE_CHAT_ASSISTANT

# Parents per family (the owner included).
MAX_PARENTS = 4
# A conversation's turns: past this, start a new conversation (the default of the
# profile setting conversation_turn_limit).
CONVERSATION_TURN_LIMIT = 500

FINISH_REASONS = frozenset(FinishReason)
# Replies that ended early are stored, marked incomplete.
INCOMPLETE_REASONS = frozenset({FinishReason.FINISH_REASON_CANCELLED,
                                FinishReason.FINISH_REASON_ERROR})


def check_birth(v: Violations, year: int, month: int, at: datetime) -> bool:
    """Birth year-month of a child aged MIN..MAX years at `at`, not in the future.

    Adds violations naming birth_year / birth_month; returns True when valid.
    """
    ok = True
    if year == 0:
        v.add("birth_year", "is required")
        ok = False
    elif not 1900 <= year <= 2200:
        v.add("birth_year", "is not a plausible year")
        ok = False
    if month == 0:
        v.add("birth_month", "is required")
        ok = False
    elif not 1 <= month <= 12:
        v.add("birth_month", "must be between 1 and 12")
        ok = False
    if not ok:
        return False
    age = age_months(year, month, at)
    if age < 0:
        v.add("birth_year" if year > at.year else "birth_month", "must not be in the future")
        return False
    if age < MIN_AGE_YEARS * 12:
        v.add("birth_year", f"the child must be at least {MIN_AGE_YEARS} years old")
        return False
    if age // 12 > MAX_AGE_YEARS:
        v.add("birth_year", f"the child must be at most {MAX_AGE_YEARS} years old")
        return False
    return True


def is_complete(finish_reason: int) -> bool:
    return finish_reason not in INCOMPLETE_REASONS
