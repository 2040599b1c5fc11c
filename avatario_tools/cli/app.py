"""`avatario`: the command-line client of the public API (Typer + rich).

    avatario signup | signin | signout | whoami
    avatario consent grant|list|withdraw     avatario child add|list|show
    avatario pair code <child> | pair redeem <code>
    avatario avatar show|items|wear          avatario report <child>
    avatario chat <child> [--conversation ID] [--message TEXT]
    avatario simulate <child> --sessions N --weeks W [--weak-domain D]
    avatario export [--out FILE]             avatario erase

Tokens live in $XDG_CONFIG_HOME/avatario/credentials.json (0600). The gateway
address comes from --gateway or AVATARIO_CLI_GATEWAY; --tls-ca trusts a CA.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.progress import Progress
from rich.prompt import Prompt
from rich.table import Table

from avatario.common.v1 import chat_pb2, family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.api import Api, ApiError, NotSignedIn
from avatario_tools.cli.report_view import avatar_text, render_report
from avatario_tools.cli.store import CredentialStore

console = Console()
err_console = Console(stderr=True)
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
consent_app = typer.Typer(no_args_is_help=True, help="Parental consent records.")
child_app = typer.Typer(no_args_is_help=True, help="Children in the family.")
pair_app = typer.Typer(no_args_is_help=True, help="Pair a child's device.")
avatar_app = typer.Typer(no_args_is_help=True, help="Avatars and the item catalog.")
app.add_typer(consent_app, name="consent")
app.add_typer(child_app, name="child")
app.add_typer(pair_app, name="pair")
app.add_typer(avatar_app, name="avatar")

SCOPES = {
    "child-profile": family_pb2.CONSENT_SCOPE_CHILD_PROFILE,
    "gameplay-analytics": family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS,
    "chat-assistant": family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT,
}
SCOPE_NAMES = {v: k for k, v in SCOPES.items()}
INCOMPLETE = (chat_pb2.FINISH_REASON_CANCELLED, chat_pb2.FINISH_REASON_ERROR)


@app.callback()
def _options(
    ctx: typer.Context,
    gateway: str = typer.Option("127.0.0.1:50051", envvar="AVATARIO_CLI_GATEWAY",
                                help="Gateway address host:port."),
    tls_ca: Path | None = typer.Option(None, envvar="AVATARIO_CLI_TLS_CA", exists=True,
                                       help="CA certificate (PEM) to reach a TLS gateway."),
    credentials: Path | None = typer.Option(None, envvar="AVATARIO_CLI_CREDENTIALS", hidden=True,
                                            help="Credentials file (default: per-user config)."),
) -> None:
    ctx.obj = {"gateway": gateway, "tls_ca": tls_ca, "store": CredentialStore(credentials)}


def run(ctx: typer.Context, body: Callable[[Api], Awaitable[Any]]) -> Any:
    """Run `body(api)` against the gateway; print errors readably (exit code 1)."""
    obj = ctx.find_root().obj

    async def main() -> Any:
        async with Api(obj["gateway"], tls_ca=obj["tls_ca"], store=obj["store"]) as api:
            return await body(api)

    try:
        return asyncio.run(main())
    except ApiError as exc:
        err_console.print(f"[bold red]error[/] {exc.describe()}")
        if exc.code == grpc.StatusCode.UNAVAILABLE:
            err_console.print(f"(is the gateway running at {obj['gateway']}?)")
    except NotSignedIn as exc:
        err_console.print(f"[bold red]error[/] {exc}")
    raise typer.Exit(1)


def ts(value) -> str:
    return value.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M UTC") if value.seconds else "-"


# -- account -------------------------------------------------------------------------


@app.command()
def signup(ctx: typer.Context,
           email: str = typer.Option(..., prompt=True),
           name: str = typer.Option("Parent", prompt="Display name"),
           password: str = typer.Option(..., prompt=True, hide_input=True,
                                        confirmation_prompt=True)) -> None:
    """Create a parent account and sign in."""
    parent = run(ctx, lambda api: api.sign_up(email, password, name))
    console.print(f"[green]signed up[/] as {parent.email} (family {parent.family_id})")
    console.print("Next: [bold]avatario consent grant[/] then [bold]avatario child add[/].")


@app.command()
def signin(ctx: typer.Context, email: str = typer.Option(..., prompt=True),
           password: str = typer.Option(..., prompt=True, hide_input=True)) -> None:
    """Sign in as a parent."""
    parent = run(ctx, lambda api: api.sign_in(email, password))
    console.print(f"[green]signed in[/] as {parent.email}")


@app.command()
def signout(ctx: typer.Context) -> None:
    """End this sign-in (its refresh and access tokens stop working)."""
    run(ctx, lambda api: api.sign_out())
    console.print("signed out")


@app.command()
def whoami(ctx: typer.Context) -> None:
    """Show the signed-in parent."""
    async def body(api: Api):
        return (await api.call(api.family.GetAccount, gw.GetAccountRequest())).parent

    parent = run(ctx, body)
    table = Table(show_header=False)
    for k, v in (("email", parent.email), ("name", parent.display_name),
                 ("parent id", parent.parent_id), ("family id", parent.family_id),
                 ("gateway", ctx.find_root().obj["gateway"]), ("since", ts(parent.created_at))):
        table.add_row(k, v)
    console.print(table)


# -- consent -------------------------------------------------------------------------


@consent_app.command("grant")
def consent_grant(ctx: typer.Context,
                  scopes: list[str] = typer.Argument(None, help=f"Any of {', '.join(SCOPES)}; "
                                                                "default: all."),
                  policy_version: str = typer.Option("2024-01", help="Privacy policy version.")):
    """Record consent for scopes."""
    chosen = scopes or list(SCOPES)
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise typer.BadParameter(f"unknown scope(s) {unknown}; use {list(SCOPES)}")
    resp = run(ctx, lambda api: api.call(api.family.RecordConsent, gw.RecordConsentRequest(
        scopes=[SCOPES[s] for s in chosen], policy_version=policy_version)))
    for c in resp.consents:
        console.print(f"[green]granted[/] {SCOPE_NAMES.get(c.scope, c.scope)} "
                      f"(policy {c.policy_version})")


@consent_app.command("list")
def consent_list(ctx: typer.Context, all_: bool = typer.Option(False, "--all",
                                                               help="Include withdrawn.")):
    """List consent records."""
    resp = run(ctx, lambda api: api.call(api.family.ListConsents, gw.ListConsentsRequest(
        include_withdrawn=all_)))
    table = Table("Scope", "Policy", "Granted", "Withdrawn")
    for c in resp.consents:
        table.add_row(SCOPE_NAMES.get(c.scope, str(c.scope)), c.policy_version, ts(c.granted_at),
                      ts(c.withdrawn_at))
    console.print(table)


@consent_app.command("withdraw")
def consent_withdraw(ctx: typer.Context, scope: str = typer.Argument(..., help="Scope name.")):
    """Withdraw consent for one scope."""
    if scope not in SCOPES:
        raise typer.BadParameter(f"use one of {list(SCOPES)}")
    run(ctx, lambda api: api.call(api.family.WithdrawConsent,
                                  gw.WithdrawConsentRequest(scope=SCOPES[scope])))
    console.print(f"withdrew {scope}")


# -- children ------------------------------------------------------------------------


@child_app.command("add")
def child_add(ctx: typer.Context, nickname: str,
              birth: str = typer.Option(..., help="Birth year-month, e.g. 2018-04.")):
    """Add a child (a nickname and birth year-month only)."""
    try:
        year, month = (int(x) for x in birth.split("-"))
    except ValueError:
        raise typer.BadParameter("use YYYY-MM, e.g. 2018-04") from None
    child = run(ctx, lambda api: api.call(api.family.CreateChild, gw.CreateChildRequest(
        nickname=nickname, birth_year=year, birth_month=month))).child
    console.print(f"[green]added[/] {child.nickname} ({child.child_id})")


@child_app.command("list")
def child_list(ctx: typer.Context):
    """List the family's children."""
    children = run(ctx, lambda api: api.children())
    table = Table("Nickname", "Born", "Child id")
    for c in children:
        table.add_row(c.nickname, f"{c.birth_year}-{c.birth_month:02d}", c.child_id)
    console.print(table)


@child_app.command("show")
def child_show(ctx: typer.Context, child: str = typer.Argument(..., help="Id or nickname.")):
    """Show a child and its avatar."""
    async def body(api: Api):
        c = await api.resolve_child(child)
        avatar = await api.call(api.avatar.GetAvatar, gw.GetAvatarRequest(child_id=c.child_id))
        return c, avatar.avatar

    c, avatar = run(ctx, body)
    console.print(f"[bold]{c.nickname}[/] born {c.birth_year}-{c.birth_month:02d} ({c.child_id})")
    console.print(avatar_text(avatar))


# -- devices -------------------------------------------------------------------------


@pair_app.command("code")
def pair_code(ctx: typer.Context, child: str = typer.Argument(..., help="Id or nickname.")):
    """Create a one-time pairing code for a child's device."""
    async def body(api: Api):
        c = await api.resolve_child(child)
        return await api.call(api.device.CreatePairingCode,
                              gw.CreatePairingCodeRequest(child_id=c.child_id))

    resp = run(ctx, body)
    console.print(f"pairing code: [bold]{resp.code}[/] (valid until {ts(resp.expires_at)})")
    console.print("On the child's device: [bold]avatario pair redeem CODE[/]")


@pair_app.command("redeem")
def pair_redeem(ctx: typer.Context, code: str,
                name: str = typer.Option("avatario-cli", help="Device name.")):
    """Pair this machine as the child's device (stores the device token)."""
    child_id = run(ctx, lambda api: api.redeem(code, name))
    console.print(f"[green]paired[/] as a device of child {child_id}")


# -- avatar --------------------------------------------------------------------------


@avatar_app.command("items")
def avatar_items(ctx: typer.Context):
    """The avatar item catalog."""
    resp = run(ctx, lambda api: api.call(api.avatar.ListAvatarItems,
                                         gw.ListAvatarItemsRequest(page_size=200)))
    table = Table("Item", "Slot", "Name", "Unlocks at level")
    for i in resp.items:
        table.add_row(i.item_id, str(i.slot), i.name, str(i.unlock_level))
    console.print(table)


@avatar_app.command("show")
def avatar_show(ctx: typer.Context, child: str,
                device: bool = typer.Option(False, help="Ask as the child's paired device.")):
    """Show a child's avatar."""
    async def body(api: Api):
        if device:  # `child` is the child id the device was paired for
            return await api.as_device(child, api.avatar.GetAvatar, gw.GetAvatarRequest())
        c = await api.resolve_child(child)
        return await api.call(api.avatar.GetAvatar, gw.GetAvatarRequest(child_id=c.child_id))

    console.print(avatar_text(run(ctx, body).avatar))


@avatar_app.command("wear")
def avatar_wear(ctx: typer.Context, child: str, items: list[str],
                device: bool = typer.Option(False, help="Act as the child's paired device.")):
    """Set the full set of items a child's avatar wears."""
    async def body(api: Api):
        if device:
            return await api.as_device(child, api.avatar.CustomizeAvatar,
                                       gw.CustomizeAvatarRequest(item_ids=items))
        c = await api.resolve_child(child)
        return await api.call(api.avatar.CustomizeAvatar, gw.CustomizeAvatarRequest(
            child_id=c.child_id, item_ids=items))

    console.print(avatar_text(run(ctx, body).avatar))


# -- report, chat, simulate -------------------------------------------------------------


@app.command()
def report(ctx: typer.Context, child: str, as_json: bool = typer.Option(False, "--json")):
    """A child's progress report: scores, trends, play time, flags and tips."""
    async def body(api: Api):
        c = await api.resolve_child(child)
        r = await api.call(api.report.GetChildReport, gw.GetChildReportRequest(
            child_id=c.child_id))
        return c, r.report

    c, rep = run(ctx, body)
    if as_json:
        console.print_json(json.dumps(MessageToDict(rep)))
    else:
        render_report(console, rep, c.nickname)


@app.command()
def chat(ctx: typer.Context, child: str,
         conversation: str | None = typer.Option(None, help="Continue this conversation."),
         message: str | None = typer.Option(None, "--message", "-m", help="Ask once and exit."),
         max_tokens: int = typer.Option(0, help="0: the server's default.")):
    """Ask the assistant about a child; the answer streams as it is written."""
    async def body(api: Api):
        conv_id = conversation
        if conv_id is None:
            c = await api.resolve_child(child)
            conv_id = (await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
                child_id=c.child_id, title=(message or "Chat")[:100]))).conversation.conversation_id
            console.print(f"[dim]conversation {conv_id}[/]")

        async def ask(question: str) -> None:
            console.print("[bold magenta]assistant[/] ", end="")
            done = await api.ask(conv_id, question,
                                  lambda t: console.print(t, end="", markup=False, highlight=False),
                                  max_tokens=max_tokens)
            console.print()
            if done.finish_reason in INCOMPLETE:
                console.print("[yellow](the reply ended early; it is stored as incomplete)[/]")

        if message:
            await ask(message)
            return
        console.print("[dim]/quit to leave[/]")
        while True:
            question = Prompt.ask("[bold]you[/]", default="").strip()
            if not question or question in ("/quit", "/exit"):
                return
            await ask(question)

    run(ctx, body)


@app.command()
def simulate(ctx: typer.Context, child: str,
             sessions: int = typer.Option(40, min=1, max=2000),
             weeks: int = typer.Option(8, min=1, max=52),
             weak_domain: str | None = typer.Option(
                 None, help="Give the child a persistent weakness, e.g. working_memory."),
             low_mood: bool = typer.Option(False, help="Mostly low mood check-ins."),
             seed: int | None = typer.Option(None)):
    """Play N realistic game sessions over simulated weeks, as the child's device."""
    from avatario_tools.cli.simulate import plan, play

    async def body(api: Api):
        c = await api.resolve_child(child)
        if api.device_token(c.child_id) is None:
            await api.pair(c.child_id, "avatario-simulator")
            console.print("[dim]paired a simulator device[/]")
        the_plan = plan(c.child_id, c.birth_year, c.birth_month, sessions=sessions, weeks=weeks,
                        weak_domain=weak_domain, low_mood=low_mood, seed=seed)
        with Progress(console=console) as progress:
            task = progress.add_task(f"{c.nickname} plays", total=len(the_plan.events()))
            result = await play(api, c.child_id, the_plan, lambda _: progress.advance(task))
        return c, result

    c, result = run(ctx, body)
    console.print(f"{c.nickname} played {result.sessions} sessions and checked in "
                  f"{result.checkins} times (+{result.xp} XP). Try: avatario report {c.nickname}")


# -- privacy ------------------------------------------------------------------------


@app.command("export")
def export(ctx: typer.Context, out: Path | None = typer.Option(None, help="Write JSON here.")):
    """Export everything the service holds about the family (JSON)."""
    resp = run(ctx, lambda api: api.call(api.privacy.ExportFamilyData,
                                         gw.ExportFamilyDataRequest(), timeout=120))
    text = json.dumps(MessageToDict(resp), indent=2)
    if out:
        out.write_text(text)
        out.chmod(0o600)
        console.print(f"wrote {out}")
    else:
        console.print_json(text)


@app.command()
def erase(ctx: typer.Context,
          password: str = typer.Option(..., prompt=True, hide_input=True),
          yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")):
    """Erase the whole family in every service. This cannot be undone."""
    if not yes:
        typer.confirm("Erase the family and all its data everywhere?", abort=True)

    async def body(api: Api):
        resp = await api.call(api.privacy.EraseFamily, gw.EraseFamilyRequest(password=password),
                              timeout=120)
        api.forget_parent()
        return resp

    resp = run(ctx, body)
    console.print(f"[green]erased[/] ({sum(resp.deleted_rows.values())} records)")
