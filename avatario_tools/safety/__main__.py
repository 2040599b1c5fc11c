"""CLI: `python -m avatario_tools.safety build | corpus`."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avatario_tools.safety")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="generate the corpus, train, write the model files")
    b.add_argument("--out", type=Path, default=None, help="output folder (default: the node's)")
    c = sub.add_parser("corpus", help="print a sample of the generated corpus")
    c.add_argument("--split", default=None)
    c.add_argument("--label", default=None)
    c.add_argument("-n", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "build":
        from avatario_tools.safety.train import build
        from services.inference.safety.classifier import MODEL_DIR

        build(args.out or MODEL_DIR)
        return 0
    from avatario_tools.safety.corpus import generate, sizes

    examples = generate()
    print(sizes(examples))
    pool = [e for e in examples if (args.split in (None, e.split))
            and (args.label in (None, e.label))]
    for e in random.Random(0).sample(pool, min(args.n, len(pool))):
        print(f"{e.label}\t{e.split}\t{e.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
