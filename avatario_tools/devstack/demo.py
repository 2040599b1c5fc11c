"""The scripted demo, through the public API only (the devstack runner calls it):
a parent signs up and consents, adds a child, pairs the child's device; the
child plays weeks of sessions with mood check-ins; the parent reads the report
with its flags and asks the assistant a question whose answer streams in."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from avatario.common.v1 import family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.api import Api
from avatario_tools.cli.report_view import avatar_text, render_report
from avatario_tools.cli.simulate import plan, play

DEFAULT_QUESTION = (
    "Mia often forgets instructions with several steps, like 'put on your shoes, get your bag "
    "and wait by the door'. What could we practise at home this week?"
)
NICKNAME = "Mia"
WEAK_DOMAIN = "WORKING_MEMORY"


@dataclass
class DemoResult:
    email: str
    family_id: str
    child_id: str
    sessions: int
    checkins: int
    flags: list[str] = field(default_factory=list)
    reply: str = ""
    finish_reason: int = 0


def _step(console: Console, n: int, text: str) -> None:
    console.rule(f"[bold cyan]{n}. {text}", align="left")


async def run_demo(target: str, console: Console, *, sessions: int = 40, weeks: int = 8,
                   question: str = DEFAULT_QUESTION, tls_ca: Path | None = None,
                   seed: int | None = 7) -> DemoResult:
    async with Api(target, tls_ca=tls_ca, timeout=60) as api:
        _step(console, 1, "A parent signs up")
        email = f"demo-{secrets.token_hex(4)}@example.org"
        password = secrets.token_urlsafe(12)
        parent = await api.sign_up(email, password, "Demo Parent")
        console.print(f"signed up as [bold]{email}[/] · family {parent.family_id}")
        console.print(f"[dim](a local demo account; to look around afterwards: avatario --gateway "
                      f"{target} signin --email {email} --password {password})[/]")

        _step(console, 2, "Consent: child profile, gameplay analytics, chat assistant")
        consents = await api.call(api.family.RecordConsent, gw.RecordConsentRequest(
            scopes=[family_pb2.CONSENT_SCOPE_CHILD_PROFILE,
                    family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS,
                    family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT], policy_version="2024-01"))
        console.print(f"{len(consents.consents)} consents recorded (policy 2024-01)")

        _step(console, 3, "Add a child (a nickname and birth year-month only)")
        now = datetime.now(UTC)
        months = now.year * 12 + now.month - 1 - (7 * 12 + 4)
        child = (await api.call(api.family.CreateChild, gw.CreateChildRequest(
            nickname=NICKNAME, birth_year=months // 12, birth_month=months % 12 + 1))).child
        console.print(f"{child.nickname}, born {child.birth_year}-{child.birth_month:02d}")

        _step(console, 4, "Pair the child's tablet")
        code = await api.call(api.device.CreatePairingCode,
                              gw.CreatePairingCodeRequest(child_id=child.child_id))
        console.print(f"pairing code [bold]{code.code}[/] typed on the tablet ...")
        await api.redeem(code.code, "Mia's tablet")
        games = await api.as_device(child.child_id, api.play.ListGames, gw.ListGamesRequest())
        avatar = await api.as_device(child.child_id, api.avatar.GetAvatar, gw.GetAvatarRequest())
        console.print(f"paired · {len(games.games)} games available · avatar: "
                      f"{avatar_text(avatar.avatar)}")

        _step(console, 5, f"{NICKNAME} plays {sessions} sessions over {weeks} weeks")
        the_plan = plan(child.child_id, child.birth_year, child.birth_month, sessions=sessions,
                        weeks=weeks, weak_domain=WEAK_DOMAIN, seed=seed)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("sessions and mood check-ins", total=len(the_plan.events()))
            result = await play(api, child.child_id, the_plan, lambda _: progress.advance(task))
        avatar = await api.call(api.avatar.GetAvatar, gw.GetAvatarRequest(child_id=child.child_id))
        console.print(f"{result.sessions} sessions, {result.checkins} mood check-ins · avatar now "
                      f"{avatar_text(avatar.avatar)}")

        _step(console, 6, "The parent reads the report")
        report = (await api.call(api.report.GetChildReport, gw.GetChildReportRequest(
            child_id=child.child_id))).report
        render_report(console, report, child.nickname)

        _step(console, 7, "The parent asks the assistant")
        conv = (await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
            child_id=child.child_id, title="Following instructions"))).conversation
        console.print(f"[bold]parent:[/] {question}")
        console.print("[bold magenta]assistant:[/] ", end="")
        done = await api.ask(conv.conversation_id, question,
                              lambda t: console.print(t, end="", markup=False, highlight=False))
        console.print()
        stats = done.stats
        console.print(f"[dim]{stats.completion_tokens} tokens · "
                      f"{stats.tokens_per_second:.1f} tokens/s[/]")
        console.rule("[bold green]demo complete")
        return DemoResult(email, parent.family_id, child.child_id, result.sessions,
                          result.checkins, [f.headline for f in report.flags], done.text,
                          done.finish_reason)
