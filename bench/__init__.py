"""Benchmarks. Each bench_*.py measures its baseline in the same run, prints a
table and writes bench/results/<name>.json. Run all: `make bench`; one:
`python -m bench engine`."""
