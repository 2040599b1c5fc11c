"""Analytics domain layer: plain Python, no gRPC and no protobuf.

Rules (pure functions over the types below; no database):
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

Use cases (apply the rules over repo/ functions and clients/ behind protocols):
    submissions   store a session or check-in: consent, scoring, the XP award
    xp            the XP outbox: try an award at once, retry it until profile answers
    reporting     a child's report from the stored window, with flag state kept
    norms_keeper  the norm table in use: adopt stored tables, recompute on a schedule

The simulator of children's play and the flag-rate evaluation over simulated
populations are tools, not part of the server: avatario_tools/simulation.
"""
