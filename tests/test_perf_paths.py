"""Peak memory of one training step on a long sequence, against the hand-written numpy BPTT
(benchmarks/numpy_bptt.py) on the same problem. The margin is generous: this catches leaks and
quadratic growth (e.g. a sequence-sized gradient per step), not small regressions. And a smoke test
of benchmarks/bench_rnn.py itself (no time is asserted anywhere)."""

from __future__ import annotations

import gc
import importlib.util
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tinygrad_seq as ts

_SPEC = importlib.util.spec_from_file_location(
    "numpy_bptt", Path(__file__).resolve().parents[1] / "benchmarks" / "numpy_bptt.py")
numpy_bptt = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(numpy_bptt)

STEPS, BATCH, FEATURES, HIDDEN = 200, 4, 16, 32
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
LAYERS = {"rnn": ts.nn.RNN, "lstm": ts.nn.LSTM, "gru": ts.nn.GRU}
MARGIN = 4.0  # measured: default layers 1.2-1.7x the numpy peak here, fused ones 0.9-1.1x


def _peak_bytes(step: Callable[[], None]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fused", [False, True], ids=["composed", "fused"])
@pytest.mark.parametrize("cell", sorted(GATES))
def test_peak_memory_of_a_long_sequence_step_is_bounded(cell: str, fused: bool,
                                                       rng: np.random.Generator) -> None:
    rows = GATES[cell] * HIDDEN
    weights = {"weight_ih": rng.uniform(-0.2, 0.2, (rows, FEATURES)),
               "weight_hh": rng.uniform(-0.2, 0.2, (rows, HIDDEN)),
               "bias_ih": rng.uniform(-0.2, 0.2, rows), "bias_hh": rng.uniform(-0.2, 0.2, rows)}
    x = rng.standard_normal((STEPS, BATCH, FEATURES))
    out_grad = rng.standard_normal((STEPS, BATCH, HIDDEN))
    layer = LAYERS[cell](FEATURES, HIDDEN, fused=fused).double()
    layer.load_state_dict({f"{name}_l0": value for name, value in weights.items()})
    x_tensor, out_grad_tensor = ts.tensor(x), ts.tensor(out_grad)

    def ours() -> None:
        out, _ = layer(x_tensor)
        (out * out_grad_tensor).sum().backward()

    reference = _peak_bytes(lambda: numpy_bptt.BPTT[cell](x, out_grad, **weights, input_grad=False))
    assert _peak_bytes(ours) <= MARGIN * reference


def test_the_benchmark_runs_and_reports_every_column() -> None:
    """A smoke test of benchmarks/bench_rnn.py on its smallest case (one round; no time is asserted,
    only that it runs and prints its ratios and the linearity line)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_rnn.py"
    arguments = ["--sizes", "tiny", "--cells", "gru", "--dtypes", "float64", "--repeat", "1", "--quick"]
    result = subprocess.run([sys.executable, str(script), *arguments], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("gru   tiny")]
    assert len(re.findall(r"\d+\.\d+x", row)) >= 4 and "us/step" in result.stdout
