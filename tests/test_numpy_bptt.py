"""The benchmark's hand-written numpy BPTT (benchmarks/numpy_bptt.py) computes the same loss and
gradients as the library's layers and as PyTorch's, so bench_rnn.py compares like with like."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import tinygrad_seq as ts

_SPEC = importlib.util.spec_from_file_location(
    "numpy_bptt", Path(__file__).resolve().parents[1] / "benchmarks" / "numpy_bptt.py")
numpy_bptt = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(numpy_bptt)

CELLS = {"rnn": (ts.nn.RNN, 1), "lstm": (ts.nn.LSTM, 4), "gru": (ts.nn.GRU, 3)}
STEPS, BATCH, FEATURES, HIDDEN = 6, 3, 4, 5
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _problem(cell: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Input (T, B, I), output gradient G and weights scaled so the gates are not saturated."""
    gates = CELLS[cell][1]
    x = rng.standard_normal((STEPS, BATCH, FEATURES))
    out_grad = rng.standard_normal((STEPS, BATCH, HIDDEN))
    shapes = {"weight_ih": (gates * HIDDEN, FEATURES), "weight_hh": (gates * HIDDEN, HIDDEN),
              "bias_ih": (gates * HIDDEN,), "bias_hh": (gates * HIDDEN,)}
    weights = {name: 0.5 * rng.standard_normal(shape) for name, shape in shapes.items()}
    return x, out_grad, weights


def _ours(cell: str, x: np.ndarray, out_grad: np.ndarray, weights: dict) -> tuple[float, dict]:
    layer = CELLS[cell][0](FEATURES, HIDDEN).double()
    layer.load_state_dict({f"{name}_l0": value for name, value in weights.items()})
    inp = ts.tensor(x, requires_grad=True)
    out, _ = layer(inp)
    loss = (out * ts.tensor(out_grad)).sum()
    loss.backward()
    grads = {name: getattr(layer, f"{name}_l0").grad.data for name in NAMES}
    grads["input"] = inp.grad.data
    return float(loss.data), grads


def _assert_same(loss: float, grads: dict, ref_loss: float, ref_grads: dict) -> None:
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10, atol=1e-10)
    assert set(grads) == set(ref_grads)
    for name, ref in ref_grads.items():
        assert grads[name].shape == ref.shape, name
        np.testing.assert_allclose(grads[name], ref, rtol=1e-10, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_matches_library_layer(cell: str, rng: np.random.Generator) -> None:
    x, out_grad, weights = _problem(cell, rng)
    ref_loss, ref_grads = numpy_bptt.BPTT[cell](x, out_grad, **weights)
    loss, grads = _ours(cell, x, out_grad, weights)
    assert all(np.abs(g).max() > 1e-3 for g in ref_grads.values())  # every gradient is exercised
    _assert_same(loss, grads, ref_loss, ref_grads)


@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch(cell: str, rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    x, out_grad, weights = _problem(cell, rng)
    ref_loss, ref_grads = numpy_bptt.BPTT[cell](x, out_grad, **weights)
    layer = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        FEATURES, HIDDEN, dtype=torch.float64)
    layer.load_state_dict({f"{name}_l0": torch.from_numpy(value) for name, value in weights.items()})
    inp = torch.tensor(x, requires_grad=True)
    out, _ = layer(inp)
    loss = (out * torch.from_numpy(out_grad)).sum()
    loss.backward()
    grads = {name: getattr(layer, f"{name}_l0").grad.numpy() for name in NAMES}
    grads["input"] = inp.grad.numpy()
    _assert_same(loss.item(), grads, ref_loss, ref_grads)


def test_float32_keeps_dtype_and_skips_input_grad(rng: np.random.Generator) -> None:
    x, out_grad, weights = _problem("lstm", rng)
    as32 = {name: value.astype(np.float32) for name, value in weights.items()}
    loss32, grads32 = numpy_bptt.lstm_bptt(x.astype(np.float32), out_grad.astype(np.float32), **as32,
                                           input_grad=False)
    loss64, grads64 = numpy_bptt.lstm_bptt(x, out_grad, **weights)
    assert set(grads32) == set(NAMES)
    for name in NAMES:
        assert grads32[name].dtype == np.float32
        np.testing.assert_allclose(grads32[name], grads64[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(loss32, loss64, rtol=1e-5)


def test_shape_errors_name_the_function_and_shapes(rng: np.random.Generator) -> None:
    x, out_grad, weights = _problem("gru", rng)
    with pytest.raises(ValueError, match=r"gru_bptt: expected G .*\(6, 3, 5\).*\(6, 3, 4\)"):
        numpy_bptt.gru_bptt(x, out_grad[..., :4], **weights)
    with pytest.raises(ValueError, match=r"lstm_bptt: expected weight_ih \(4\*H, 4\)"):
        numpy_bptt.lstm_bptt(x, out_grad, **weights)
    with pytest.raises(ValueError, match=r"rnn_bptt: expected input of shape \(T, B, I\), got \(6, 3\)"):
        numpy_bptt.rnn_bptt(x[:, :, 0], out_grad, **weights)
