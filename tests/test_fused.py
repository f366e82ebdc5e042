"""``fused=True`` layers (one node per layer direction, forward and BPTT written in ``nn.fused``)
against the composed layers, the reference: every output and gradient to 1e-12 in float64 on every
layer configuration, finite differences (``ts.gradcheck``), and the unrolled picture (one box per
step, with its step, layer and direction, coloured as the composed layer's)."""

from __future__ import annotations

import functools
import re
import warnings
import weakref

import numpy as np
import pytest
from fixtures.make_rnn_fixtures import KINDS, compare, construct, layer_cases, make_inputs, output_weights

import tinygrad_seq as ts
from tinygrad_seq.autograd import topological_order

LAYER_CASES = [c for kind in KINDS for c in layer_cases(kind)]
CELL_OPS = {"RNN": "rnn_cell", "LSTM": "lstm_cell", "GRU": "gru_cell"}
SEQUENCE_OPS = {"RNN": "rnn_sequence", "LSTM": "lstm_sequence", "GRU": "gru_sequence"}


class _FusedNN:
    """``ts.nn`` with ``fused=True`` on every constructor, for the fixtures' ``construct``."""

    def __getattr__(self, name: str) -> object:
        return functools.partial(getattr(ts.nn, name), fused=True)


def _results(module: ts.nn.Module, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs, final states and the gradients of every parameter, x, h0 (and c0) for a fixed
    weighting of the outputs."""
    x = ts.tensor(inputs["x"], requires_grad=True)
    states = {key: ts.tensor(inputs[key], requires_grad=True) for key in ("h0", "c0") if key in inputs}
    hx = (states["h0"], states["c0"]) if "c0" in states else states.get("h0")
    out, state = module(x, hx, lengths=inputs.get("lengths"))
    outputs = [out, *(state if isinstance(state, tuple) else [state])]
    sum((o * output_weights(o.shape, k)).sum() for k, o in enumerate(outputs)).backward()
    results = {f"out/{k}": o.numpy() for k, o in enumerate(outputs)}
    results.update({f"grad/{n}": p.grad.numpy() for n, p in module.named_parameters()})
    results["grad/x"] = x.grad.numpy()
    results.update({f"grad/{key}": s.grad.numpy() for key, s in states.items()})
    return results


def _pair(config: dict) -> tuple[ts.nn.Module, ts.nn.Module]:
    """The composed and the fused module of ``config``, holding the same weights."""
    composed, fused = construct(config, ts.nn), construct(config, _FusedNN())
    fused.load_state_dict(composed.state_dict())
    return composed, fused


@pytest.mark.parametrize("config", LAYER_CASES, ids=[c["name"] for c in LAYER_CASES])
def test_fused_equals_composed(config: dict) -> None:
    composed, fused = _pair(config)
    inputs = make_inputs(config, np.random.default_rng(7))
    compare(_results(fused, inputs), _results(composed, inputs), config["name"], atol=1e-12)


GRADCHECK_CASES = [c for c in LAYER_CASES if c["name"].endswith(("h0", "no-bias", "lengths-unsorted"))]


@pytest.mark.parametrize("config", GRADCHECK_CASES, ids=[c["name"] for c in GRADCHECK_CASES])
def test_fused_gradients_match_finite_differences(config: dict) -> None:
    _, fused = _pair(config)
    inputs = make_inputs(config, np.random.default_rng(7))
    x = ts.tensor(inputs["x"], requires_grad=True)
    states = [ts.tensor(inputs[k], requires_grad=True) for k in ("h0", "c0") if k in inputs]
    hx = tuple(states) if len(states) == 2 else states[0]
    lengths = inputs.get("lengths")
    assert ts.gradcheck(lambda: fused(x, hx, lengths=lengths), [x, *states, *fused.parameters()],
                        atol=1e-7, rtol=1e-5, fast_mode=config["layers"] > 1)


def test_fused_gradients_of_frozen_weights_and_constant_input() -> None:
    """Only the inputs that require grad get one: a frozen weight_hh stays without .grad."""
    lstm = ts.nn.LSTM(2, 3, fused=True).double()
    lstm.weight_hh_l0.requires_grad_(False)
    x = ts.randn(5, 2, 2, dtype=np.float64)
    out, _ = lstm(x)
    out.sum().backward()
    assert lstm.weight_hh_l0.grad is None
    assert lstm.weight_ih_l0.grad is not None and np.abs(lstm.weight_ih_l0.grad.numpy()).sum() > 0


@pytest.mark.parametrize("frozen", [None, "bias_ih_l0", "bias_hh_l0"])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_fused_bias_gradients_with_either_bias_frozen(kind: str, frozen: str | None) -> None:
    """RNN and LSTM add both biases to the input projection, so their gradients are one sum, which
    the fused backward makes once and copies: each bias still gets its own array, and a frozen
    bias_ih leaves bias_hh's gradient to be summed itself. All equal to the composed layer's."""
    composed = getattr(ts.nn, kind)(3, 4).double()
    fused = getattr(ts.nn, kind)(3, 4, fused=True).double()
    fused.load_state_dict(composed.state_dict())
    x = np.random.default_rng(3).standard_normal((6, 2, 3))
    grads = []
    for module in (composed, fused):
        if frozen:
            getattr(module, frozen).requires_grad_(False)
        out, _ = module(ts.tensor(x))
        (out * output_weights(out.shape, 0)).sum().backward()
        grads.append({n: p.grad.numpy() for n, p in module.named_parameters() if p.grad is not None})
    assert sorted(grads[1]) == sorted(n for n, _ in composed.named_parameters() if n != frozen)
    for name, grad in grads[1].items():
        np.testing.assert_allclose(grad, grads[0][name], rtol=0, atol=1e-12, err_msg=name)
    if not frozen:
        assert not np.shares_memory(grads[1]["bias_ih_l0"], grads[1]["bias_hh_l0"])


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_fused_layer_is_one_node_per_direction_and_drawn_as_one_box_per_step(kind: str) -> None:
    steps = 5
    layer = getattr(ts.nn, kind)(2, 3, num_layers=2, bidirectional=True, fused=True).double()
    out, _ = layer(ts.randn(steps, 1, 2, dtype=np.float64))
    loss = out.sum()
    sequences = [n for n in topological_order(loss._node) if n.unrolled is not None]
    assert sorted((n.op, n.prov.layer, n.prov.direction, n.prov.step) for n in sequences) == [
        (SEQUENCE_OPS[kind], layer_, direction, None) for layer_ in range(2) for direction in range(2)]
    assert "fused=True" in repr(layer)
    cell_picture = ts.viz.draw(loss, level="cell", show_shapes=False).source
    boxes = re.findall(r"<B>t=(\d)</B><BR/>(\d) ops>", cell_picture)
    assert sorted(int(t) for t, _ in boxes) == sorted(list(range(steps)) * 4)
    # the cell, and in layer 1 x[t] too (layer 0's input is a constant: not in the graph)
    assert sorted(ops for _, ops in boxes) == ["1"] * 2 * steps + ["2"] * 2 * steps
    op_picture = ts.viz.draw(loss, show_shapes=False).source
    assert op_picture.count(f"<BR/>{CELL_OPS[kind]}") == 4 * steps
    assert len(re.findall(r"subgraph cluster_g\d+_t\d+ \{", op_picture)) == 4 * steps


def _step_norms(picture: str) -> list[tuple[str, str]]:
    """(step, gradient norm text) of each cell-level step box, in drawing order."""
    return re.findall(r"<B>t=(\d+)</B><BR/>\d+ ops<BR/>(?:gates [^<]*<BR/>)?‖g‖ ([^>]+)>", picture)


@pytest.mark.parametrize("lengths", [None, [4, 2]])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_fused_steps_are_coloured_by_the_gradient_through_time_as_the_composed_ones(
        kind: str, lengths: list | None) -> None:
    """A step's norm is of the gradient reaching its state, including through time; the fused
    picture reads it from what the sequence node's backward kept, so the two pictures agree (at the
    padded steps of variable lengths too)."""
    pictures, norms = [], []
    for layer in _pair(layer_cases(kind)[0] | {"layers": 1, "bidirectional": True}):
        x = ts.tensor(np.random.default_rng(3).standard_normal((4, 2, layer.input_size)))
        out, state = layer(x, lengths=lengths)
        # the final state is used too: else a composed LSTM's last c_t has no edge out of its box, and
        # the box's norm is of h_t alone, while a fused step's state [h_t, c_t] is one tensor
        loss = sum((s * s).sum() for s in (out, *(state if isinstance(state, tuple) else (state,))))
        pictures.append(_step_norms(ts.viz.draw(loss, level="cell", show_grads=True).source))
        with ts.viz.record_grad_norms():
            loss.backward()
        norms.append(_step_norms(ts.viz.draw(loss, level="cell", show_grads=True).source))
    composed, fused = pictures
    assert len(composed) == 8 and sorted(composed) == sorted(fused)
    assert norms[0] == composed and sorted(norms[1]) == sorted(fused)  # recorded = computed


def test_fused_layer_keeps_per_step_norms_only_while_observed() -> None:
    """Pictures and diagnostics read each step's gradient norm from the sequence node; training alone
    keeps nothing extra, and observing keeps a few floats per step, nothing sequence-sized."""
    lstm = ts.nn.LSTM(2, 3, fused=True).double()
    x = ts.randn(6, 2, 2, dtype=np.float64, requires_grad=True)
    out, _ = lstm(x)
    loss = (out * out).sum()
    (sequence,) = [n for n in topological_order(loss._node) if n.unrolled is not None]
    loss.backward(retain_graph=True)
    kept = sequence.unrolled
    assert kept.state_norms is None and kept.h_norms is None and kept.input_norms is None
    with ts.viz.record_grad_norms():
        loss.backward(retain_graph=True)
    assert kept.state_norms.shape == kept.h_norms.shape == kept.input_norms.shape == (6,)
    # the input's norm per step is its gradient's: x.grad holds two backwards' worth by now
    np.testing.assert_allclose(kept.input_norms, np.linalg.norm(x.grad.numpy().reshape(6, -1), axis=1) / 2)
    assert np.all(kept.state_norms >= kept.h_norms) and np.all(kept.h_norms > 0)


def test_fused_backward_uses_the_weights_of_its_forward() -> None:
    """An optimizer step between two backwards of one graph replaces the weights' arrays; the graph
    must still differentiate what its forward computed, as the composed graph does."""
    grads = []
    for fused in (False, True):
        ts.manual_seed(4)
        gru = ts.nn.GRU(2, 3, fused=fused).double()
        x = ts.tensor(np.random.default_rng(4).standard_normal((5, 2, 2)), requires_grad=True)
        out, _ = gru(x)
        loss = (out * out).sum()
        loss.backward(retain_graph=True)
        first = x.grad.numpy().copy()
        ts.optim.SGD(gru.parameters(), lr=0.5).step()
        x.grad = None
        loss.backward()
        np.testing.assert_allclose(x.grad.numpy(), first, rtol=1e-12)
        grads.append(first)
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12)


def test_fused_relu_rnn_equals_composed_and_gradchecks() -> None:
    """The layer fixtures use tanh; relu's derivative is the fused backward's other branch."""
    composed = ts.nn.RNN(3, 4, nonlinearity="relu", num_layers=2, bidirectional=True).double()
    fused = ts.nn.RNN(3, 4, nonlinearity="relu", num_layers=2, bidirectional=True, fused=True).double()
    fused.load_state_dict(composed.state_dict())
    x = ts.tensor(np.random.default_rng(5).standard_normal((6, 3, 3)), requires_grad=True)
    results = []
    for module in (composed, fused):
        x.grad = None
        out, h_n = module(x, lengths=[6, 2, 4])
        ((out * out).sum() + (h_n * h_n).sum()).backward()
        grads = [p.grad.numpy() for p in module.parameters()]
        results.append([out.numpy(), h_n.numpy(), x.grad.numpy(), *grads])
    for mine, reference in zip(*reversed(results), strict=True):
        np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-12)
    assert ts.gradcheck(lambda: fused(x, lengths=[6, 2, 4]), [x, *fused.parameters()], atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_saturated_fused_gates_are_exact_and_silent(kind: str, dtype: str) -> None:
    """Gate pre-activations far below -700 (exp(-a) overflows to inf in float64 as well as float32)
    give sigmoid 0 with no warning, as the composed layer's; values and gradients equal its own."""
    composed, fused = _pair({"kind": kind, "layers": 1, "bidirectional": False, "bias": True,
                             "batch_first": False, "input_size": 3, "hidden_size": 4})
    composed.to(dtype)
    fused.to(dtype)
    x = np.random.default_rng(3).standard_normal((5, 2, 3)) * 1000  # both signs: saturated both ways
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for module in (fused, composed):
            module.zero_grad()
            out, _ = module(ts.tensor(x.astype(dtype)))
            (out * out).sum().backward()
            results.append([out.numpy(), *(p.grad.numpy() for p in module.parameters())])
    assert np.isfinite(results[0][0]).all()
    for mine, reference in zip(*results, strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-6 if dtype == "float32" else 1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_fused_backward_over_several_chunks_of_steps_equals_composed(kind: str) -> None:
    """Backward goes through the steps in chunks of ``CHUNK_ROWS`` rows; the layer fixtures are one
    chunk, so here T * B spans several, in both directions, with sequences ending mid-chunk."""
    steps, batch = 37, 16  # 16 steps per chunk: 3 chunks, the last one partial
    assert ts.nn.fused.CHUNK_ROWS // batch == 16
    composed, fused = _pair({"kind": kind, "layers": 2, "bidirectional": True, "bias": True,
                             "batch_first": False, "input_size": 3, "hidden_size": 4})
    inputs = {"x": np.random.default_rng(8).standard_normal((steps, batch, 3)),
              "lengths": np.random.default_rng(9).integers(1, steps + 1, batch)}
    compare(_results(fused, inputs), _results(composed, inputs), kind, atol=1e-12)


def test_fused_graph_does_not_keep_the_callers_tensors_alive() -> None:
    """Nodes keep what backward needs, never tensors: dropping the input or the initial state frees
    it and its array (backward needs neither) while the graph lives."""
    lstm = ts.nn.LSTM(2, 3, fused=True).double()
    x = ts.randn(5, 4, 2, dtype=np.float64, requires_grad=True)
    h0, c0 = (ts.randn(1, 4, 3, dtype=np.float64, requires_grad=True) for _ in range(2))
    out, _ = lstm(x, (h0, c0))
    alive = [weakref.ref(kept) for kept in (x, h0, c0, h0.data, c0.data)]
    del x, h0, c0
    assert [ref() for ref in alive] == [None] * 5
    out.sum().backward()
    assert lstm.weight_ih_l0.grad is not None


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_fused_layer_without_a_state_records_none_and_equals_explicit_zeros(kind: str) -> None:
    """Called without a state, the sequence node starts from zeros it writes itself: its inputs are
    the layer input and the four weights, and it computes what explicit zero states give."""
    layer = getattr(ts.nn, kind)(2, 3, fused=True).double()
    x = ts.randn(5, 4, 2, dtype=np.float64, requires_grad=True)
    zeros = tuple(ts.zeros(1, 4, 3, dtype=np.float64) for _ in range(2 if kind == "LSTM" else 1))
    results = []
    for hx in (None, zeros if kind == "LSTM" else zeros[0]):
        layer.zero_grad()
        x.grad = None
        out, _ = layer(x, hx)
        if hx is None:  # an LSTM's output is the h half of the node's [h, c]
            sequence = out._node.parents[0] if kind == "LSTM" else out._node
            assert sequence.op == f"{kind.lower()}_sequence" and len(sequence.parents) == 5
        (out * out).sum().backward()
        results.append([out.data, x.grad.data, *(p.grad.data for p in layer.parameters())])
    for without, given in zip(*results, strict=True):
        np.testing.assert_array_equal(without, given)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_an_empty_batch_runs_as_in_the_composed_layer(kind: str) -> None:
    """Batch 0 failed in a reshape with -1 (and a chunk size divided by the batch)."""
    for fused in (False, True):
        layer = getattr(ts.nn, kind)(3, 4, bidirectional=True, fused=fused)
        x = ts.randn(5, 0, 3, requires_grad=True)
        with ts.viz.record_grad_norms():  # the per-step norms of an empty batch, too
            out, _ = layer(x)
            out.sum().backward()
        assert out.shape == (5, 0, 8) and x.grad.shape == (5, 0, 3)
        assert not layer.weight_hh_l0.grad.numpy().any()
