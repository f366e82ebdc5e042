"""What ``make demo`` runs: a character-level LSTM learns the Zen of Python, end to end.

It trains with truncated BPTT, Adam and gradient clipping, samples text, checks the model's
gradients against finite differences, measures ||dL/dh_t|| back through time, and saves a
checkpoint: every piece of the library a user needs, on text every Python install has.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from pathlib import Path

import numpy as np

import tinygrad_seq as ts
from tinygrad_seq import nn


def zen_of_python() -> str:
    """The embedded default text: ``import this`` prints it, so capture that."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        import this  # noqa: F401
    return printed.getvalue() or _decode_this()


def _decode_this() -> str:  # `this` prints only on its first import in a process
    import codecs
    import this

    return codecs.decode(this.s, "rot13")


class CharLSTM(nn.Module):
    """Characters -> embedding -> LSTM -> logits over the next character."""

    def __init__(self, vocab: int, hidden: int, embed: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: ts.Tensor | np.ndarray, state: tuple | None = None
                ) -> tuple[ts.Tensor, ts.Tensor, tuple]:
        hidden_states, state = self.lstm(self.embed(ids), state)  # ids (T, B) -> (T, B, H)
        return self.head(hidden_states), hidden_states, state


def sample(model: CharLSTM, chars: list[str], prime: str, length: int, temperature: float,
           rng: np.random.Generator) -> str:
    index = {c: i for i, c in enumerate(chars)}
    out, state = list(prime), None
    with ts.no_grad():
        logits, _, state = model(np.array([[index[c]] for c in prime]), state)
        for _ in range(length):
            probs = (logits[-1, 0] / temperature).softmax(0).numpy().astype(np.float64)
            nxt = int(rng.choice(len(chars), p=probs / probs.sum()))
            out.append(chars[nxt])
            logits, _, state = model(np.array([[nxt]]), state)
    return "".join(out)


def bar(value: float, top: float, width: int = 40) -> str:
    return "#" * max(1, int(round(width * value / top))) if top > 0 else ""


def run_demo(out_dir: str = "tinygrad_seq_out", steps: int = 300, seed: int = 0, hidden: int = 64,
             window: int = 32) -> dict:
    """Train, sample, check, measure; returns the numbers it printed (the tests read them)."""
    ts.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = zen_of_python()
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    model = CharLSTM(len(chars), hidden)
    optimizer = ts.optim.Adam(model.parameters(), lr=1e-2)
    print(f"[1/4] training a char-LSTM ({sum(p.size for p in model.parameters())} parameters) on the Zen "
          f"of Python ({len(text)} characters, {len(chars)} distinct), truncated BPTT over {window} steps, "
          "4 streams, Adam, gradient clipping")
    streams, next_chars = nn.sequential_partition(ids, batch_size=4)  # 4 contiguous streams of text
    start, losses, step = time.perf_counter(), [], 0
    while step < steps:  # one pass over the streams per epoch, in windows of `window` characters
        state = None
        for x, y in nn.truncated_bptt(streams, next_chars, window):
            logits, _, state = model(x, nn.detach_state(state))  # BPTT stops at the window's start
            loss = nn.functional.cross_entropy(logits.reshape(-1, len(chars)), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step % 50 == 0 or step == steps:
                recent = float(np.mean(losses[-50:]))
                print(f"  step {step:4d}  loss {recent:.3f}  perplexity {math.exp(recent):6.2f}  "
                      f"({time.perf_counter() - start:.1f}s)")
            if step == steps:
                break

    print("[2/4] sampling at temperature 0.8:")
    text_out = sample(model, chars, "Beautiful", 160, 0.8, rng)
    print("  " + text_out.replace("\n", "\n  "))
    (out / "sample.txt").write_text(text_out)

    print("[3/4] gradient check of a small float64 twin against finite differences:")
    twin = CharLSTM(len(chars), 6, embed=4).double()
    for name, param in twin.named_parameters():
        param.name = name  # the report's rows: "lstm.weight_hh_l0", ...
    probe = ids[:6, None]
    report = ts.gradcheck(lambda *params: nn.functional.cross_entropy(twin(probe)[0].reshape(6, -1),
                                                                        ids[1:7]),
                          list(twin.parameters()), raise_exception=False)
    for name, max_abs, max_rel, passed in report.per_tensor:
        print(f"  {name:20s} max abs error {max_abs:.2e}  max rel error {max_rel:.2e}  "
              f"{'ok' if passed else 'WRONG'}")

    print("[4/4] how far back the gradient reaches: ||dL/dh_t|| for a loss on the last step only "
          "(log-scale bars)")
    cell = nn.LSTMCell(model.lstm.input_size, model.lstm.hidden_size)  # the layer's step, by hand
    cell.load_state_dict({name.removesuffix("_l0"): value for name, value in model.lstm.state_dict().items()})
    inputs = model.embed(ids[:window])
    state, hs = None, []
    for t in range(window):
        with ts.scope(step=t):  # provenance: the picture draws one box per time step
            state = cell(inputs[t][None], state)
        hs.append(state[0])
    loss = nn.functional.cross_entropy(model.head(state[0]), ids[window:window + 1])
    norms = ts.diagnostics.gradient_flow(loss, hs)
    with ts.viz.record_grad_norms():  # colour the picture by each node's gradient norm
        loss.backward()
    decades = np.log10(norms / norms.min()) + 1  # bars on a log scale: one step per factor of 10
    for t in range(0, window, 3):
        print(f"  t={t:3d}  {norms[t]:.2e}  {bar(decades[t], decades.max())}")
    written = ["sample.txt", "gradient_flow.csv", "char_lstm.safetensors"]
    picture = ts.viz.draw(loss, level="cell", max_steps=8,
                          params=[*cell.named_parameters(prefix="lstm_cell"),
                                  *model.head.named_parameters(prefix="head")])
    try:
        ts.viz.save(picture, out / "unrolled_lstm.svg")
        written.append("unrolled_lstm.svg")
    except ts.viz.GraphvizNotFoundError as err:
        print(f"  skipped the SVG: {err}")
        written.append("unrolled_lstm.dot")
    try:
        ts.diagnostics.plot_gradient_flow(norms, out / "gradient_flow.png")
        written.append("gradient_flow.png")
    except ImportError:
        print("  skipped the gradient-flow plot: matplotlib is not installed "
              "(pip install 'tinygrad_seq[plot]')")
    np.savetxt(out / "gradient_flow.csv", np.column_stack([np.arange(window), norms]), delimiter=",",
               header="t,grad_norm", comments="")
    ts.save(model.state_dict(), out / "char_lstm.safetensors")
    print(f"outputs in {out}/: {', '.join(written)}")
    return {"first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:])),
            "gradcheck_passed": bool(report), "grad_norms": norms}
