"""``fused=True`` layers (one node per step, hand-written backward in ``nn.fused``) against the
composed layers, the reference: every output and gradient to 1e-12 in float64 on every layer
configuration, finite differences (``ts.gradcheck``), and the unrolled picture (one node per
step, with its step, layer and direction)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from fixtures.make_rnn_fixtures import KINDS, compare, construct, layer_cases, make_inputs, output_weights

import tinygrad_seq as ts
from tinygrad_seq.autograd import topological_order

LAYER_CASES = [c for kind in KINDS for c in layer_cases(kind)]
CELL_OPS = {"RNN": "rnn_cell", "LSTM": "lstm_cell", "GRU": "gru_cell"}


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


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_fused_graph_has_one_node_per_step_with_its_provenance(kind: str) -> None:
    steps = 5
    layer = getattr(ts.nn, kind)(2, 3, num_layers=2, bidirectional=True, fused=True).double()
    out, _ = layer(ts.randn(steps, 1, 2, dtype=np.float64))
    cells = [n for n in topological_order(out.sum()._node) if n.op == CELL_OPS[kind]]
    where = sorted((n.prov.layer, n.prov.direction, n.prov.step) for n in cells)
    assert where == sorted((layer_, direction, t) for layer_ in range(2) for direction in range(2)
                           for t in range(steps))
    assert "fused=True" in repr(layer)
