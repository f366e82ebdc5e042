"""Vanishing and exploding gradients: how far back dL/dh_t reaches in a tanh RNN, an LSTM and a GRU.

The task: the first input is A or B, then come T-1 random distractor symbols, and the label at
the end is the first input. The loss only sees the last state, so everything the network learns
about step 0 must arrive as dL/dh_0, back through T applications of the recurrence.

For a tanh RNN dh_t/dh_{t-1} = diag(1 - h_t^2) W_hh: a product of T such Jacobians shrinks
roughly like (spectral radius of W_hh)^T when that radius is below 1 (tanh' <= 1 only helps it
shrink), so ||dL/dh_t|| decays exponentially with the distance from the loss. The LSTM's cell
state is updated additively, c_t = f c_{t-1} + i g, so where the forget gate f is near 1 the
gradient passes back almost unchanged; the GRU's update gate z does the same for h itself
(h_t = z h_{t-1} + (1 - z) n). Gates only help when they start open, though: with PyTorch's
default initialisation f and z start near 0.5 and forget about as fast as the tanh RNN. So the
LSTM's forget-gate and the GRU's update-gate biases start at +2 here (the usual remedy), and an
LSTM with the default initialisation runs alongside to show the difference.

Each model is unrolled by hand, one cell call per step, so every h_t is its own tensor and
``ts.diagnostics.gradient_flow`` gives ||dL/dh_t|| for all t from one backward (the numbers
``retain_grad()`` on each h_t would leave in ``h_t.grad``). The example prints that
profile at initialisation, the spectral radius of each W_hh block before and after training,
and the accuracy each model reaches with the same training budget. A tanh RNN can still learn
this at moderate T if training happens to grow W_hh past radius 1 (two stable states can hold
a bit); the moment it does, its gradient explodes.

Training clips the gradient norm (``clip_grad_norm_``, whose return value is the norm before
clipping). The largest step shows what clipping changes: every parameter's gradient shrinks by
the same factor, same direction, shorter step. That tames a gradient that explodes, but cannot
revive one that vanished: it acts after backpropagation, on the parameters' gradients, and never
touches how ||dL/dh_t|| falls off with t.

Writes tinygrad_seq_out/vanishing_gradients.csv (and .png if matplotlib is installed).

    python examples/vanishing_gradients.py          # about 20 s
    python examples/vanishing_gradients.py --fast   # what CI runs
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads would only wait

import numpy as np

import tinygrad_seq as ts
from tinygrad_seq import nn
from tinygrad_seq.progress import Progress

OUT = Path("tinygrad_seq_out")
SIGNALS, DISTRACTORS = 2, 4  # inputs are one-hot over 2 signal symbols (A, B) and 4 distractors
HIDDEN, MAX_NORM = 24, 0.5
CELLS = {"tanh RNN": nn.RNNCell, "LSTM": nn.LSTMCell, "GRU": nn.GRUCell}
GATES = {"tanh RNN": ("h",), "LSTM": nn.LSTM_GATES, "GRU": nn.GRU_GATES}
KEEP_GATE = {"LSTM": nn.LSTM_GATES.index("f"), "GRU": nn.GRU_GATES.index("z")}  # the gate block index
KEEP_GATE_BIAS = 2.0  # sigmoid(2) = 0.88: the state is carried over, not forgotten, from the start
MODELS = {"tanh RNN": ("tanh RNN", 0.0), "LSTM": ("LSTM", KEEP_GATE_BIAS), "GRU": ("GRU", KEEP_GATE_BIAS),
          "LSTM default": ("LSTM", 0.0)}  # label: (cell, bias added to its keep gate)


def make_batch(rng: np.random.Generator, size: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """One-hot inputs (T, B, SIGNALS + DISTRACTORS): a signal first, distractors after; labels (B,)."""
    labels = rng.integers(0, SIGNALS, size)
    symbols = np.concatenate([labels[None], SIGNALS + rng.integers(0, DISTRACTORS, (steps - 1, size))])
    return np.eye(SIGNALS + DISTRACTORS, dtype=np.float32)[symbols], labels


class Recaller(nn.Module):
    """A recurrent cell unrolled by hand over time, then a Linear read-out of the last state."""

    def __init__(self, cell: str, keep_gate_bias: float) -> None:
        super().__init__()
        self.cell = CELLS[cell](SIGNALS + DISTRACTORS, HIDDEN)
        self.head = nn.Linear(HIDDEN, SIGNALS)
        if cell in KEEP_GATE:  # open the gate that carries the state over: f (LSTM) or z (GRU)
            block = slice(KEEP_GATE[cell] * HIDDEN, (KEEP_GATE[cell] + 1) * HIDDEN)
            bias = self.cell.bias_ih.numpy().copy()
            bias[block] += keep_gate_bias
            self.cell.bias_ih.data = bias

    def forward(self, inputs: np.ndarray) -> tuple[ts.Tensor, list[ts.Tensor]]:
        """Logits from the last state, and h_t of every step as a separate tensor (what
        gradient_flow needs: a layer's stacked output is a copy made after its loop)."""
        state, hidden_states = None, []
        for x in inputs:
            state = self.cell(ts.tensor(x), state)
            hidden_states.append(state[0] if isinstance(state, tuple) else state)  # LSTM: (h, c)
        return self.head(hidden_states[-1]), hidden_states


def train(model: Recaller, rng: np.random.Generator, steps: int, seq_len: int, name: str
          ) -> tuple[list[float], tuple]:
    """Adam with gradient clipping at MAX_NORM. Returns the pre-clipping norm of every step, and
    per-parameter gradient norms before and after clipping at the step with the largest one."""
    optimizer = ts.optim.Adam(model.parameters(), lr=0.01)
    norms, largest = [], ()
    with Progress(steps, desc=name) as progress:
        for step in range(1, steps + 1):
            inputs, labels = make_batch(rng, 32, seq_len)
            loss = nn.functional.cross_entropy(model(inputs)[0], labels)
            optimizer.zero_grad()
            loss.backward()
            before = nn.utils.grad_norm_report(model)
            norms.append(nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM).item())  # the norm before
            if norms[-1] == max(norms):
                largest = (step, before, nn.utils.grad_norm_report(model))
            optimizer.step()
            progress.step(loss=loss.item())
            if step % (steps // 2) == 0:
                progress.log(f"    {name:12s} step {step:4d}  loss {loss.item():.3f}")
    return norms, largest


def gradient_profile(model: Recaller, inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """||dL/dh_t|| for every t, for a loss on the last step only: what ``retain_grad()`` on each
    h_t followed by ``backward()`` would show, without touching any ``.grad``."""
    logits, hidden_states = model(inputs)
    return ts.diagnostics.gradient_flow(nn.functional.cross_entropy(logits, labels), hidden_states)


def accuracy(model: Recaller, inputs: np.ndarray, labels: np.ndarray) -> float:
    with ts.no_grad():
        return float(np.mean(model(inputs)[0].numpy().argmax(1) == labels))


def spectral_radii(model: Recaller, name: str) -> str:
    """max |eigenvalue| of each gate's H x H block of W_hh (the whole W_hh for the tanh RNN)."""
    weight = model.cell.weight_hh.numpy()
    radii = [np.abs(np.linalg.eigvals(weight[k * HIDDEN:(k + 1) * HIDDEN])).max()
             for k in range(len(GATES[name]))]
    return ", ".join(f"{gate} {radius:.2f}" for gate, radius in zip(GATES[name], radii, strict=True))


def show_clipping(runs: dict[str, tuple[list[float], tuple]]) -> dict[str, float]:
    """How often each run was clipped; per parameter, the largest clipped step of all."""
    print(f"what clip_grad_norm_(max_norm={MAX_NORM}) changed during training:")
    for name, (norms, _) in runs.items():
        clipped = sum(norm > MAX_NORM for norm in norms)
        print(f"  {name:12s} gradient norm median {np.median(norms):9.3g}, largest {max(norms):7.3g}; "
              f"clipped in {clipped} of {len(norms)} steps")
    name, (_, (step, before, after)) = max(runs.items(), key=lambda run: max(run[1][0]))
    print(f"  {name}, step {step}: every parameter's gradient shrinks by the same factor")
    for entry in before:
        print(f"    {entry.name:15s} {entry.norm:9.3g} -> {after.norms[entry.name]:9.3g}  "
              f"(x {after.norms[entry.name] / entry.norm:.3g})")
    print(f"    {'total':15s} {before.total:9.3g} -> {after.total:9.3g}")
    return {"largest_before": before.total, "largest_after": after.total}


def plot(profiles: dict[str, np.ndarray]) -> bool:
    """The profiles on a log scale, if matplotlib is installed (it is optional)."""
    try:
        ts.diagnostics.plot_gradient_flow(profiles, OUT / "vanishing_gradients.png")
    except ImportError:
        return False
    return True


def print_profiles(table: np.ndarray, columns: list[str]) -> None:
    """Every ~tenth row of the table, then the ratio first / last: how much reaches t = 0."""
    print("||dL/dh_t|| at initialisation, for the loss at the last step (t = 0 is the symbol to remember):")
    print("  " + "".join(f"{c:>14s}" for c in columns))
    steps = len(table)
    for row in table[::max(1, steps // 10)].tolist() + ([table[-1].tolist()] if (steps - 1) % (steps // 10)
                                                        else []):
        print(f"  {row[0]:14.0f}" + "".join(f"{v:14.2e}" for v in row[1:]))
    print(f"  {'dL/dh_0 / last':>14s}" + "".join(f"{v:14.1e}" for v in table[0, 1:] / table[-1, 1:]))


def main(fast: bool = False) -> dict:
    ts.manual_seed(0)
    rng = np.random.default_rng(0)
    OUT.mkdir(exist_ok=True)
    seq_len, steps = (20, 100) if fast else (30, 150)
    probe_inputs, probe_labels = make_batch(rng, 256, seq_len)
    print(f"remember the first of {seq_len} symbols; hidden {HIDDEN}; LSTM and GRU with keep-gate bias "
          f"+{KEEP_GATE_BIAS:g}, 'LSTM default' without")
    models = {label: Recaller(cell, bias) for label, (cell, bias) in MODELS.items()}
    profiles = {label: gradient_profile(model, probe_inputs, probe_labels) for label, model in models.items()}
    columns = ["t", *profiles]
    table = np.column_stack([np.arange(seq_len), *profiles.values()])
    print_profiles(table, columns)
    np.savetxt(OUT / "vanishing_gradients.csv", table, delimiter=",", header=",".join(columns), comments="")
    plotted = plot(profiles)
    picture = f" and {OUT / 'vanishing_gradients.png'}" if plotted else " (no plot: matplotlib not installed)"
    print(f"wrote {OUT / 'vanishing_gradients.csv'}{picture}")

    print(f"training each for {steps} Adam steps of 32 sequences:")
    results, runs = {}, {}
    for label, model in models.items():
        cell = MODELS[label][0]
        radii_init = spectral_radii(model, cell)
        runs[label] = train(model, rng, steps, seq_len, label)
        results[label] = {"accuracy": accuracy(model, probe_inputs, probe_labels),
                          "reach": float(profiles[label][0] / profiles[label][-1])}
        print(f"  {label:12s} accuracy {results[label]['accuracy']:.1%} (chance 50%); spectral radius of "
              f"W_hh blocks {radii_init} at init, {spectral_radii(model, cell)} trained")
    results["clipping"] = show_clipping(runs)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="shorter sequences, fewer steps (what CI runs)")
    main(parser.parse_args().fast)
