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
LSTM's forget-gate and the GRU's update-gate biases start at +3 here (the usual remedy), and an
LSTM with the default initialisation runs alongside to show the difference.

Each model is unrolled by hand, one cell call per step, so every h_t is its own tensor and
``ts.diagnostics.gradient_flow`` gives ||dL/dh_t|| for all t from one backward (the numbers
``retain_grad()`` on each h_t would leave in ``h_t.grad``). The example prints that
profile at initialisation, the spectral radius of each W_hh block before and after training,
and the accuracy each model reaches with the same budget of Adam steps: the gated cells learn
within it, the tanh RNN stays at chance. (Given several times the budget a tanh RNN sometimes
stumbles onto the task after all: once training grows W_hh past radius 1, two stable states
can hold the bit, and from then on its gradient explodes instead of vanishing.)

That other failure is what clipping is for. A tanh RNN whose W_hh starts at radius 1.5 (past
the edge) is trained twice with plain SGD on a shorter version of the task, once with
``clip_grad_norm_`` and once without: unclipped, the occasional huge gradient throws the
weights far off and the loss jumps about; clipped, every step keeps its direction but at most
a fixed length, and the same model learns. Clipping acts after backpropagation, on the
parameters' gradients: it tames a gradient that explodes, but cannot revive one that vanished.

Writes tinygrad_seq_out/vanishing_gradients.csv (and .png if matplotlib is installed).

    python examples/vanishing_gradients.py          # about 15 s
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
from tinygrad_seq.cli import non_negative_int
from tinygrad_seq.progress import Progress

OUT = Path("tinygrad_seq_out")
SIGNALS, DISTRACTORS = 2, 4  # inputs are one-hot over 2 signal symbols (A, B) and 4 distractors
HIDDEN, MAX_NORM, ADAM_LR = 24, 0.5, 0.005
CELLS = {"tanh RNN": nn.RNNCell, "LSTM": nn.LSTMCell, "GRU": nn.GRUCell}
GATES = {"tanh RNN": ("h",), "LSTM": nn.LSTM_GATES, "GRU": nn.GRU_GATES}
KEEP_GATE = {"LSTM": nn.LSTM_GATES.index("f"), "GRU": nn.GRU_GATES.index("z")}  # the gate block index
KEEP_GATE_BIAS = 3.0  # sigmoid(3) = 0.95: the state is carried over, not forgotten, from the start
MODELS = {"tanh RNN": ("tanh RNN", 0.0), "LSTM": ("LSTM", KEEP_GATE_BIAS), "GRU": ("GRU", KEEP_GATE_BIAS),
          "LSTM default": ("LSTM", 0.0)}  # label: (cell, bias added to its keep gate)
EXPLODING_RADIUS, SGD_LR = 1.5, 0.5  # the clipping comparison: W_hh past the edge, plain SGD


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


def train(model: Recaller, rng: np.random.Generator, steps: int, seq_len: int, name: str,
          optimizer: ts.optim.Optimizer, max_norm: float | None) -> tuple[list[float], list[float]]:
    """Train on fresh batches of 32; clip the gradient norm to ``max_norm`` unless it is None.
    Returns every step's loss and gradient norm (before clipping)."""
    losses, norms = [], []
    with Progress(steps, desc=name) as progress:
        for step in range(1, steps + 1):
            inputs, labels = make_batch(rng, 32, seq_len)
            loss = nn.functional.cross_entropy(model(inputs)[0], labels)
            optimizer.zero_grad()
            loss.backward()
            # clip_grad_norm_ returns the norm before clipping; an infinite max_norm only measures it
            norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_norm or np.inf).item())
            optimizer.step()
            losses.append(loss.item())
            progress.step(loss=losses[-1])
            if step % (steps // 2) == 0:
                progress.log(f"    {name:12s} step {step:4d}  loss {losses[-1]:.3f}")
    return losses, norms


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


def compare_clipping(seed: int, seq_len: int, steps: int) -> dict[str, dict[str, float]]:
    """The same exploding tanh RNN trained with plain SGD twice: with and without clip_grad_norm_."""
    print(f"what clipping changes: a tanh RNN with W_hh at spectral radius {EXPLODING_RADIUS:g} (gradients "
          f"explode), remembering the first of {seq_len} symbols, {steps} steps of SGD lr={SGD_LR:g}:")
    outcome, curves = {}, {}
    for label, max_norm in (("unclipped", None), (f"clip {MAX_NORM:g}", MAX_NORM)):
        ts.manual_seed(seed)
        rng = np.random.default_rng(seed)  # both runs: the same initial weights and the same batches
        model = Recaller("tanh RNN", 0.0)
        orthogonal, _ = np.linalg.qr(rng.standard_normal((HIDDEN, HIDDEN)))
        model.cell.weight_hh.data = (EXPLODING_RADIUS * orthogonal).astype(np.float32)
        losses, norms = train(model, rng, steps, seq_len, label, ts.optim.SGD(model.parameters(), lr=SGD_LR),
                              max_norm)
        inputs, labels = make_batch(rng, 256, seq_len)
        curves[label] = losses
        outcome[label] = {"accuracy": accuracy(model, inputs, labels), "largest_norm": max(norms),
                          "largest_loss": max(losses), "clipped_steps": sum(n > MAX_NORM for n in norms)}
    print("  mean loss over each tenth of training:")
    print("  " + "".join(f"{label:>12s}" for label in curves))
    for chunk in zip(*(np.array_split(losses, 10) for losses in curves.values()), strict=True):
        print("  " + "".join(f"{part.mean():12.3f}" for part in chunk))
    for label, result in outcome.items():
        print(f"  {label:10s} accuracy {result['accuracy']:.1%}, largest gradient norm "
              f"{result['largest_norm']:.3g}, largest loss {result['largest_loss']:.2f}"
              + (f", clipped in {result['clipped_steps']} of {steps} steps" if label != "unclipped" else ""))
    return outcome


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


def main(fast: bool = False, seed: int = 0) -> dict:
    ts.manual_seed(seed)
    rng = np.random.default_rng(seed)
    OUT.mkdir(exist_ok=True)
    seq_len, steps = (40, 110) if fast else (40, 150)
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

    if fast:  # the default-initialised LSTM keeps its gradient profile; training it is for the full run
        models.pop("LSTM default")
    print(f"training each for {steps} Adam steps (lr {ADAM_LR:g}) of 32 sequences, clipped at norm "
          f"{MAX_NORM:g}:")
    results = {label: {"reach": float(profile[0] / profile[-1])} for label, profile in profiles.items()}
    for label, model in models.items():
        cell = MODELS[label][0]
        radii_init = spectral_radii(model, cell)
        _, norms = train(model, rng, steps, seq_len, label, ts.optim.Adam(model.parameters(), lr=ADAM_LR),
                         MAX_NORM)
        results[label]["accuracy"] = accuracy(model, probe_inputs, probe_labels)
        print(f"  {label:12s} accuracy {results[label]['accuracy']:.1%} (chance 50%); spectral radius of "
              f"W_hh blocks {radii_init} at init, {spectral_radii(model, cell)} trained; clipped in "
              f"{sum(n > MAX_NORM for n in norms)} of {steps} steps")
    results["clipping"] = compare_clipping(seed, seq_len=20, steps=100)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="shorter sequences, fewer steps (what CI runs)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    arguments = parser.parse_args()
    main(arguments.fast, arguments.seed)
