"""Seconds to draw a 2-layer bidirectional LSTM unrolled over 100 steps (the issue's budget: well
under 2 s at op level), and at the cell and layer levels; building the Digraph only, not dot.

    python benchmarks/bench_viz.py [--steps 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import checkout  # noqa: F401  (first: the package of this checkout, not the venv's)

import tinygrad_seq as ts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ts.manual_seed(0)
    lstm = ts.nn.LSTM(16, 32, num_layers=2, bidirectional=True)
    out, _ = lstm(ts.randn(args.steps, 4, 16))
    loss = (out * out).sum()
    for level in ts.viz.LEVELS:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            dot = ts.viz.draw(loss, level=level, max_nodes=None)
            times.append(time.perf_counter() - start)
        print(f"{level:>5}: {statistics.median(times):.3f} s  ({len(dot.body)} DOT lines, "
              f"median of {args.repeat})")


if __name__ == "__main__":
    main()
