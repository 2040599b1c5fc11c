"""Analytics domain metrics, registered on the server's registry next to the gRPC ones."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class AnalyticsMetrics:
    sessions_ingested: Counter
    checkins_ingested: Counter
    duplicates: Counter
    xp_outbox_pending: Gauge
    xp_deliveries: Counter
    renorms: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> AnalyticsMetrics:
        registry = registry or CollectorRegistry()
        return cls(
            sessions_ingested=Counter(
                "avatario_analytics_sessions_ingested_total",
                "Game sessions stored (retries of a stored session are not counted).",
                ["game"], registry=registry,
            ),
            checkins_ingested=Counter(
                "avatario_analytics_checkins_ingested_total", "Mood check-ins stored.",
                registry=registry,
            ),
            duplicates=Counter(
                "avatario_analytics_duplicate_submissions_total",
                "Retried submissions answered from the stored result, by kind.",
                ["kind"], registry=registry,
            ),
            xp_outbox_pending=Gauge(
                "avatario_analytics_xp_outbox_pending",
                "XP awards stored but not yet accepted by profile.", registry=registry,
            ),
            xp_deliveries=Counter(
                "avatario_analytics_xp_deliveries_total",
                "AwardXp attempts by outcome (done, retry, abandoned).",
                ["result"], registry=registry,
            ),
            renorms=Counter(
                "avatario_analytics_renorms_total",
                "Platform norm recomputations by outcome (stored, unchanged).",
                ["result"], registry=registry,
            ),
        )
