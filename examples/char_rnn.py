"""Character-level language models: first "hello" learned exactly, then an LSTM on the Zen of Python.

Part 1 is the smallest recurrent problem there is: from h, e, l, l predict e, l, l, o. The two
"l"s must be followed by different letters, so no lookup table of the current character can do
it; a tiny tanh RNN has to remember how far into the word it is.

Part 2 is the real thing on text every Python install has (``import this``): an LSTM trained
with truncated backpropagation through time (the text is cut into contiguous streams, walked in
windows, and the state carried between windows is detached so each backward stays short),
gradient-norm clipping, perplexity on training text and on held-out lines (early stopping keeps
the parameters that did best on the held-out lines), and samples at
several temperatures (low: safe and repetitive; high: adventurous and misspelled).

    python examples/char_rnn.py          # about 5 s
    python examples/char_rnn.py --fast   # what CI runs
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads would only wait

import numpy as np

import tinygrad_seq as ts
from tinygrad_seq import nn
from tinygrad_seq.charlm import CharModel, sample, zen_of_python
from tinygrad_seq.progress import Progress

OUT = Path("tinygrad_seq_out")
MAX_NORM = 0.5  # below the typical gradient norm of this model (about 0.4-0.5), so clipping acts often


# -- part 1: "hello" ------------------------------------------------------------------------------


class TinyRNN(nn.Module):
    """One-hot characters -> tanh RNN -> logits over the next character."""

    def __init__(self, vocab: int, hidden: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(vocab, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, one_hot: ts.Tensor) -> ts.Tensor:
        hidden_states, _ = self.rnn(one_hot)  # unbatched: (T, vocab) -> (T, hidden)
        return self.head(hidden_states)


def learn_hello(steps: int) -> str:
    """Train on h,e,l,l -> e,l,l,o and return what the model predicts after each input letter."""
    chars = ["h", "e", "l", "o"]
    ids = np.array([chars.index(c) for c in "hello"])
    inputs, targets = ts.tensor(np.eye(len(chars), dtype=np.float32)[ids[:-1]]), ids[1:]
    model = TinyRNN(len(chars), hidden=8)
    optimizer = ts.optim.Adam(model.parameters(), lr=0.05)
    for step in range(1, steps + 1):
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in (1, steps // 4, steps):
            print(f"  step {step:3d}  loss {loss.item():.4f}")
    with ts.no_grad():
        probs = model(inputs).softmax(-1).numpy()
    predicted = "".join(chars[i] for i in probs.argmax(-1))
    for given, row in zip("hell", probs, strict=True):
        print(f"  after {given!r} the model predicts {chars[row.argmax()]!r} (p = {row.max():.3f})")
    return predicted


# -- part 2: a char LSTM on the Zen of Python --------------------------------------------------


def perplexity(model: CharModel, ids: np.ndarray) -> float:
    """exp(mean cross-entropy of each next character), reading ``ids`` from a fresh state: the
    model is on average as unsure as a fair die with this many faces."""
    with ts.no_grad():
        logits, _, _ = model(ids[:-1, None])
        loss = nn.functional.cross_entropy(logits.reshape(len(ids) - 1, -1), ids[1:])
    return math.exp(loss.item())


def encode(text: str, chars: list[str]) -> np.ndarray:
    """Character ids; characters outside the alphabet (unseen in training) are dropped."""
    return np.array([chars.index(c) for c in text if c in chars])


def train_char_lstm(text: str, steps: int, hidden: int, held_out: str = "", window: int = 32,
                    streams: int = 4, max_norm: float = MAX_NORM, every: int = 10, patience: int = 60
                    ) -> tuple[CharModel, list[str], list[float], dict[str, Any]]:
    """Train a CharModel on ``text`` with truncated BPTT and gradient clipping. Given ``held_out``
    text, every ``every`` steps it measures the perplexity there and keeps the parameters that did best;
    after ``patience`` steps without a better one it stops (early stopping: on a text this small,
    later steps memorise it rather than learn English);
    returns that model, its alphabet, the loss of every step and what early stopping and clipping did."""
    chars = sorted(set(text))
    ids, held_out_ids = encode(text, chars), encode(held_out, chars)
    model = CharModel(len(chars), hidden)
    optimizer = ts.optim.Adam(model.parameters(), lr=1e-2)
    inputs, targets = nn.sequential_partition(ids, batch_size=streams)  # (T, streams), time-major
    losses: list[float] = []
    norms: list[float] = []  # gradient norms before clipping
    best = (math.inf, 0, model.state_dict())  # (held-out perplexity, step, parameters)
    held_out_history: list[float] = []
    with Progress(steps, desc="char LSTM") as progress:
        while len(losses) < steps:  # one epoch = one walk over the streams, `window` characters at a time
            state = None  # each epoch starts the streams from a zero state
            for x, y in nn.truncated_bptt(inputs, targets, window):
                logits, _, state = model(x, nn.detach_state(state))  # the gradient stops at the window edge
                loss = nn.functional.cross_entropy(logits.reshape(-1, len(chars)), y.reshape(-1))
                optimizer.zero_grad()
                loss.backward()
                norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_norm).item())  # before clipping
                optimizer.step()
                losses.append(loss.item())
                progress.step(loss=losses[-1])
                if held_out and (len(losses) % every == 0 or len(losses) == steps):
                    held_out_history.append(perplexity(model, held_out_ids))
                    if held_out_history[-1] < best[0]:  # state_dict's arrays are never mutated: no copy
                        best = (held_out_history[-1], len(losses), model.state_dict())
                    elif len(losses) - best[1] >= patience:
                        steps = len(losses)  # no better for `patience` steps: this is the last one
                if len(losses) % 50 == 0 or len(losses) == steps:
                    recent = float(np.mean(losses[-50:]))
                    progress.log(f"  step {len(losses):4d}  loss {recent:.3f}  perplexity "
                                 f"{math.exp(recent):6.2f}"
                                 + (f"  held-out perplexity {held_out_history[-1]:6.2f}" if held_out else ""))
                if len(losses) == steps:
                    break
    if held_out:
        model.load_state_dict(best[2])
        print(f"  early stopping: trained {len(losses)} steps, kept the parameters of step {best[1]}, "
              f"the best held-out perplexity ({best[0]:.2f})")
    clipped = sum(norm > max_norm for norm in norms)
    print(f"  gradient norm before clipping: median {np.median(norms):.2f}, max {max(norms):.2f}; "
          f"clipped to {max_norm:g} in {clipped} of {len(norms)} steps")
    return model, chars, losses, {"best_step": best[1], "held_out_history": held_out_history,
                                  "clipped_fraction": clipped / len(norms)}


def main(fast: bool = False) -> dict:
    ts.manual_seed(0)
    rng = np.random.default_rng(0)
    OUT.mkdir(exist_ok=True)

    print("[1/2] a tiny tanh RNN learns 'hello': h,e,l,l -> e,l,l,o")
    hello = learn_hello(steps=100 if fast else 200)
    print(f"  predicted {hello!r} (target 'ello')")

    text = zen_of_python()
    split = text.rindex("\n", 0, int(0.85 * len(text))) + 1  # hold out the last lines, whole
    train_text, held_out = text[:split], text[split:]
    steps = 150 if fast else 450
    print(f"[2/2] a char LSTM on the Zen of Python: {len(train_text)} training characters, "
          f"{len(held_out)} held out; truncated BPTT over 32 steps, Adam, clip_grad_norm_({MAX_NORM:g})")
    model, chars, losses, report = train_char_lstm(train_text, steps, hidden=48 if fast else 64,
                                                   held_out=held_out)
    uniform = len(chars)
    train_ppl = perplexity(model, encode(train_text, chars))
    held_out_ppl = perplexity(model, encode(held_out, chars))
    print(f"  perplexity: training text {train_ppl:.2f}, held-out lines {held_out_ppl:.2f} "
          f"(guessing uniformly over the {uniform} characters: {uniform}).\n  {len(train_text)} characters "
          "are few enough to memorise: once the held-out perplexity turns up, the model learns this "
          "text by heart rather than English, so early stopping kept the parameters from before.")

    samples = []
    for temperature in (0.3, 0.8, 1.5):
        generated = sample(model, chars, "Beautiful", 120, temperature, rng)
        samples.append(f"--- temperature {temperature} ---\n{generated}\n")
        print(f"  temperature {temperature}:\n    " + generated.replace("\n", "\n    "))
    (OUT / "char_rnn_samples.txt").write_text("\n".join(samples))
    print(f"wrote {OUT / 'char_rnn_samples.txt'}")
    return {"hello_prediction": hello, "first_loss": float(np.mean(losses[:10])),
            "last_loss": float(np.mean(losses[-10:])), "train_perplexity": train_ppl,
            "held_out_perplexity": held_out_ppl, "uniform_perplexity": float(uniform), **report}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer steps, smaller model (what CI runs)")
    main(parser.parse_args().fast)
