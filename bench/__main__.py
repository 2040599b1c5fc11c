"""python -m bench [NAME ...]: run bench/bench_<NAME>.py (all when none given).

Each benchmark prints a table and writes bench/results/<NAME>.json. Options the
runner does not know are left for the benchmarks (e.g. `python -m bench load
--postgres`).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmarks(folder: Path = HERE) -> dict[str, str]:
    """Every benchmark's name and the summary (first paragraph, as one line) of its module
    docstring, read rather than imported: importing a benchmark loads torch and the services."""
    out = {}
    for path in sorted(folder.glob("bench_*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        out[path.stem.removeprefix("bench_")] = " ".join(doc.split("\n\n", 1)[0].split())
    return out


def _parser(known: dict[str, str]) -> argparse.ArgumentParser:
    width = max(map(len, known), default=0)
    listing = "\n".join(f"  {name:<{width}}  {line}" for name, line in known.items())
    parser = argparse.ArgumentParser(
        prog="python -m bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[1].strip(),
        epilog=f"benchmarks:\n{listing}")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="benchmarks to run, in this order (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return parser


def main(argv: list[str]) -> int:
    known = benchmarks()
    parser = _parser(known)
    args, _rest = parser.parse_known_args(argv)  # the rest stays in sys.argv for the benchmarks
    if args.list:
        print(parser.epilog)
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (choose from {', '.join(known)})")
    failed = []
    for name in args.names or list(known):
        print(f"== bench {name}", flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        try:
            rc = module.main()
        except Exception as exc:  # noqa: BLE001 - keep running the others
            print(f"bench {name} failed: {exc!r}", file=sys.stderr)
            rc = 1
        if rc:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
