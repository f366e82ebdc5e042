"""Recurrent cells and layers: gradients, PyTorch parity, variable lengths, provenance, bad input,
and the padding and truncated-BPTT helpers.

Oracles: float64 finite differences (``ts.gradcheck``) for every configuration; the cell
equations written out in numpy; each sequence of a padded batch run on its own; and, when
torch is installed, PyTorch itself (outputs, final states and every gradient, to 1e-10).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from fixtures.make_rnn_fixtures import (
    CELLS,
    KINDS,
    cell_cases,
    compare,
    construct,
    is_cell,
    layer_cases,
    make_inputs,
    run_ours,
    run_torch,
    weights_of,
)

import tinygrad_seq as ts
from tinygrad_seq.autograd import topological_order

LAYER_CASES = [c for kind in KINDS for c in layer_cases(kind)]
CELL_CASES = [c for kind in CELLS for c in cell_cases(kind)]
ALL_CASES = CELL_CASES + LAYER_CASES
IDS = [c["name"] for c in ALL_CASES]


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-a))


def _case_inputs(config: dict) -> tuple[ts.Tensor, list[ts.Tensor], object, np.ndarray | None]:
    """x, the initial-state leaves, hx as the module takes it, and lengths, for ``config``."""
    inputs = make_inputs(config, np.random.default_rng(7))
    x = ts.tensor(inputs["x"], requires_grad=True, name="x")
    states = [ts.tensor(inputs[k], requires_grad=True, name=k) for k in ("h0", "c0") if k in inputs]
    hx = tuple(states) if len(states) == 2 else (states[0] if states else None)
    return x, states, hx, inputs.get("lengths")


# -- gradients against finite differences ------------------------------------------------------


@pytest.mark.parametrize("config", ALL_CASES, ids=IDS)
def test_gradients_match_finite_differences(config: dict) -> None:
    """Every parameter, the input and the initial state; element by element for cells and for
    the richest layer configuration, along random directions for the rest (torch parity
    below checks every element of those)."""
    module = construct(config, ts.nn)
    x, states, hx, lengths = _case_inputs(config)
    elementwise = is_cell(config) or config["name"].endswith("lengths-unsorted")

    def run() -> object:
        return module(x, hx) if is_cell(config) else module(x, hx, lengths=lengths)

    assert ts.gradcheck(run, [x, *states, *module.parameters()], atol=1e-7, rtol=1e-5,
                        fast_mode=not elementwise)


def test_gradients_with_dropout_between_layers() -> None:
    """Training-mode dropout draws one mask per call; gradcheck rewinds the generator, so the
    mask is fixed and the layer is an ordinary function of its inputs."""
    lstm = ts.nn.LSTM(2, 3, num_layers=2, dropout=0.4, bidirectional=True).double()
    x = ts.randn(4, 2, 2, dtype=np.float64, requires_grad=True)
    assert ts.gradcheck(lambda: lstm(x), [x, *lstm.parameters()], atol=1e-7, rtol=1e-5, fast_mode=True)


# -- the equations, written out in numpy ----------------------------------------------------------


def _cell_weights(cell: ts.nn.Module) -> tuple[np.ndarray, ...]:
    return tuple(p.numpy() for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))


def test_lstm_cell_follows_its_equations(rng: np.random.Generator) -> None:
    cell = ts.nn.LSTMCell(3, 4).double()
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    w_ih, w_hh, b_ih, b_hh = _cell_weights(cell)
    gates = dict(zip(ts.nn.LSTM_GATES, np.split(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=1),
                     strict=True))
    c_next = _sigmoid(gates["f"]) * c + _sigmoid(gates["i"]) * np.tanh(gates["g"])
    h_next = _sigmoid(gates["o"]) * np.tanh(c_next)
    h_out, c_out = cell(ts.tensor(x), (ts.tensor(h), ts.tensor(c)))
    np.testing.assert_allclose(h_out.numpy(), h_next, rtol=1e-12)
    np.testing.assert_allclose(c_out.numpy(), c_next, rtol=1e-12)


def test_gru_cell_follows_its_equations(rng: np.random.Generator) -> None:
    cell = ts.nn.GRUCell(3, 4).double()
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    w_ih, w_hh, b_ih, b_hh = _cell_weights(cell)
    gi = dict(zip(ts.nn.GRU_GATES, np.split(x @ w_ih.T + b_ih, 3, axis=1), strict=True))
    gh = dict(zip(ts.nn.GRU_GATES, np.split(h @ w_hh.T + b_hh, 3, axis=1), strict=True))
    r, z = _sigmoid(gi["r"] + gh["r"]), _sigmoid(gi["z"] + gh["z"])
    n = np.tanh(gi["n"] + r * gh["n"])  # r scales W_hn h + b_hn, bias included
    np.testing.assert_allclose(cell(ts.tensor(x), ts.tensor(h)).numpy(), (1 - z) * n + z * h, rtol=1e-12)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_follows_its_equation(nonlinearity: str, rng: np.random.Generator) -> None:
    cell = ts.nn.RNNCell(3, 4, nonlinearity=nonlinearity).double()
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    w_ih, w_hh, b_ih, b_hh = _cell_weights(cell)
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    expected = np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0)
    np.testing.assert_allclose(cell(ts.tensor(x), ts.tensor(h)).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_one_layer_equals_its_cell_unrolled(kind: str, rng: np.random.Generator) -> None:
    layer = getattr(ts.nn, kind)(3, 4).double()
    cell = getattr(ts.nn, kind + "Cell")(3, 4).double()
    cell.load_state_dict({name[:-len("_l0")]: value for name, value in layer.state_dict().items()})
    xs = ts.tensor(rng.standard_normal((5, 2, 3)))
    state = None
    for t in range(5):
        state = cell(xs[t], state)
    out, final = layer(xs)
    h_last = state[0] if kind == "LSTM" else state
    np.testing.assert_allclose(out.numpy()[-1], h_last.numpy(), rtol=1e-12)
    if kind == "LSTM":
        np.testing.assert_allclose(final[1].numpy()[0], state[1].numpy(), rtol=1e-12)


@pytest.mark.parametrize("kind", CELLS)
def test_unbatched_cell_equals_a_batch_of_one(kind: str, rng: np.random.Generator) -> None:
    cell = getattr(ts.nn, kind)(3, 4).double()
    x, h = rng.standard_normal(3), rng.standard_normal(4)
    state = (ts.tensor(h), ts.tensor(h)) if kind == "LSTMCell" else ts.tensor(h)
    batched_state = (ts.tensor(h[None]), ts.tensor(h[None])) if kind == "LSTMCell" else ts.tensor(h[None])
    single, batched = cell(ts.tensor(x), state), cell(ts.tensor(x[None]), batched_state)
    for one, many in zip(*[r if isinstance(r, tuple) else (r,) for r in (single, batched)], strict=True):
        assert one.shape == (4,)
        np.testing.assert_allclose(one.numpy(), many.numpy()[0], rtol=1e-14)


# -- variable lengths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_lengths_equal_running_each_sequence_alone(kind: str, rng: np.random.Generator) -> None:
    """Padded batch with unsorted lengths vs each sequence on its own: outputs up to its length
    (zero after), h_n / c_n from its own last step, forward and reverse directions."""
    layer = getattr(ts.nn, kind)(2, 3, num_layers=2, bidirectional=True).double()
    lengths = [3, 5, 1, 4]
    x = rng.standard_normal((5, 4, 2))
    h0 = rng.standard_normal((4, 4, 3))
    hx = (ts.tensor(h0), ts.tensor(-h0)) if kind == "LSTM" else ts.tensor(h0)
    out, state = layer(ts.tensor(x), hx, lengths=lengths)
    states = state if kind == "LSTM" else (state,)
    for b, length in enumerate(lengths):
        alone_hx = (ts.tensor(h0[:, b]), ts.tensor(-h0[:, b])) if kind == "LSTM" else ts.tensor(h0[:, b])
        alone_out, alone_state = layer(ts.tensor(x[:length, b]), alone_hx)
        np.testing.assert_allclose(out.numpy()[:length, b], alone_out.numpy(), rtol=1e-12)
        assert not out.numpy()[length:, b].any()
        alone_states = alone_state if kind == "LSTM" else (alone_state,)
        for batched, alone in zip(states, alone_states, strict=True):
            np.testing.assert_allclose(batched.numpy()[:, b], alone.numpy(), rtol=1e-12)


def test_padding_never_reaches_outputs_or_gradients() -> None:
    """nan padding: outputs and gradients stay finite, and the padding gets exactly zero gradient."""
    gru = ts.nn.GRU(2, 3, bidirectional=True, batch_first=True).double()
    data = np.random.default_rng(3).standard_normal((3, 4, 2))
    lengths = np.array([4, 2, 3])
    for b, length in enumerate(lengths):
        data[b, length:] = np.nan
    x = ts.tensor(data, requires_grad=True)
    out, h_n = gru(x, lengths=ts.tensor(lengths))
    (out.sum() + h_n.sum()).backward()
    assert np.isfinite(out.numpy()).all() and np.isfinite(h_n.numpy()).all()
    assert all(np.isfinite(p.grad.numpy()).all() for p in gru.parameters())
    for b, length in enumerate(lengths):
        assert not x.grad.numpy()[b, length:].any()
        assert np.abs(x.grad.numpy()[b, :length]).min() > 0


def test_lengths_shorter_than_the_input_keep_its_length() -> None:
    lstm = ts.nn.LSTM(2, 3)
    out, (h_n, _) = lstm(ts.randn(6, 2, 2), lengths=[2, 4])
    assert out.shape == (6, 2, 3) and not out.numpy()[4:].any() and not out.numpy()[2:, 0].any()
    np.testing.assert_array_equal(h_n.numpy()[0, 1], out.numpy()[3, 1])


# -- provenance ------------------------------------------------------------------------------------


PRODUCTS = ("matmul", "addmm")  # a step's h @ W_hh^T and a projection (addmm where a bias or x_t is added)


def _nodes(*tensors: ts.Tensor) -> list:
    seen, nodes = set(), []
    for tensor in tensors:
        for node in topological_order(tensor._node):
            if id(node) not in seen:
                seen.add(id(node))
                nodes.append(node)
    return nodes


@pytest.mark.parametrize(("kind", "gates"), [("LSTM", ts.nn.LSTM_GATES), ("GRU", ts.nn.GRU_GATES),
                                             ("RNN", ())])
def test_every_step_op_records_layer_direction_step_and_gate(kind: str, gates: tuple) -> None:
    class Model(ts.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = getattr(ts.nn, kind)(2, 3, num_layers=2, bidirectional=True)

        def forward(self, x: ts.Tensor) -> object:
            return self.encoder(x)

    out, state = Model()(ts.randn(4, 2, 2))
    nodes = [n for n in _nodes(out, *(state if isinstance(state, tuple) else (state,))) if not n.is_leaf]
    assert all(n.prov.module == "Model.encoder" for n in nodes)
    in_steps = [n for n in nodes if n.prov.step is not None]
    assert all(n.prov.layer is not None and n.prov.direction is not None for n in in_steps)
    assert all(n.prov.step is not None for n in nodes if n.op in ("sigmoid", "tanh"))
    # one recurrent product per layer, direction and step, each in its own cluster
    steps = {(n.prov.layer, n.prov.direction, n.prov.step) for n in in_steps if n.op in PRODUCTS}
    assert steps == {(layer, direction, t) for layer in (0, 1) for direction in (0, 1) for t in range(4)}
    # the input projections: one product per layer and direction, outside the steps
    projections = [n for n in nodes if n.op in PRODUCTS and n.prov.step is None]
    assert sorted((n.prov.layer, n.prov.direction) for n in projections) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    labelled = {(n.prov.layer, n.prov.direction, n.prov.step, n.prov.gate) for n in nodes if n.prov.gate}
    assert labelled == {s + (g,) for s in steps for g in gates}


def test_cell_gates_are_labelled_inside_a_user_scope() -> None:
    cell = ts.nn.LSTMCell(2, 3)
    with ts.scope(step=5):
        h, c = cell(ts.randn(1, 2))
    gated = {n.prov.gate for n in _nodes(h, c) if not n.is_leaf and n.prov.gate}
    assert gated == set(ts.nn.LSTM_GATES)
    assert all(n.prov.step == 5 for n in _nodes(h, c) if not n.is_leaf)


def test_each_run_of_a_layer_is_one_call_and_a_decoder_loop_keeps_its_own_steps() -> None:
    gru = ts.nn.GRU(2, 3)
    first, _ = gru(ts.randn(4, 1, 2))
    second, _ = gru(ts.randn(4, 1, 2))
    calls = [{n.prov.call for n in _nodes(out) if not n.is_leaf and n.prov.step is not None}
             for out in (first, second)]
    assert all(len(c) == 1 and None not in c for c in calls) and calls[0] != calls[1]

    h, states = None, []  # one step per call, inside the caller's time loop: the caller's t counts
    for t in range(3):
        with ts.scope(step=t):
            out, h = gru(ts.randn(1, 1, 2), h)
        states.append(out)
    steps = [{(n.prov.step, n.prov.call) for n in topological_order(out._node)
              if n.op in PRODUCTS and n.prov.layer is not None and n.prov.step is not None} for out in states]
    assert steps[-1] == {(0, None), (1, None), (2, None)}


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-way", "bidirectional"])
@pytest.mark.parametrize("fused", [False, True], ids=["composed", "fused"])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_final_state_is_its_own_array(kind: str, fused: bool, bidirectional: bool) -> None:
    """h_n (and c_n) share no memory with the output (the composed layer's steps write their h into
    its rows, the fused node keeps every step's state in one buffer): a final state carried on
    (TBPTT) must not keep the previous window's whole output alive."""
    layer = getattr(ts.nn, kind)(3, 4, bidirectional=bidirectional, fused=fused)
    out, state = layer(ts.tensor(np.random.default_rng(1).standard_normal((20, 2, 3)), dtype="float32"))
    for final in state if kind == "LSTM" else (state,):
        for direction in final.unbind(0):
            assert direction.shape == (2, 4) and not np.shares_memory(direction.numpy(), out.numpy())
            assert direction.numpy().base is None or direction.numpy().base.size <= 2 * 2 * 4


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_fused_output_cannot_write_what_backward_reads(kind: str) -> None:
    """The fused output is a view of the node's buffer of every step's state, which its backward
    reads: neither the view nor the buffer behind it (``.base``) is writable."""
    out, _ = getattr(ts.nn, kind)(3, 4, fused=True)(ts.randn(5, 2, 3))
    array = out.numpy()
    while array is not None:
        assert not array.flags.writeable
        array = array.base


@pytest.mark.parametrize(("bidirectional", "direction"), [(False, 0), (True, 0), (True, 1)],
                         ids=["one-way", "bidirectional-forward", "bidirectional-reverse"])
def test_steps_write_their_h_into_the_output_rows(bidirectional: bool, direction: int) -> None:
    """The composed output is no copy of the steps' states: each step but the last (the final state)
    writes its h into its row (its direction's half, when bidirectional), so the states the graph
    keeps and the output are the same memory."""
    layer = ts.nn.RNN(3, 4, bidirectional=bidirectional)
    out, _ = layer(ts.randn(5, 2, 3))
    hs = {node.prov.step: node.backward.y for node in topological_order(out._node)  # what tanh saved
          if node.op == "tanh" and node.prov.direction == direction}
    assert sorted(hs) == list(range(5))
    last = 0 if direction else 4
    half = out.numpy()[..., 4 * direction:4 * (direction + 1)]
    for t, h in hs.items():
        np.testing.assert_array_equal(h, half[t])
        assert np.shares_memory(h, out.numpy()) == (t != last), t


@pytest.mark.parametrize("direction", [0, 1], ids=["forward", "reverse"])
def test_a_bidirectional_output_follows_a_direction_whose_output_was_replaced(direction: int) -> None:
    """gradcheck's replays may replace a direction's stacked output (a tap): the layer's output must
    then be made from what replaced it, not from the rows the steps wrote."""
    layer = ts.nn.GRU(2, 3, bidirectional=True).double()
    x = ts.tensor(np.random.default_rng(1).standard_normal((4, 2, 2)))
    plain, _ = layer(x)

    def shift(out: np.ndarray, op: str, node: object) -> np.ndarray:
        return out + 1.0 if op == "stack" and ts.provenance.current.direction == direction else out

    ts.autograd.state.tap = shift
    try:
        shifted, _ = layer(x)
    finally:
        ts.autograd.state.tap = None
    change = shifted.numpy() - plain.numpy()
    np.testing.assert_allclose(change[..., 3 * direction:3 * (direction + 1)], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(change[..., 3 * (1 - direction):3 * (2 - direction)], 0.0)


def test_a_replaced_step_keeps_what_its_op_saved_for_backward() -> None:
    """A tap replaces an op's output after the op saved it: the replaced h must not be written over
    the saved one (the layer's rows), so gradients equal a cell loop's under the same tap."""
    layer, cell = ts.nn.RNN(3, 4).double(), ts.nn.RNNCell(3, 4).double()
    cell.load_state_dict({name.removesuffix("_l0"): value for name, value in layer.state_dict().items()})
    rng = np.random.default_rng(2)
    x_data, weights = rng.standard_normal((5, 2, 3)), rng.standard_normal((5, 2, 4))

    def shift(out: np.ndarray, op: str, node: object) -> np.ndarray:
        return out + 1.0 if op == "tanh" and ts.provenance.current.step == 1 else out

    grads = []
    ts.autograd.state.tap = shift
    try:
        for run_cells in (False, True):
            x = ts.tensor(x_data, requires_grad=True)
            if run_cells:
                h, states = None, []
                for t in range(5):
                    with ts.scope(step=t):
                        h = cell(x[t], h)
                    states.append(h)
                out = ts.stack(states)
            else:
                out, _ = layer(x)
            (out * ts.tensor(weights)).sum().backward()
            grads.append(x.grad.numpy())
    finally:
        ts.autograd.state.tap = None
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


def test_output_follows_a_step_whose_h_was_replaced() -> None:
    """gradcheck replays a function replacing one op's output at a time (``autograd.state.tap``); a
    step's h that is not in its row any more must still be the output's row."""
    layer = ts.nn.RNN(3, 4).double()
    x = ts.randn(5, 2, 3, dtype=np.float64)

    def shift(out: np.ndarray, op: str, node: object) -> np.ndarray:
        return out + 1.0 if op == "tanh" else out

    ts.autograd.state.tap = shift
    try:
        out, h_n = layer(x)
    finally:
        ts.autograd.state.tap = None
    w_ih, w_hh, b_ih, b_hh = (p.numpy() for p in layer.parameters())
    h = np.zeros((2, 4))
    for t in range(5):  # the recurrence with every h shifted by one, as the tap made it
        h = np.tanh(x.numpy()[t] @ w_ih.T + b_ih + b_hh + h @ w_hh.T) + 1.0
        np.testing.assert_allclose(out.numpy()[t], h, rtol=1e-12)
    np.testing.assert_array_equal(h_n.numpy()[0], out.numpy()[4])


# -- parameters, names, repr -----------------------------------------------------------------------

PYTORCH_LSTM_2_LAYER_BIDIRECTIONAL = [
    "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
    "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse",
    "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1",
    "weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse", "bias_hh_l1_reverse",
]


def test_state_dict_names_and_shapes_are_pytorchs() -> None:
    lstm = ts.nn.LSTM(5, 7, num_layers=2, bidirectional=True)
    state = lstm.state_dict()
    assert list(state) == PYTORCH_LSTM_2_LAYER_BIDIRECTIONAL
    assert state["weight_ih_l0"].shape == (28, 5) and state["weight_ih_l1_reverse"].shape == (28, 14)
    assert state["weight_hh_l1"].shape == (28, 7) and state["bias_hh_l0_reverse"].shape == (28,)
    assert list(ts.nn.GRU(5, 7, bias=False).state_dict()) == ["weight_ih_l0", "weight_hh_l0"]
    assert ts.nn.GRU(5, 7).weight_ih_l0.shape == (21, 5) and ts.nn.RNN(5, 7).weight_hh_l0.shape == (7, 7)
    assert list(ts.nn.LSTMCell(5, 7).state_dict()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert ts.nn.LSTMCell(5, 7, bias=False).bias_ih is None


@pytest.mark.parametrize("make", [lambda: ts.nn.LSTM(3, 50, num_layers=2), lambda: ts.nn.GRUCell(3, 50),
                                  lambda: ts.nn.RNN(3, 50)], ids=["LSTM", "GRUCell", "RNN"])
def test_initial_weights_are_uniform_within_one_over_sqrt_hidden(make: object) -> None:
    module, bound = make(), 1 / np.sqrt(50)
    values = np.concatenate([p.numpy().ravel() for p in module.parameters()])
    assert values.dtype == np.float32
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.99 * bound
    assert abs(values.mean()) < 0.05 * bound and abs(values.std() - bound / np.sqrt(3)) < 0.05 * bound


def test_reprs_are_pytorchs() -> None:
    assert repr(ts.nn.LSTM(10, 20, num_layers=2, batch_first=True, bidirectional=True)) == \
        "LSTM(10, 20, num_layers=2, batch_first=True, bidirectional=True)"
    assert repr(ts.nn.GRU(3, 4, bias=False, num_layers=2, dropout=0.5)) == \
        "GRU(3, 4, num_layers=2, bias=False, dropout=0.5)"
    assert repr(ts.nn.RNNCell(3, 4, nonlinearity="relu")) == "RNNCell(3, 4, nonlinearity=relu)"
    assert repr(ts.nn.LSTMCell(3, 4, bias=False)) == "LSTMCell(3, 4, bias=False)"


def test_dropout_on_one_layer_warns_as_pytorch_does() -> None:
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        ts.nn.LSTM(2, 3, dropout=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ts.nn.GRU(2, 3, num_layers=2, dropout=0.2)


def test_dropout_acts_between_layers_only_while_training(rng: np.random.Generator) -> None:
    """With p=1 the second layer sees zeros, so its output is that of a one-layer LSTM fed zeros;
    in eval mode the layer equals the same weights without dropout."""
    with pytest.warns(UserWarning):
        ts.nn.RNN(2, 3, dropout=1.0)  # (the one-layer warning, not under test here)
    lstm = ts.nn.LSTM(2, 3, num_layers=2, dropout=1.0).double()
    x = ts.tensor(rng.standard_normal((4, 2, 2)))
    top = ts.nn.LSTM(3, 3).double()
    top.load_state_dict({k.replace("l1", "l0"): v for k, v in lstm.state_dict().items() if k.endswith("l1")})
    np.testing.assert_allclose(lstm(x)[0].numpy(), top(ts.zeros(4, 2, 3, dtype=np.float64))[0].numpy())
    plain = ts.nn.LSTM(2, 3, num_layers=2).double()
    plain.load_state_dict(lstm.state_dict())
    np.testing.assert_array_equal(lstm.eval()(x)[0].numpy(), plain(x)[0].numpy())


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: ts.nn.LSTM(32, 8)(ts.randn(5, 2, 31)), ValueError,
     "LSTM expected input of size 32 in the last dimension, got 31"),
    (lambda: ts.nn.GRU(3, 4)(ts.randn(5)), ValueError,
     "GRU expected input of 2 dims (unbatched) or 3 dims (batched), got shape (5,)"),
    (lambda: ts.nn.RNN(3, 4)(np.zeros((5, 2, 3))), TypeError, "RNN expected a Tensor input, got ndarray"),
    (lambda: ts.nn.LSTM(3, 8, num_layers=2, bidirectional=True, batch_first=True)(
        ts.randn(2, 5, 3), (ts.zeros(4, 5, 8), ts.zeros(4, 2, 8))), ValueError,
     "LSTM expected h0 of shape (4, 2, 8) (num_layers * num_directions, batch, hidden_size), not "
     "batch-first even with batch_first=True, got (4, 5, 8)"),
    (lambda: ts.nn.LSTM(3, 8)(ts.randn(5, 2, 3), (ts.zeros(1, 2, 8), ts.zeros(1, 2, 7))), ValueError,
     "LSTM expected c0 of shape (1, 2, 8)"),
    (lambda: ts.nn.GRU(3, 8, num_layers=2)(ts.randn(5, 3), ts.zeros(2, 1, 8)), ValueError,
     "GRU expected h0 of shape (2, 8) (num_layers * num_directions, hidden_size), got (2, 1, 8)"),
    (lambda: ts.nn.LSTM(3, 8)(ts.randn(5, 2, 3), ts.zeros(1, 2, 8)), TypeError,
     "LSTM expected the state as a pair (h0, c0), got Tensor"),
    (lambda: ts.nn.LSTM(3, 8)(ts.randn(5, 2, 3), lengths=[0, 5]), ValueError,
     "LSTM: lengths must be between 1 and the sequence length 5, got [0] at batch positions [0]"),
    (lambda: ts.nn.GRU(3, 8)(ts.randn(5, 2, 3), lengths=[6, 5]), ValueError,
     "GRU: lengths must be between 1 and the sequence length 5, got [6]"),
    (lambda: ts.nn.GRU(3, 8)(ts.randn(5, 2, 3), lengths=[5, 5, 5]), ValueError,
     "GRU: expected one length per sequence of the batch (2), got lengths of shape (3,)"),
    (lambda: ts.nn.RNN(3, 8)(ts.randn(5, 2, 3), lengths=[2.0, 5.0]), TypeError,
     "RNN: lengths must be integers, got dtype float64"),
    (lambda: ts.nn.RNN(3, 8)(ts.randn(5, 3), lengths=[5]), ValueError,
     "RNN: lengths need batched (3-D) input"),
    (lambda: ts.nn.LSTMCell(4, 8)(ts.randn(2, 3)), ValueError,
     "LSTMCell expected input of size 4 in the last dimension, got 3"),
    (lambda: ts.nn.GRUCell(3, 8)(ts.randn(2, 3), ts.zeros(3, 8)), ValueError,
     "GRUCell expected hx of shape (2, 8) (batch, hidden_size), got (3, 8)"),
    (lambda: ts.nn.RNNCell(3, 8)(ts.randn(3), ts.zeros(1, 8)), ValueError,
     "RNNCell expected hx of shape (8,) (hidden_size,) for unbatched input, got (1, 8)"),
    (lambda: ts.nn.RNN(3, 4, nonlinearity="sigmoid"), ValueError, "RNN: unknown nonlinearity 'sigmoid'"),
    (lambda: ts.nn.LSTM(3, 4, num_layers=2, dropout=1.5), ValueError,
     "LSTM: dropout probability has to be between 0 and 1, but got 1.5"),
    (lambda: ts.nn.GRU(3, 0), ValueError, "GRU: hidden_size must be an integer >= 1, got 0"),
    (lambda: ts.nn.LSTM(3, 4)(ts.randn(5, 2, 3, dtype=np.float64)), TypeError,
     "LSTM expected input of dtype float32 (its parameters' dtype), got float64"),
    (lambda: ts.nn.GRU(3, 4).double()(ts.randn(5, 2, 3, dtype=np.float64), ts.zeros(1, 2, 4)), TypeError,
     "GRU expected h0 of dtype float64 (its parameters' dtype), got float32"),
    (lambda: ts.nn.LSTMCell(3, 4)(ts.randn(2, 3), (ts.zeros(2, 4), ts.zeros(2, 4, dtype=np.float64))),
     TypeError, "LSTMCell expected cx of dtype float32 (its parameters' dtype), got float64"),
    (lambda: ts.nn.RNNCell(3, 4).double()(ts.randn(3)), TypeError,
     "RNNCell expected input of dtype float64 (its parameters' dtype), got float32"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_is_named(call: object, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call()


@pytest.mark.parametrize("fused", [False, True], ids=["composed", "fused"])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_parameters_of_mixed_dtypes_are_refused(kind: str, fused: bool) -> None:
    """As in PyTorch: a layer computes in one dtype and writes its states into buffers of it, so a
    parameter given an array of another dtype (``.data``) is an error, not a silent cast."""
    layer = getattr(ts.nn, kind)(3, 4, num_layers=2, fused=fused)
    layer.weight_hh_l1.data = np.zeros(layer.weight_hh_l1.shape)  # float64 in a float32 layer
    with pytest.raises(TypeError, match=re.escape(f"{kind}: parameter weight_hh_l1 is float64 but "
                                                  "weight_ih_l0 is float32")):
        layer(ts.randn(5, 2, 3))
    layer.to(np.float32)
    assert layer(ts.randn(5, 2, 3))[0].dtype == np.float32


# -- live PyTorch parity --------------------------------------------------------------------------


@pytest.mark.parametrize("config", ALL_CASES, ids=IDS)
def test_matches_pytorch_live(config: dict) -> None:
    """PyTorch's weights loaded into ours: outputs, final states and the gradient of every
    parameter, input and initial state agree to 1e-10 (lengths via pack_padded_sequence)."""
    pytest.importorskip("torch")
    inputs = make_inputs(config, np.random.default_rng(11))
    reference = run_torch(config, inputs, seed=5)
    assert list(construct(config, ts.nn).state_dict()) == list(weights_of(reference))
    compare(run_ours(config, inputs, weights_of(reference)), reference, config["name"])


def test_matches_pytorch_on_a_longer_float32_sequence() -> None:
    """A realistic size in float32: PyTorch and ours agree to float32 rounding."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)
    ours = ts.nn.LSTM(8, 16, num_layers=2, batch_first=True)
    ours.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 50, 8)).astype(np.float32)
    expected, _ = reference(torch.tensor(x))
    out, _ = ours(ts.tensor(x))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), atol=1e-5)


# -- pad_sequence and lengths helpers ------------------------------------------------------------


def test_pad_sequence_pads_stacks_and_passes_gradients() -> None:
    a = ts.tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    b = ts.tensor(np.ones((1, 2)), requires_grad=True)
    padded = ts.nn.utils.rnn.pad_sequence([a, b], padding_value=-1.0)
    assert padded.shape == (3, 2, 2)
    np.testing.assert_array_equal(padded.numpy()[:, 0], a.numpy())
    np.testing.assert_array_equal(padded.numpy()[:, 1], [[1, 1], [-1, -1], [-1, -1]])
    first = ts.nn.utils.rnn.pad_sequence([a, b], batch_first=True)
    assert first.shape == (2, 3, 2) and first.numpy()[1, 1:].sum() == 0
    (padded * np.arange(12.0).reshape(3, 2, 2)).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [[0, 1], [4, 5], [8, 9]])
    np.testing.assert_array_equal(b.grad.numpy(), [[2, 3]])
    with pytest.raises(ValueError, match="same trailing shape"):
        ts.nn.utils.rnn.pad_sequence([ts.zeros(2, 3), ts.zeros(2, 4)])


def test_length_mask_marks_valid_steps() -> None:
    mask = ts.nn.utils.rnn.length_mask([2, 3, 1])
    np.testing.assert_array_equal(mask.numpy(), [[1, 1, 1], [1, 1, 0], [0, 1, 0]])
    assert ts.nn.utils.rnn.length_mask([1, 2], total_length=4, batch_first=True).shape == (2, 4)


def test_padded_batch_round_trip_through_a_layer(rng: np.random.Generator) -> None:
    sequences = [ts.tensor(rng.standard_normal((n, 2))) for n in (3, 1, 2)]
    padded = ts.nn.utils.rnn.pad_sequence(sequences, batch_first=True)
    gru = ts.nn.GRU(2, 3, batch_first=True).double()
    out, h_n = gru(padded, lengths=[len(s) for s in sequences])
    for b, seq in enumerate(sequences):
        np.testing.assert_allclose(h_n.numpy()[0, b], gru(seq)[1].numpy()[0], rtol=1e-12)


# -- truncated BPTT -------------------------------------------------------------------------------


def test_detach_state_keeps_structure_and_cuts_the_graph() -> None:
    h = ts.randn(2, 3, requires_grad=True) * 2
    state = (h, [h, None])
    detached = ts.nn.detach_state(state)
    assert isinstance(detached, tuple) and isinstance(detached[1], list) and detached[1][1] is None
    assert not detached[0].requires_grad and np.array_equal(detached[0].numpy(), h.numpy())
    assert ts.nn.detach_state(None) is None
    with pytest.raises(TypeError, match="detach_state"):
        ts.nn.detach_state({"h": h})


def test_sequential_partition_makes_contiguous_streams_and_next_step_targets() -> None:
    inputs, targets = ts.nn.sequential_partition(np.arange(23), batch_size=3, offset=1)
    # 21 usable tokens after the offset and one target each: 3 streams of 7 steps, time-major
    assert inputs.shape == targets.shape == (7, 3)
    np.testing.assert_array_equal(inputs.numpy()[:, 0], np.arange(1, 8))
    np.testing.assert_array_equal(inputs.numpy()[:, 2], np.arange(15, 22))
    np.testing.assert_array_equal(targets.numpy(), inputs.numpy() + 1)
    with pytest.raises(ValueError, match="too short"):
        ts.nn.sequential_partition(np.arange(3), batch_size=3)


def test_truncated_bptt_windows_carry_state_forward_and_cut_gradients(rng: np.random.Generator) -> None:
    """Windows with the state carried detached give the same outputs as one pass over the whole
    sequence, while each backward stays inside its window."""
    lstm = ts.nn.LSTM(2, 3).double()
    xs = ts.tensor(rng.standard_normal((10, 2, 2)), requires_grad=True)
    ys = np.arange(10)
    full, _ = lstm(xs)
    state, outputs, targets = None, [], []
    for xb, yb in ts.nn.truncated_bptt(xs, ys, window=4):
        out, state = lstm(xb, ts.nn.detach_state(state))
        outputs.append(out.numpy())
        targets.append(yb.numpy())
        out.sum().backward()
    assert [len(o) for o in outputs] == [4, 4, 2]
    np.testing.assert_allclose(np.concatenate(outputs), full.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(np.concatenate(targets), ys)
    # Had the state not been detached, the later windows' losses would add to the first window's
    # input gradient; it must be exactly that of the first window's loss alone.
    first = ts.tensor(xs.numpy()[:4], requires_grad=True)
    lstm(first)[0].sum().backward()
    np.testing.assert_allclose(xs.grad.numpy()[:4], first.grad.numpy(), rtol=1e-12)


def test_truncated_bptt_checks_its_arguments_eagerly() -> None:
    with pytest.raises(ValueError, match="window must be a positive integer"):
        ts.nn.truncated_bptt(np.zeros((4, 2)), np.zeros((4, 2)), window=0)
    with pytest.raises(ValueError, match="same number of time steps"):
        ts.nn.truncated_bptt(np.zeros((4, 2)), np.zeros((3, 2)), window=2)
    windows = list(ts.nn.truncated_bptt(np.zeros((2, 5, 1)), np.zeros((2, 5)), window=2, batch_first=True))
    assert [xb.shape for xb, _ in windows] == [(2, 2, 1), (2, 2, 1), (2, 1, 1)]

