"""A child's report as rich tables: domain scores, weekly trend sparklines, play
time, streaks, the avatar, and flags with their evidence and tips."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from avatario.common.v1 import avatar_pb2, play_pb2, report_pb2

BARS = "▁▂▃▄▅▆▇█"
LEVEL_STYLE = {
    report_pb2.FLAG_LEVEL_ON_TRACK: ("on track", "green"),
    report_pb2.FLAG_LEVEL_EARLY_SIGNAL: ("early signal, norms still being gathered", "cyan"),
    report_pb2.FLAG_LEVEL_KEEP_AN_EYE: ("keep an eye on it", "yellow"),
    report_pb2.FLAG_LEVEL_DISCUSS_WITH_PROFESSIONAL: ("worth discussing with a professional", "red"),
}


def sparkline(values: list[float | None], lo: float = 0.0, hi: float = 100.0) -> str:
    """One character per value; None (not enough data) is a dot."""
    out = []
    for v in values:
        if v is None:
            out.append("·")
            continue
        frac = 0.0 if hi <= lo else (min(hi, max(lo, v)) - lo) / (hi - lo)
        out.append(BARS[min(len(BARS) - 1, int(frac * len(BARS)))])
    return "".join(out)


def label(enum, value: int, prefix: str) -> str:
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).replace("_", " ").capitalize()


def domain_name(value: int) -> str:
    return label(play_pb2.SkillDomain, value, "SKILL_DOMAIN_")


def score_bar(score: float, width: int = 20) -> Text:
    filled = int(round(max(0.0, min(100.0, score)) / 100 * width))
    colour = "green" if score >= 40 else "yellow" if score >= 25 else "red"
    return Text("█" * filled, style=colour) + Text("░" * (width - filled), style="dim")


def _date(ts) -> str:
    return ts.ToDatetime(UTC).strftime("%Y-%m-%d") if ts.seconds else "-"


def scores_table(report: report_pb2.ChildReport) -> Table:
    table = Table(title="Skills (50 = average for age)", expand=True)
    for col in ("Domain", "Area", "Score", "", "Percentile", "Sessions", "Note"):
        table.add_column(col)
    for d in report.domain_scores:
        area = label(play_pb2.SkillArea, d.area, "SKILL_AREA_")
        if d.enough_data:
            table.add_row(domain_name(d.domain), area, f"{d.score:.0f}", score_bar(d.score),
                          f"{d.percentile:.0f}", str(d.session_count), d.note)
        else:
            table.add_row(domain_name(d.domain), area, "-", Text("not enough data yet", "dim"),
                          "-", str(d.session_count), d.note)
    return table


def trends_table(report: report_pb2.ChildReport) -> Table:
    weeks = sorted({p.week_start.seconds for p in report.weekly_trends})
    by_domain: dict[int, dict[int, float | None]] = defaultdict(dict)
    for p in report.weekly_trends:
        by_domain[p.domain][p.week_start.seconds] = p.score if p.enough_data else None
    table = Table(title=f"Weekly trend (last {len(weeks)} weeks, · = not enough data)")
    table.add_column("Domain")
    table.add_column("Trend", style="cyan")
    table.add_column("Latest")
    for domain, points in sorted(by_domain.items()):
        series = [points.get(w) for w in weeks]
        latest = next((v for v in reversed(series) if v is not None), None)
        table.add_row(domain_name(domain), sparkline(series),
                      "-" if latest is None else f"{latest:.0f}")
    return table


def play_table(report: report_pb2.ChildReport) -> Table:
    weekly = sorted(report.weekly_play, key=lambda p: p.period_start.seconds)
    minutes = [p.seconds / 60 for p in weekly]
    table = Table(title="Play time", show_header=False)
    table.add_column("")
    table.add_column("")
    hi = max(minutes) if minutes else 1.0
    table.add_row("Weekly minutes", Text(sparkline(minutes, 0, hi or 1.0), "cyan") +
                  Text(f"  ({sum(minutes):.0f} min, {sum(p.sessions for p in weekly)} sessions)"))
    table.add_row("Current streak", f"{report.current_streak_days} days")
    table.add_row("Longest streak", f"{report.longest_streak_days} days")
    return table


def avatar_text(avatar: avatar_pb2.Avatar) -> Text:
    stage = label(avatar_pb2.EvolutionStage, avatar.stage, "EVOLUTION_STAGE_")
    text = Text(f"Level {avatar.level} {stage} · {avatar.xp} XP")
    if avatar.xp_for_next_level:
        text += Text(f" · {avatar.xp_into_level}/{avatar.xp_for_next_level} to next level")
    if avatar.equipped:
        text += Text(" · wearing " + ", ".join(i.name for i in avatar.equipped))
    return text


def flag_panel(flag: report_pb2.Flag) -> Panel:
    words, colour = LEVEL_STYLE.get(flag.level, ("flag", "white"))
    parts: list = [Text(flag.explanation)]
    if flag.evidence:
        ev = Table(title="Evidence", title_justify="left", show_edge=False)
        for col in ("Date", "Metric", "Value", "z"):
            ev.add_column(col)
        for e in flag.evidence[:8]:
            ev.add_row(_date(e.observed_at), e.metric, f"{e.value:.2f}", f"{e.z_score:+.2f}")
        parts.append(ev)
    for tip in flag.tips[:3]:
        tip_text = Text.assemble(("Tip: ", "bold"), (tip.title, "bold"), "\n", tip.body)
        if tip.when_to_seek_help:
            tip_text += Text.assemble("\n", ("When to seek help: ", "italic"),
                                      tip.when_to_seek_help)
        parts.append(tip_text)
    title = Text(flag.headline or words, style=f"bold {colour}")
    return Panel(Group(*parts), title=title, title_align="left", border_style=colour,
                 subtitle=f"{flag.session_count} sessions · since {_date(flag.first_seen_at)}")


def render_report(console: Console, report: report_pb2.ChildReport, nickname: str = "") -> None:
    who = nickname or report.child_id
    console.rule(f"[bold]Progress report: {who}[/] (generated {_date(report.generated_at)})")
    if not report.enough_data:
        console.print(Panel(report.not_enough_data_reason or "Not enough data yet.",
                            title="Not enough data yet", border_style="yellow"))
    if report.HasField("avatar"):
        console.print(Text("Avatar: ", style="bold") + avatar_text(report.avatar))
    console.print(scores_table(report))
    if report.weekly_trends:
        console.print(trends_table(report))
    console.print(play_table(report))
    if report.summary.text:
        console.print(Panel(report.summary.text, title="Summary"))
    flags = [f for f in report.flags if f.level != report_pb2.FLAG_LEVEL_ON_TRACK]
    if not flags:
        console.print(Text("No flags: nothing stands out right now.", style="green"))
    for flag in flags:
        console.print(flag_panel(flag))
    console.print(Text("Flags are screening signals to look closer, never a diagnosis.",
                       style="dim italic"))
