"""Profile domain metrics, registered on the server's registry next to the gRPC ones."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter


@dataclass(frozen=True)
class ProfileMetrics:
    authentications: Counter
    xp_awards: Counter
    devices_paired: Counter
    chat_turns: Counter
    families_erased: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ProfileMetrics:
        registry = registry or CollectorRegistry()
        return cls(
            authentications=Counter(
                "avatario_profile_authentications_total",
                "Parent and device credential checks by outcome.",
                ["kind", "result"], registry=registry,
            ),
            xp_awards=Counter(
                "avatario_profile_xp_awards_total",
                "AwardXp calls by outcome (applied, or duplicate of an earlier source id).",
                ["result"], registry=registry,
            ),
            devices_paired=Counter(
                "avatario_profile_devices_paired_total", "Pairing codes redeemed for a device.",
                registry=registry,
            ),
            chat_turns=Counter(
                "avatario_profile_chat_turns_total",
                "Chat turns stored, by whether the reply was complete.",
                ["complete"], registry=registry,
            ),
            families_erased=Counter(
                "avatario_profile_families_erased_total", "Families erased.", registry=registry,
            ),
        )
