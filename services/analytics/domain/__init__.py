"""Analytics domain layer: plain Python, no gRPC and no database.

Modules:
    types       domain dataclasses and enums (names match the proto enum suffixes)
    catalog     the versioned game catalog (data/games.json) and session validation
    metrics     per-session derived metrics from raw trials
    norms       age norms (data/norms.json), z-scores, percentiles, platform norms
    scoring     domain/area scores, weekly trends, play time, streaks
    flags       screening flags (skill, low mood, engagement and performance drops)
    tips        the curated tips library (data/tips.json)
    report      the parent report and the chat assistant's summary
    xapi        xAPI statements for data export
    ingest      validate + metrics + norms for one submitted session -> SessionResult

The simulator of children's play and the flag-rate evaluation over simulated
populations are tools, not part of the server: avatario_tools/simulation.
"""
