"""`avatario`, the command-line client of the public API (app), and the small
async client it shares with the demo, the e2e tests and the benchmarks (api,
store, report_view, simulate)."""
