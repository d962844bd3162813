"""Entry point of `hadeck`, the operations console.

The Textual console is the next capability (issue 3); today `hadeck demo`
starts the local demo fleet and shows it as a refreshing text view.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from console.demo import fleet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="hadeck", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    sub = p.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="start a local fleet of agents on loopback and watch it")
    demo.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"where configs, state and logs go (default {fleet.default_dir()})",
    )
    demo.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="stop by itself after this long (default: until Ctrl-C)",
    )
    args = p.parse_args(argv)
    if args.command == "demo":
        return fleet.main(args.dir or fleet.default_dir(), args.seconds)
    print("hadeck: the interactive console is not built yet; try `hadeck demo`.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
