"""The ``tinygrad-seq`` command line (also ``python -m tinygrad_seq``).

Every subcommand reports bad options or paths as one line on stderr and exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


class CliError(Exception):
    """A problem the user can fix; printed as one line, never a traceback."""


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(out_dir=args.out, steps=args.steps, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinygrad-seq", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="train a small recurrent net, check its gradients, show BPTT",
                               description="Train a character-level LSTM on embedded text, check its "
                                           "gradients against finite differences, and show how the "
                                           "gradient flows back through time.")
    demo.add_argument("--out", default="tinygrad_seq_out", help="folder for outputs (default: %(default)s)")
    demo.add_argument("--steps", type=int, default=300, help="training steps (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except CliError as err:
        print(f"tinygrad-seq {args.command}: {err}", file=sys.stderr)
        return 2
    return 0
