"""The CLI's pieces without a network: the credentials file, sparklines, the
simulator-to-proto conversion, playing a plan (rate limits waited out), and the
report view."""

from __future__ import annotations

import stat
import types
import uuid

import grpc
import pytest
from rich.console import Console

from avatario.common.v1 import report_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli import simulate
from avatario_tools.cli.api import ApiError
from avatario_tools.cli.report_view import render_report, sparkline
from avatario_tools.cli.simulate import plan, play
from avatario_tools.cli.store import CredentialStore, config_dir


def test_config_dir_follows_xdg(tmp_path):
    assert config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "avatario"
    assert config_dir({"HOME": "/home/x"}) == config_dir({"HOME": "/home/x"})
    assert str(config_dir({"HOME": "/home/x"})) == "/home/x/.config/avatario"


def test_credentials_file_is_private_and_keeps_devices_apart(tmp_path):
    store = CredentialStore(tmp_path / "cfg" / "avatario" / "credentials.json")
    store.set_parent("gw:1", {"access_token": "a", "refresh_token": "r"})
    store.set_device("gw:1", "child-1", {"device_token": "dev_x"})
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert store.parent("gw:1")["refresh_token"] == "r"
    assert store.parent("gw:2") is None
    store.set_parent("gw:1", None)  # signing out keeps the child's device
    assert store.device("gw:1", "child-1") == {"device_token": "dev_x"}
    store.forget("gw:1")
    assert store.section("gw:1") == {}
    assert not list(store.path.parent.glob(".credentials-*"))  # no temp files left


def test_sparkline():
    assert sparkline([0, 50, 100]) == "▁▅█"
    assert sparkline([None, 10]) == "·▁"
    assert sparkline([]) == ""
    assert sparkline([5, 5], 5, 5) == "▁▁"


def test_simulated_plan_is_valid_public_protos():
    child_id = str(uuid.uuid4())
    p = plan(child_id, 2018, 3, sessions=12, weeks=3, weak_domain="working_memory", seed=3)
    assert 0 < len(p.sessions) <= 12
    events = p.events()
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    for s in p.sessions:
        assert s.child_id == child_id and s.trials and s.started_at.seconds
        uuid.UUID(s.session_id)
    for c in p.checkins:
        assert c.child_id == child_id and 1 <= c.intensity <= 5 and c.mood


def test_report_view_renders_empty_and_full_reports():
    console = Console(record=True, width=120)
    render_report(console, report_pb2.ChildReport(
        child_id="c", enough_data=False, not_enough_data_reason="Play 3 more sessions."), "Mia")
    full = report_pb2.ChildReport(child_id="c", enough_data=True)
    full.domain_scores.add(domain=1, area=1, enough_data=True, score=30, percentile=2,
                           session_count=9)
    full.domain_scores.add(domain=2, area=1, enough_data=False, note="Not enough data yet")
    for week in range(4):
        full.weekly_trends.add(domain=1, enough_data=week > 0, score=20 + week * 10)
        full.weekly_trends[-1].week_start.seconds = 1_700_000_000 + week * 604800
    flag = full.flags.add(level=report_pb2.FLAG_LEVEL_KEEP_AN_EYE, headline="Memory games",
                          explanation="Scores are below the age band.", session_count=9)
    flag.evidence.add(metric="span", value=3, z_score=-1.8)
    flag.tips.add(title="Play memory games", body="Short and fun.", when_to_seek_help="If...")
    render_report(console, full, "Mia")
    text = console.export_text()
    assert "Not enough data yet" in text and "Memory games" in text and "Play memory games" in text
    assert "never a diagnosis" in text


class _Device:
    """An Api stand-in: submissions answer from a script of errors, then succeed."""

    def __init__(self, errors):
        self.errors = list(errors)
        self.calls = []
        self.play = types.SimpleNamespace(SubmitGameSession="session", SubmitMoodCheckIn="checkin")

    async def as_device(self, child_id, fn, request):
        self.calls.append((fn, request))
        if self.errors:
            raise self.errors.pop(0)
        if fn == "session":
            return gw.SubmitGameSessionResponse(
                result={"session_id": request.session.session_id, "xp_awarded": 10})
        return gw.SubmitMoodCheckInResponse()


@pytest.fixture
def slept(monkeypatch):
    waits = []

    async def sleep(delay):
        waits.append(delay)

    monkeypatch.setattr(simulate.asyncio, "sleep", sleep)
    return waits


def _busy(delay=0.5):
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many requests", retry_after=delay)


async def test_play_waits_out_the_rate_limit_and_resubmits_the_same_session(slept):
    the_plan = plan(str(uuid.uuid4()), 2018, 3, sessions=3, weeks=1, seed=1)
    api = _Device([_busy(0.5), _busy(1.0)])
    result = await play(api, "child", the_plan)
    assert slept == [0.5, 1.0]
    assert result.sessions == len(the_plan.sessions) and result.checkins == len(the_plan.checkins)
    assert result.xp == 10 * len(the_plan.sessions)
    assert len(api.calls) == len(the_plan.events()) + 2
    assert api.calls[0] == api.calls[1] == api.calls[2]  # the same request, replayed


@pytest.mark.parametrize("error", [
    ApiError(grpc.StatusCode.INVALID_ARGUMENT, "bad session", [("session.trials", "empty")]),
    ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full"),  # no RetryInfo: not retried
])
async def test_play_does_not_retry_other_refusals(slept, error):
    the_plan = plan(str(uuid.uuid4()), 2018, 3, sessions=2, weeks=1, seed=2)
    with pytest.raises(ApiError) as raised:
        await play(_Device([error]), "child", the_plan)
    assert raised.value is error and slept == []


async def test_play_gives_up_after_a_bounded_number_of_waits(slept):
    the_plan = plan(str(uuid.uuid4()), 2018, 3, sessions=1, weeks=1, seed=3)
    api = _Device([_busy() for _ in range(simulate.MAX_ATTEMPTS)])
    with pytest.raises(ApiError) as raised:
        await play(api, "child", the_plan)
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(slept) == simulate.MAX_ATTEMPTS - 1 and len(api.calls) == simulate.MAX_ATTEMPTS
