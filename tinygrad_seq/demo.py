"""What ``make demo`` runs: a character-level LSTM learns the Zen of Python, end to end.

It trains with truncated BPTT, Adam and gradient clipping, samples text, checks the model's
gradients against finite differences, measures ||dL/dh_t|| back through time, and saves a
checkpoint: every piece of the library a user needs, on text every Python install has.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

import tinygrad_seq as ts
from tinygrad_seq import nn

from .charlm import (
    CharModel,
    encode,
    progress_printer,
    sample,
    save_checkpoint,
    train,
    vocabulary,
    zen_of_python,
)
from .cli import DEMO_CHECKPOINT_NAME, command, error_table
from .files import atomic_write


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
    vocab = vocabulary(text)
    ids = encode(text, vocab)
    model = CharModel(len(vocab), hidden)
    print(f"[1/4] training a char-LSTM ({sum(p.size for p in model.parameters())} parameters) on the Zen "
          f"of Python ({len(text)} characters, {len(vocab)} distinct), truncated BPTT over {window} steps, "
          "4 streams, Adam, gradient clipping")
    optimizer = ts.optim.Adam(model.parameters(), lr=1e-2)
    losses = train(model, ids, steps, window=window, batch=4, clip=1.0, on_progress=progress_printer(steps),
                   optimizer=optimizer)

    print("[2/4] sampling at temperature 0.8:")
    text_out = sample(model, vocab, "Beautiful", 160, 0.8, rng)
    print("  " + text_out.replace("\n", "\n  "))
    atomic_write(out / "demo_sample.txt", text_out.encode("utf-8"))

    print("[3/4] gradient check of a small float64 twin against finite differences:")
    twin = CharModel(len(vocab), 6, embed=4).double()
    for name, param in twin.named_parameters():
        param.name = name  # the report's rows: "rnn.weight_hh_l0", ...
    probe = ids[:6, None]
    report = ts.gradcheck(lambda *params: nn.functional.cross_entropy(twin(probe)[0].reshape(6, -1),
                                                                        ids[1:7]),
                          list(twin.parameters()), raise_exception=False)
    for line in error_table(report):
        print("  " + line)
    print("  passed: backward agrees with finite differences" if report else
          "  FAILED: backward disagrees with finite differences (a bug; please report it)")

    print("[4/4] how far back the gradient reaches: ||dL/dh_t|| for a loss on the last step only "
          "(log-scale bars)")
    cell = nn.LSTMCell(model.rnn.input_size, model.rnn.hidden_size)  # the layer's step, by hand
    cell.load_state_dict({name.removesuffix("_l0"): value for name, value in model.rnn.state_dict().items()})
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
    written = ["demo_sample.txt", "demo_gradient_flow.csv", DEMO_CHECKPOINT_NAME]
    picture = ts.viz.draw(loss, level="cell", max_steps=8,
                          params=[*cell.named_parameters(prefix="lstm_cell"),
                                  *model.head.named_parameters(prefix="head")])
    try:
        ts.viz.save(picture, out / "demo_unrolled_lstm.svg")
        written.append("demo_unrolled_lstm.svg")
    except ts.viz.RenderError as err:
        print(f"  skipped the SVG: {err}")
        written.append("demo_unrolled_lstm.dot")
    try:
        ts.diagnostics.plot_gradient_flow(norms, out / "demo_gradient_flow.png")
        written.append("demo_gradient_flow.png")
    except ImportError:
        print("  skipped the gradient-flow plot: matplotlib is not installed "
              "(pip install 'tinygrad_seq[cli]')")
    table = io.StringIO()
    np.savetxt(table, np.column_stack([np.arange(window), norms]), delimiter=",", header="t,grad_norm",
               comments="")
    atomic_write(out / "demo_gradient_flow.csv", table.getvalue().encode("utf-8"))
    checkpoint = out / DEMO_CHECKPOINT_NAME
    save_checkpoint(checkpoint, model, optimizer, vocab,
                    {"steps": steps, "window": window, "seed": seed, "prime": "Beautiful"})
    print(f"outputs in {out}/: {', '.join(written)}")
    print(f"more text: {command()} sample --checkpoint {checkpoint} --temperature 0.6")
    return {"first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:])),
            "gradcheck_passed": bool(report), "grad_norms": norms}
