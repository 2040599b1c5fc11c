"""`python -m bench`: --help lists the benchmarks, names are checked, the rest is run."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from bench import __main__ as runner

ROOT = Path(__file__).resolve().parents[3]


def test_help_lists_every_benchmark_with_its_summary():
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    files = sorted((ROOT / "bench").glob("bench_*.py"))
    assert files
    for path in files:
        name = path.stem.removeprefix("bench_")
        line = next(ln for ln in done.stdout.splitlines() if ln.split()[:1] == [name])
        assert line.split(None, 1)[1] == runner.benchmarks()[name]


def test_summaries_come_from_the_module_docstrings(tmp_path):
    (tmp_path / "bench_alpha.py").write_text('"""First line\nstill the summary.\n\nMore."""\n')
    (tmp_path / "bench_beta.py").write_text("x = 1\n")
    (tmp_path / "common.py").write_text('"""Not a benchmark."""\n')
    assert runner.benchmarks(tmp_path) == {"alpha": "First line still the summary.", "beta": ""}


def test_an_unknown_name_is_a_usage_error_naming_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        runner.main(["nosuch"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown benchmark nosuch" in err and "engine" in err


def test_runs_the_named_benchmarks_and_leaves_their_options(monkeypatch, capsys):
    ran = []

    def fake_import(name):
        return types.SimpleNamespace(main=lambda: ran.append(name) or (1 if "flags" in name else 0))

    monkeypatch.setattr(runner.importlib, "import_module", fake_import)
    assert runner.main(["profile", "--postgres"]) == 0
    assert runner.main(["flags", "profile"]) == 1
    assert ran == ["bench.bench_profile", "bench.bench_flags", "bench.bench_profile"]
    assert "failed: flags" in capsys.readouterr().err
