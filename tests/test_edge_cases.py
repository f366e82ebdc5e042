"""Empty dims, infinities and index spellings where numpy's answer is not PyTorch's: the values are
PyTorch 2.13's, written out (``test_edge_cases_match_torch`` compares them live when torch is here)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

import tinygrad_seq as ts

INF, NAN = np.inf, np.nan


def _quiet(call: Callable[[], ts.Tensor]) -> np.ndarray:
    with warnings.catch_warnings():  # inf - inf and 0 / 0 warn in numpy; the nan is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        return call().numpy()


# (name, our call, the torch call spelled the same way, the expected values)
CASES = [
    ("softmax with +inf", lambda lib: lib.tensor([1.0, INF, 0.0], dtype=lib.float64).softmax(0), [NAN] * 3),
    ("log_softmax with +inf", lambda lib: lib.tensor([1.0, INF, 0.0], dtype=lib.float64).log_softmax(0),
     [NAN] * 3),
    ("softmax of -inf only", lambda lib: lib.tensor([-INF, -INF], dtype=lib.float64).softmax(0), [NAN] * 2),
    ("logsumexp with +inf", lambda lib: lib.tensor([1.0, INF], dtype=lib.float64).logsumexp(0), INF),
    ("logsumexp of -inf only", lambda lib: lib.tensor([-INF, -INF], dtype=lib.float64).logsumexp(0), -INF),
    ("logsumexp over an empty dim", lambda lib: lib.zeros(3, 0, dtype=lib.float64).logsumexp(1), [-INF] * 3),
]


@pytest.mark.parametrize("name, call, expected", CASES, ids=[case[0] for case in CASES])
def test_infinities_and_empty_reductions(name: str, call: Callable, expected: object) -> None:
    np.testing.assert_array_equal(_quiet(lambda: call(ts)), expected)


def test_reducing_the_other_dims_of_an_empty_tensor() -> None:
    empty = ts.zeros(0, 3, dtype=ts.float64, requires_grad=True)
    for op in ("amax", "amin"):
        out = getattr(empty, op)(dim=1)
        assert out.shape == (0,)
        out.sum().backward()
        assert empty.grad.shape == (0, 3)
        with pytest.raises(ValueError, match=f"{op}: cannot reduce dim 0 of size 0"):
            getattr(empty, op)(dim=0)
    assert empty.softmax(0).shape == (0, 3) and empty.log_softmax(1).shape == (0, 3)


def test_split_and_chunk_of_an_empty_dim() -> None:
    """PyTorch: split gives one empty piece, chunk as many empty pieces as asked for."""
    empty = ts.zeros(0, 3)
    assert [t.shape for t in empty.split(2)] == [(0, 3)]
    assert [t.shape for t in empty.chunk(2)] == [(0, 3), (0, 3)]
    assert [t.shape for t in ts.zeros(3, 0).chunk(3, dim=1)] == [(3, 0)] * 3


def test_an_empty_index_list_selects_nothing() -> None:
    x = ts.tensor(np.arange(24.0).reshape(2, 3, 4), requires_grad=True)
    picked = x[[]]
    assert picked.shape == (0, 3, 4)
    picked.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 3, 4)))
    assert x[:, []].shape == (2, 0, 4)


def test_flatten_refuses_a_start_after_the_end() -> None:
    x = ts.ones(2, 3, 4)
    with pytest.raises(ValueError, match=r"flatten: start_dim 2 comes after end_dim 1 \(tensor of shape"):
        x.flatten(2, 1)
    assert x.flatten(1, 1).shape == (2, 3, 4) and x.flatten(-1, 2).shape == (2, 3, 4)


def test_numpy_errors_other_than_broadcasting_keep_their_meaning() -> None:
    """An integer to a negative power is not a shape problem: the message says what numpy said."""
    with pytest.raises(ValueError, match="pow: Integers to negative integer powers are not allowed"):
        ts.tensor([1, 2]) ** -1
    with pytest.raises(ValueError, match=r"pow: shapes \(2,\) and \(3,\) do not broadcast"):
        ts.tensor([1, 2]) ** ts.tensor([1, 2, 3])


def test_edge_cases_match_torch() -> None:
    torch = pytest.importorskip("torch")
    for name, call, expected in CASES:
        theirs = call(torch).numpy()
        np.testing.assert_array_equal(theirs, expected, err_msg=name)
        np.testing.assert_array_equal(_quiet(lambda call=call: call(ts)), theirs, err_msg=name)
    assert [t.shape for t in torch.zeros(0, 3).chunk(2)] == [(0, 3), (0, 3)]
    assert torch.zeros(0, 3).amax(dim=1).shape == (0,)
    assert torch.ones(2, 3, 4)[[]].shape == (0, 3, 4)


# (name, call on a 0-d float64 tensor x = 3, value, d value / dx): PyTorch gives a 0-d tensor dim 0 (or -1)
SCALAR_CASES = [
    ("sum", lambda x: x.sum(0), 3.0, 1.0), ("sum keepdim", lambda x: x.sum(-1, keepdim=True), 3.0, 1.0),
    ("sum of a tuple", lambda x: x.sum((0,)), 3.0, 1.0), ("mean", lambda x: x.mean(0), 3.0, 1.0),
    ("amax", lambda x: x.amax(0), 3.0, 1.0), ("amin", lambda x: x.amin(-1), 3.0, 1.0),
    ("logsumexp", lambda x: x.logsumexp(0), 3.0, 1.0), ("max(dim)", lambda x: x.max(0).values, 3.0, 1.0),
    ("min(dim) keepdim", lambda x: x.min(-1, keepdim=True).values, 3.0, 1.0),
    ("softmax", lambda x: x.softmax(0), 1.0, 0.0), ("log_softmax", lambda x: x.log_softmax(-1), 0.0, 0.0),
    ("transpose", lambda x: x.transpose(0, -1), 3.0, 1.0), ("squeeze", lambda x: x.squeeze(-1), 3.0, 1.0),
]


@pytest.mark.parametrize("name, call, value, slope", SCALAR_CASES, ids=[case[0] for case in SCALAR_CASES])
def test_a_0d_tensor_has_dim_0(name: str, call: Callable, value: float, slope: float) -> None:
    x = ts.tensor(3.0, dtype=ts.float64, requires_grad=True)
    out = call(x)
    assert out.shape == () and out.item() == value
    out.backward()
    assert x.grad.item() == slope


def test_a_0d_tensor_has_no_dim_1_and_cannot_be_split() -> None:
    x = ts.tensor(3.0)
    assert x.argmax(0).item() == 0 and x.max(0).indices.item() == 0
    with pytest.raises(IndexError, match=r"sum: dim 1 is out of range for a tensor of shape \(\)"):
        x.sum(1)
    with pytest.raises(ValueError, match="same dim twice"):
        x.sum((0, -1))
    for op in ("split", "chunk", "unbind"):
        with pytest.raises(IndexError, match=f"{op}: a 0-d tensor has no dim 0"):
            getattr(x, op)(1) if op != "unbind" else x.unbind(0)


def test_0d_dims_match_torch() -> None:
    torch = pytest.importorskip("torch")
    for name, call, value, slope in SCALAR_CASES:
        x = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
        out = call(x)
        out.backward()
        assert (out.shape, out.item(), x.grad.item()) == ((), value, slope), name


# (name, function, inputs, each input's gradient of sum(function(inputs))): PyTorch 2.13's at nan
NAN_GRADIENTS = [
    ("maximum", lambda lib, x, y: lib.maximum(x, y), [[NAN, 1.0, 2.0], [1.0, NAN, 2.0]],
     [[1.0, 1.0, 0.5], [1.0, 1.0, 0.5]]),
    ("minimum", lambda lib, x, y: lib.minimum(x, y), [[NAN, 1.0, 2.0], [1.0, NAN, 2.0]],
     [[1.0, 1.0, 0.5], [1.0, 1.0, 0.5]]),
    ("relu", lambda lib, x: x.relu(), [[NAN, -1.0, 2.0]], [[1.0, 0.0, 1.0]]),
    ("abs", lambda lib, x: abs(x), [[NAN, -1.0, 0.0]], [[0.0, -1.0, 0.0]]),
    ("max()", lambda lib, x: x.max(), [[NAN, 1.0, NAN]], [[0.5, 0.0, 0.5]]),
    ("min()", lambda lib, x: x.min(), [[NAN, 1.0, NAN]], [[0.5, 0.0, 0.5]]),
    ("max(dim)", lambda lib, x: x.max(0).values, [[NAN, 1.0, NAN]], [[1.0, 0.0, 0.0]]),
    ("clip", lambda lib, x: x.clip(0, 1), [[NAN, 0.5, 2.0]], [[0.0, 1.0, 0.0]]),
]


def _nan_gradients(lib: object, call: Callable, inputs: list) -> list:
    tensors = [lib.tensor(np.array(values), requires_grad=True) for values in inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        call(lib, *tensors).sum().backward()
    return [t.grad.numpy().tolist() for t in tensors]


@pytest.mark.parametrize("name, call, inputs, grads", NAN_GRADIENTS, ids=[case[0] for case in NAN_GRADIENTS])
def test_gradients_at_nan(name: str, call: Callable, inputs: list, grads: list) -> None:
    assert _nan_gradients(ts, call, inputs) == grads


def test_gradients_at_nan_match_torch() -> None:
    torch = pytest.importorskip("torch")
    for name, call, inputs, grads in NAN_GRADIENTS:
        assert _nan_gradients(torch, call, inputs) == grads, name


def test_an_empty_dim_tuple_reduces_every_dim_as_in_pytorch() -> None:
    """numpy's axis=() keeps its meaning (nothing reduced)."""
    x = ts.tensor(np.arange(6.0).reshape(2, 3))
    assert [x.sum(dim=()).item(), x.mean(dim=[]).item(), x.amax(dim=()).item(), x.amin(dim=()).item()] == [
        15.0, 2.5, 5.0, 0.0]
    assert x.sum(dim=(), keepdim=True).shape == (1, 1) and x.sum(axis=()).shape == (2, 3)


def test_an_empty_dim_tuple_reduces_every_dim_in_torch_too() -> None:
    torch = pytest.importorskip("torch")
    x = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
    assert [x.sum(dim=()).item(), x.mean(dim=[]).item(), x.amax(dim=()).item(), x.amin(dim=()).item()] == [
        15.0, 2.5, 5.0, 0.0]
    assert x.sum(dim=(), keepdim=True).shape == (1, 1)


def test_where_of_two_numpy_numbers_is_float32_with_a_float_as_in_pytorch() -> None:
    mask = ts.tensor([True, False])
    assert ts.where(mask, np.int64(1), np.float32(2.5)).dtype == np.float32
    assert ts.where(mask, np.float16(1), np.float16(2)).dtype == np.float32
    assert ts.where(mask, 2, np.int8(3)).dtype == np.int64
