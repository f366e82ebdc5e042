"""Every op's gradient against float64 finite differences, over random shapes and arguments.

Hypothesis draws shapes, dims, indices and a seed; the seed makes the values, kept inside each
op's domain and away from its kinks and ties (finite differences are meaningless there).
Forward values are checked against numpy on the way.  The last section checks the softmax
family and sigmoid at magnitudes (1e4) where a naive formula overflows.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from helpers import assert_grads_match
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_seq as ts

# -- value strategies ------------------------------------------------------------------------

SEEDS = st.integers(0, 2**32 - 1)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)
NONSCALAR_SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)


def uniform(shape: tuple, low: float = -2.0, high: float = 2.0) -> st.SearchStrategy[np.ndarray]:
    return SEEDS.map(lambda seed: np.random.default_rng(seed).uniform(low, high, shape))


def away_from_zero(shape: tuple, low: float = 0.05, high: float = 2.0) -> st.SearchStrategy[np.ndarray]:
    """Magnitudes in [low, high] with random signs: for kinks at 0 (abs, relu) and divisors."""

    def make(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(low, high, shape)

    return SEEDS.map(make)


def positive(shape: tuple) -> st.SearchStrategy[np.ndarray]:
    return uniform(shape, 0.5, 2.0)


def distinct(shape: tuple) -> st.SearchStrategy[np.ndarray]:
    """Values at least 0.06 apart, so max/min have no ties within a finite-difference step."""

    def make(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        size = int(np.prod(shape))
        return (rng.permutation(size) * 0.1 - size * 0.05 + rng.uniform(-0.02, 0.02, size)).reshape(shape)

    return SEEDS.map(make)


def _dims(ndim: int) -> st.SearchStrategy:
    """None, one dim or a tuple of dims, negative ones included."""
    if ndim == 0:
        return st.none()
    return st.one_of(st.none(), st.integers(-ndim, ndim - 1), hnp.valid_tuple_axes(ndim, min_size=1))


# -- elementwise -----------------------------------------------------------------------------

ARITHMETIC = {"add": (operator.add, np.add), "sub": (operator.sub, np.subtract),
              "mul": (operator.mul, np.multiply), "div": (operator.truediv, np.divide)}


@pytest.mark.parametrize("name", sorted(ARITHMETIC))
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), data=st.data())
def test_arithmetic_with_broadcasting(name: str, shapes: hnp.BroadcastableShapes,
                                      data: st.DataObject) -> None:
    op, reference = ARITHMETIC[name]
    a = data.draw(uniform(shapes.input_shapes[0]))
    b = data.draw(away_from_zero(shapes.input_shapes[1], low=0.5))  # a safe divisor for div
    (out,) = assert_grads_match(op, [a, b])
    assert out.shape == shapes.result_shape
    np.testing.assert_allclose(out.data, reference(a, b), rtol=1e-15)


@pytest.mark.parametrize("expression", [
    lambda x: x + 2.5, lambda x: 2.5 + x, lambda x: x - 2.5, lambda x: 2.5 - x, lambda x: x * 2.5,
    lambda x: 2.5 * x, lambda x: x / 2.5, lambda x: 2.5 / x, lambda x: -x, lambda x: ts.neg(x),
    lambda x: np.arange(1.0, 4.0) * x, lambda x: x - np.arange(3.0), lambda x: np.arange(3.0) / x,
])
def test_scalar_and_array_operands_are_constants(expression: Callable, rng: np.random.Generator) -> None:
    assert_grads_match(expression, [rng.uniform(0.5, 2.0, (2, 3))])


@pytest.mark.parametrize("exponent", [-1.5, -1, 0.5, 2, 3, 2.7])
@given(shape=SHAPES, data=st.data())
def test_pow_scalar_exponent(exponent: float, shape: tuple, data: st.DataObject) -> None:
    x = data.draw(positive(shape))
    (out,) = assert_grads_match(lambda t: t ** exponent, [x])
    np.testing.assert_allclose(out.data, x ** exponent, rtol=1e-15)


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), data=st.data())
def test_pow_tensor_exponent(shapes: hnp.BroadcastableShapes, data: st.DataObject) -> None:
    base = data.draw(positive(shapes.input_shapes[0]))
    exponent = data.draw(uniform(shapes.input_shapes[1]))
    assert_grads_match(operator.pow, [base, exponent])
    assert_grads_match(lambda e: 1.7 ** e, [exponent])  # scalar base, via __rpow__


def test_pow_gradient_at_zero_exponent_and_zero_base() -> None:
    """x**0 has gradient 0 even at x = 0 (no 0 * inf), and d(0**y)/dy is taken as 0."""
    x = ts.Tensor(np.array([0.0, 2.0]), requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0])
    y = ts.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (ts.Tensor(np.zeros(2)) ** y).sum().backward()
    np.testing.assert_array_equal(y.grad.data, [0.0, 0.0])


UNARY = {
    "exp": (ts.exp, np.exp, uniform),
    "log": (ts.log, np.log, positive),
    "sqrt": (ts.sqrt, np.sqrt, positive),
    "abs": (abs, np.abs, away_from_zero),
    "tanh": (ts.tanh, np.tanh, uniform),
    "sigmoid": (ts.sigmoid, lambda x: 1 / (1 + np.exp(-x)), uniform),
    # relu's kink is at 0; magnitudes >= 1e-3 keep the stencil (width 4e-5) on one side of it
    "relu": (ts.relu, lambda x: np.maximum(x, 0), lambda shape: away_from_zero(shape, low=1e-3)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=SHAPES, data=st.data())
def test_unary(name: str, shape: tuple, data: st.DataObject) -> None:
    op, reference, domain = UNARY[name]
    x = data.draw(domain(shape))
    (out,) = assert_grads_match(op, [x])
    np.testing.assert_allclose(out.data, reference(x), rtol=1e-15)
    method = getattr(ts.Tensor, name, None)
    if method is not None:  # the method and the function are the same op
        np.testing.assert_array_equal(method(ts.Tensor(x)).data, out.data)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), data=st.data())
def test_maximum_minimum_without_ties(name: str, shapes: hnp.BroadcastableShapes,
                                      data: st.DataObject) -> None:
    a = data.draw(uniform(shapes.input_shapes[0]))
    b = data.draw(uniform(shapes.input_shapes[1]))
    assume(np.all(np.abs(a - b) > 1e-3) and np.all(np.abs(a - 0.25) > 1e-3))
    (out,) = assert_grads_match(getattr(ts, name), [a, b])
    np.testing.assert_array_equal(out.data, getattr(np, name)(a, b))
    assert_grads_match(lambda t: getattr(ts, name)(t, 0.25), [a])


def test_maximum_tie_splits_the_gradient() -> None:
    a = ts.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = ts.Tensor(np.array([1.0, 3.0]), requires_grad=True)
    ts.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [0.5, 0.0])
    np.testing.assert_array_equal(b.grad.data, [0.5, 1.0])


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=SEEDS)
def test_where(shapes: hnp.BroadcastableShapes, seed: int) -> None:
    rng = np.random.default_rng(seed)
    condition_shape, a_shape, b_shape = shapes.input_shapes
    condition = rng.random(condition_shape) < 0.5
    a, b = rng.uniform(-2, 2, a_shape), rng.uniform(-2, 2, b_shape)
    (out,) = assert_grads_match(lambda x, y: ts.where(ts.Tensor(condition), x, y), [a, b])
    np.testing.assert_array_equal(out.data, np.where(condition, a, b))
    assert_grads_match(lambda x: ts.where(condition, x, 0.0), [a])  # a numpy condition, a scalar branch


@pytest.mark.parametrize("low, high", [(-0.5, 0.7), (None, 0.3), (-0.2, None)])
@given(shape=SHAPES, data=st.data())
def test_clip(low: float | None, high: float | None, shape: tuple, data: st.DataObject) -> None:
    x = data.draw(uniform(shape))
    bounds = [b for b in (low, high) if b is not None]
    assume(all(np.all(np.abs(x - b) > 1e-3) for b in bounds))
    (out,) = assert_grads_match(lambda t: t.clip(low, high), [x])
    np.testing.assert_array_equal(out.data, np.clip(x, low, high))


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=SEEDS)
def test_clip_with_tensor_bounds(shapes: hnp.BroadcastableShapes, seed: int) -> None:
    """Bounds of their own shapes, broadcasting, min > max in places; each gets its gradient (kept away
    from the kinks, where x meets a bound or the bounds meet)."""
    rng = np.random.default_rng(seed)
    x, low, high = (rng.uniform(-2, 2, shape) for shape in shapes.input_shapes)
    assume(min(np.abs(x - low).min(), np.abs(x - high).min(), np.abs(low - high).min()) > 1e-3)
    (out,) = assert_grads_match(lambda t, lo, hi: t.clip(lo, hi), [x, low, high])
    np.testing.assert_array_equal(out.data, np.minimum(np.maximum(x, low), high))
    assert_grads_match(lambda t, lo: ts.clip(t, min=lo), [x, low])


def test_clip_bounds_get_pytorchs_gradients_at_ties_and_crossings() -> None:
    """Values from torch.clamp: x gets g where min <= x <= max; min where x < min < max; max where
    x > max or min > max (and a tie of the bounds below x passes nothing, as in PyTorch)."""
    x = ts.tensor(np.array([-1.0, 0.5, 2.0, 0.7, 0.3, 0.2, 0.5]), requires_grad=True)
    low = ts.tensor(np.array([0.0, 0.0, 0.0, 0.8, 0.5, 0.5, 0.3]), requires_grad=True)
    high = ts.tensor(np.array([1.0, 1.0, 1.0, 0.6, 0.6, 0.5, 0.5]), requires_grad=True)
    out = x.clip(low, high)
    np.testing.assert_array_equal(out.numpy(), [0.0, 0.5, 1.0, 0.6, 0.5, 0.5, 0.5])
    out.backward(np.arange(1.0, 8.0))
    np.testing.assert_array_equal(x.grad.numpy(), [0, 2, 0, 0, 0, 0, 7])
    np.testing.assert_array_equal(low.grad.numpy(), [1, 0, 0, 0, 5, 0, 0])
    np.testing.assert_array_equal(high.grad.numpy(), [0, 0, 3, 4, 0, 0, 0])
    with pytest.raises(ValueError, match=r"clip: shapes \(7,\) and \(2,\) \(min\) and \(\) \(max\) do not"):
        x.clip(ts.zeros(2), ts.tensor(1.0))
    with pytest.raises(ValueError, match=r"clip: shapes \(7,\) and \(3,\) \(max\) do not broadcast"):
        x.clip(max=ts.zeros(3))
    assert ts.tensor([1, 5]).clip(0.5, 2.5).dtype == np.float32  # an integer x meets float bounds: float32


# -- matmul ------------------------------------------------------------------------------------


@st.composite
def matmul_shapes(draw: st.DrawFn) -> tuple[tuple, tuple]:
    """Operand shapes for every matmul case numpy defines, batch dims broadcasting."""
    m, k, n = (draw(st.integers(1, 3)) for _ in range(3))
    batches = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    batch_a, batch_b = batches.input_shapes
    return draw(st.sampled_from([
        ((m, k), (k, n)),
        (batch_a + (m, k), batch_b + (k, n)),
        ((k,), (k, n)),
        ((m, k), (k,)),
        ((k,), (k,)),
        ((k,), batch_b + (k, n)),
        (batch_a + (m, k), (k,)),
    ]))


@given(shapes=matmul_shapes(), seed=SEEDS)
def test_matmul(shapes: tuple[tuple, tuple], seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-2, 2, shapes[0]), rng.uniform(-2, 2, shapes[1])
    (out,) = assert_grads_match(operator.matmul, [a, b])
    np.testing.assert_allclose(out.data, a @ b, rtol=1e-14)
    (method,) = assert_grads_match(lambda x, y: x.matmul(y), [a, b])
    np.testing.assert_array_equal(method.data, out.data)


def test_matmul_with_numpy_operand_on_the_left(rng: np.random.Generator) -> None:
    weight = rng.standard_normal((3, 4))
    assert_grads_match(lambda x: weight @ x, [rng.standard_normal((4, 2))])


@given(sizes=st.tuples(*[st.integers(1, 3)] * 3), bias=st.integers(0, 6), seed=SEEDS)
def test_addmm(sizes: tuple[int, int, int], bias: int, seed: int) -> None:
    """input + mat1 @ mat2 for every input shape that broadcasts to the product, bit for bit."""
    n, m, p = sizes
    rng = np.random.default_rng(seed)
    shape = [(n, p), (p,), (1, p), (n, 1), (), (1,), (1, 1)][bias]
    c, a, b = rng.uniform(-2, 2, shape), rng.uniform(-2, 2, (n, m)), rng.uniform(-2, 2, (m, p))
    (out,) = assert_grads_match(ts.addmm, [c, a, b])
    np.testing.assert_array_equal(out.data, c + a @ b)
    (method,) = assert_grads_match(lambda x, y, z: x.addmm(y, z), [c, a, b])
    np.testing.assert_array_equal(method.data, out.data)


def test_addmm_rows_is_one_node_with_the_bits_of_a_slice_first(rng: np.random.Generator) -> None:
    """``rows`` (a recurrent step adding its rows of the projection of all steps): one node, and the
    bits of slicing first; the input's gradient is g in those rows and zero elsewhere."""
    whole, a, b = rng.standard_normal((6, 4)), rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    ours = [ts.Tensor(x, requires_grad=True) for x in (whole, a, b)]
    composed = [ts.Tensor(x, requires_grad=True) for x in (whole, a, b)]
    out = ts.addmm(ours[0], ours[1], ours[2], rows=slice(2, 4))
    sliced = ts.addmm(composed[0][2:4], composed[1], composed[2])
    assert out.grad_fn.op == "addmm" and out.grad_fn.parents[0] is ours[0]._node  # no slice between
    np.testing.assert_array_equal(out.data, sliced.data)
    g = rng.standard_normal((2, 4))
    out.backward(g)
    sliced.backward(g)
    for mine, theirs in zip(ours, composed, strict=True):
        np.testing.assert_array_equal(mine.grad.data, theirs.grad.data)
    assert not ours[0].grad.data[[0, 1, 4, 5]].any()
    assert_grads_match(lambda x, y, z: ts.addmm(x, y, z, rows=slice(1, 3)), [whole, a, b])


@pytest.mark.parametrize("value", [1, -0.5, 2])
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), data=st.data())
def test_addcmul(value: float, shapes: hnp.BroadcastableShapes, data: st.DataObject) -> None:
    """input + value * t1 * t2 over every broadcast of the three, with the bits of (value * t1) * t2
    added to input (PyTorch's order; with value 1, exactly the composed add and mul)."""
    x, t1, t2 = (data.draw(uniform(shape)) for shape in shapes.input_shapes)
    (out,) = assert_grads_match(lambda a, b, c: ts.addcmul(a, b, c, value=value), [x, t1, t2])
    assert out.shape == shapes.result_shape
    np.testing.assert_array_equal(out.data, x + (value * t1) * t2)
    tensors = [ts.Tensor(a, requires_grad=True) for a in (x, t1, t2)]
    composed = [ts.Tensor(a, requires_grad=True) for a in (x, t1, t2)]
    ts.addcmul(*tensors, value=value).sum().backward()
    (composed[0] + value * composed[1] * composed[2]).sum().backward()
    # to rounding: where t1 * t2 broadcasts less than the sum, the composed add sums g before the multiply
    for ours, theirs in zip(tensors, composed, strict=True):
        np.testing.assert_allclose(ours.grad.data, theirs.grad.data, rtol=1e-13, atol=1e-15)


def test_addcmul_method_constants_and_dtype(rng: np.random.Generator) -> None:
    x, a, b = (rng.standard_normal((2, 3)) for _ in range(3))
    np.testing.assert_array_equal(ts.Tensor(x).addcmul(a, b).data, x + a * b)
    (out,) = assert_grads_match(lambda t: ts.addcmul(x, t, b), [a])  # arrays as constants
    half = ts.Tensor(a, dtype="float32")
    assert ts.addcmul(half, half, half, value=0.5).dtype == np.float32  # a Python number does not widen
    assert ts.addcmul(half, half, ts.Tensor(b)).dtype == np.float64


def test_addmm_widens_like_the_sum_it_stands_for(rng: np.random.Generator) -> None:
    a, b = (ts.Tensor(rng.standard_normal(s), dtype="float32") for s in ((2, 3), (3, 4)))
    bias = ts.Tensor(rng.standard_normal(4), dtype="float64")
    out = ts.addmm(bias, a, b)
    assert out.dtype == (bias + a @ b).dtype == np.float64
    np.testing.assert_array_equal(out.data, (bias + a @ b).data)
    assert ts.addmm(0.5, a, b).dtype == np.float32  # a Python number does not widen (numpy's rule)


@pytest.mark.parametrize("op", ["add", "mul", "addcmul", "tanh", "relu"])
def test_into_is_used_only_where_the_result_fits_it_exactly(op: str) -> None:
    """``into`` (what the recurrent layers hand the op that makes a step's h) is a hint: an array
    of another shape or dtype is left alone, never broadcast into or cast to."""
    fn = getattr(ts, op)
    a = ts.Tensor(np.linspace(-1, 1, 6).reshape(2, 3))
    arity = {"add": 2, "mul": 2, "addcmul": 3}.get(op, 1)
    call = lambda into: fn(*[a] * arity, into=into)  # noqa: E731
    expected = call(None).numpy()
    row = np.empty((2, 3))
    out = call(row)
    assert np.shares_memory(out.numpy(), row)
    np.testing.assert_array_equal(row, expected)
    for unfit in (np.zeros((2, 3), np.float32), np.zeros((4, 2, 3))):
        out = call(unfit)
        assert not np.shares_memory(out.numpy(), unfit) and not unfit.any() and out.dtype == np.float64
        np.testing.assert_array_equal(out.numpy(), expected)


# -- reductions --------------------------------------------------------------------------------

REDUCTIONS = {"sum": (np.sum, uniform), "mean": (np.mean, uniform),
              "amax": (np.max, distinct), "amin": (np.min, distinct)}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(shape=SHAPES, keepdim=st.booleans(), data=st.data())
def test_reductions(name: str, shape: tuple, keepdim: bool, data: st.DataObject) -> None:
    reference, domain = REDUCTIONS[name]
    dim = data.draw(_dims(len(shape)), label="dim")
    x = data.draw(domain(shape))
    (out,) = assert_grads_match(lambda t: getattr(t, name)(dim, keepdim), [x])
    np.testing.assert_allclose(out.data, reference(x, axis=dim, keepdims=keepdim), rtol=1e-14)
    numpy_name = {"amax": "max", "amin": "min"}.get(name, name)  # numpy's axis= spelling: values
    numpy_spelling = getattr(ts, numpy_name)(ts.Tensor(x), axis=dim, keepdims=keepdim)
    np.testing.assert_array_equal(numpy_spelling.data, out.data)


@pytest.mark.parametrize("name", ["amax", "amin"])
def test_reduction_ties_share_the_gradient(name: str) -> None:
    x = ts.Tensor(np.array([[1.0, 1.0, 0.5], [2.0, 2.0, 2.0]]) * (1 if name == "amax" else -1),
                  requires_grad=True)
    getattr(x, name)(1).sum().backward()
    np.testing.assert_allclose(x.grad.data, [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-15)


@pytest.mark.parametrize("name", ["max", "min"])
@given(shape=NONSCALAR_SHAPES, keepdim=st.booleans(), data=st.data())
def test_max_min_along_a_dim_return_values_and_indices(name: str, shape: tuple, keepdim: bool,
                                                       data: st.DataObject) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    x = data.draw(distinct(shape))
    (values,) = assert_grads_match(lambda t: getattr(t, name)(dim, keepdim).values, [x])
    result = getattr(ts.Tensor(x), name)(dim, keepdim=keepdim)
    find, pick = (np.argmax, np.max) if name == "max" else (np.argmin, np.min)
    np.testing.assert_array_equal(result.indices.data, find(x, axis=dim, keepdims=keepdim))
    np.testing.assert_array_equal(values.data, pick(x, axis=dim, keepdims=keepdim))
    unpacked_values, unpacked_indices = result  # a named pair, as in PyTorch
    assert unpacked_indices.dtype.kind == "i" and unpacked_values.shape == values.shape


def test_max_along_a_dim_sends_a_tie_gradient_to_the_returned_index_only() -> None:
    x = ts.Tensor(np.array([[1.0, 1.0, 0.5], [2.0, 2.0, 2.0]]), requires_grad=True)
    result = x.max(1)
    result.values.sum().backward()
    np.testing.assert_array_equal(result.indices.data, [0, 0])
    np.testing.assert_array_equal(x.grad.data, [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])


def test_max_with_several_dims_points_at_amax() -> None:
    with pytest.raises(TypeError, match=r"max: dim must be one int .* use amax"):
        ts.ones(2, 3).max((0, 1))


# -- shape ops -----------------------------------------------------------------------------------


@given(shape=SHAPES, data=st.data())
def test_reshape_view_flatten(shape: tuple, data: st.DataObject) -> None:
    size = int(np.prod(shape))
    target = data.draw(st.sampled_from([(-1,), (size,), tuple(reversed(shape)), shape + (1,), (1, -1)]))
    x = data.draw(uniform(shape))
    (out,) = assert_grads_match(lambda t: t.reshape(target), [x])
    np.testing.assert_array_equal(out.data, x.reshape(target))
    assert_grads_match(lambda t: t.view(*target), [x])
    if len(shape) >= 1:
        start = data.draw(st.integers(-len(shape), len(shape) - 1), label="start_dim")
        end = data.draw(st.integers(start % len(shape), len(shape) - 1), label="end_dim")
        (flat,) = assert_grads_match(lambda t: t.flatten(start, end), [x])
        start %= len(shape)
        assert flat.shape == shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
    assert assert_grads_match(ts.flatten, [x])[0].shape == (size,)


@given(shape=NONSCALAR_SHAPES, data=st.data())
def test_permute_transpose_T(shape: tuple, data: st.DataObject) -> None:
    ndim = len(shape)
    order = data.draw(st.permutations(range(ndim)), label="permutation")
    dim0, dim1 = (data.draw(st.integers(-ndim, ndim - 1)) for _ in range(2))
    x = data.draw(uniform(shape))
    (permuted,) = assert_grads_match(lambda t: t.permute(*order), [x])
    np.testing.assert_array_equal(permuted.data, np.transpose(x, order))
    (swapped,) = assert_grads_match(lambda t: t.transpose(dim0, dim1), [x])
    np.testing.assert_array_equal(swapped.data, np.swapaxes(x, dim0, dim1))
    (reversed_dims,) = assert_grads_match(lambda t: t.T, [x])
    np.testing.assert_array_equal(reversed_dims.data, x.T)


@st.composite
def expandable(draw: st.DrawFn) -> tuple[tuple, tuple]:
    """(source shape, target shape): the source drops leading dims and has 1s where it expands."""
    target = draw(SHAPES)
    kept = draw(st.integers(0, len(target)))
    source = tuple(1 if draw(st.booleans()) else n for n in target[len(target) - kept:])
    return source, target


@given(shapes=expandable(), data=st.data())
def test_expand_and_broadcast_to(shapes: tuple[tuple, tuple], data: st.DataObject) -> None:
    source, target = shapes
    x = data.draw(uniform(source))
    (out,) = assert_grads_match(lambda t: t.broadcast_to(target), [x])
    np.testing.assert_array_equal(out.data, np.broadcast_to(x, target))
    lead = len(target) - len(source)  # -1 keeps an existing dim's size
    sizes = target[:lead] + tuple(-1 if n == s else n for n, s in zip(target[lead:], source, strict=True))
    (expanded,) = assert_grads_match(lambda t: t.expand(*sizes), [x])
    assert expanded.shape == target


@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=2), data=st.data())
def test_squeeze_unsqueeze(shape: tuple, data: st.DataObject) -> None:
    ndim = len(shape)
    x = data.draw(uniform(shape))
    (squeezed,) = assert_grads_match(lambda t: t.squeeze(), [x])
    np.testing.assert_array_equal(squeezed.data, np.squeeze(x))
    if ndim:
        dim = data.draw(st.integers(-ndim, ndim - 1), label="squeeze dim")
        expected_shape = np.squeeze(x, dim).shape if shape[dim] == 1 else shape  # PyTorch: no-op if size > 1
        assert assert_grads_match(lambda t: t.squeeze(dim), [x])[0].shape == expected_shape
    dim = data.draw(st.integers(-ndim - 1, ndim), label="unsqueeze dim")
    (unsqueezed,) = assert_grads_match(lambda t: t.unsqueeze(dim), [x])
    np.testing.assert_array_equal(unsqueezed.data, np.expand_dims(x, dim))


# -- indexing --------------------------------------------------------------------------------------


@given(shape=SHAPES, data=st.data())
def test_getitem_basic_indices(shape: tuple, data: st.DataObject) -> None:
    """Ints (negative too), slices (negative steps too), None and Ellipsis."""
    index = data.draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True),
                      label="index")
    x = data.draw(uniform(shape))
    (out,) = assert_grads_match(lambda t: t[index], [x])
    np.testing.assert_array_equal(out.data, x[index])


@given(shape=NONSCALAR_SHAPES, data=st.data())
def test_getitem_integer_arrays(shape: tuple, data: st.DataObject) -> None:
    """Integer-array indices, which repeat often at these sizes: backward must add per repeat."""
    index = data.draw(hnp.integer_array_indices(
        shape, result_shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=4)), label="index")
    x = data.draw(uniform(shape))
    (out,) = assert_grads_match(lambda t: t[index], [x])
    np.testing.assert_array_equal(out.data, x[index])
    as_tensors = tuple(ts.Tensor(i) for i in index)
    np.testing.assert_array_equal(ts.Tensor(x)[as_tensors].data, out.data)


def test_getitem_repeated_indices_scatter_add(rng: np.random.Generator) -> None:
    x = ts.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.array([[3.0] * 4, [0.0] * 4, [1.0] * 4]))
    mixed_index = (slice(1, None), np.array([[3, 3], [-1, 0]]))  # an int array after a slice
    assert_grads_match(lambda t: t[mixed_index], [rng.standard_normal((3, 4))])
    assert_grads_match(lambda t: t[np.array([2, 2]), 1:], [rng.standard_normal((3, 4))])
    # one-element integer arrays cannot repeat, so backward adds with += (not np.add.at): still exact
    y = ts.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    (y[[2], 1:] * 2).sum().backward()
    (y[[2], [0]] * 3).sum().backward()
    np.testing.assert_array_equal(y.grad.data, np.array([[0.0] * 4, [0.0] * 4, [3.0, 2.0, 2.0, 2.0]]))
    # a tuple or range inside an index is an integer array to numpy: its repeats add up as well
    w = ts.Tensor(np.ones((2, 3)), requires_grad=True)
    (w[:, (0, 0)].sum() + w[range(1), (2, 2, 2)].sum()).backward()
    np.testing.assert_array_equal(w.grad.data, [[2.0, 0.0, 3.0], [2.0, 0.0, 0.0]])
    # met in one backward, such indices are added into one buffer (an advanced index reads a copy of
    # the buffer's part, which must be written back), then a mask and a basic slice
    z = ts.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    mask = np.array([True, False, True])
    ((z[[2], 1:] * 2).sum() + (z[[2], [0]] * 3).sum() + (z[mask] * 5).sum() + (z[:, 3] * 7).sum()).backward()
    np.testing.assert_array_equal(z.grad.data, np.array([[5.0, 5.0, 5.0, 12.0], [0.0, 0.0, 0.0, 7.0],
                                                         [8.0, 7.0, 7.0, 14.0]]))


@given(shape=NONSCALAR_SHAPES, data=st.data())
def test_getitem_boolean_masks(shape: tuple, data: st.DataObject) -> None:
    leading = data.draw(st.integers(1, len(shape)), label="mask dims")
    seed = data.draw(SEEDS)
    mask = np.random.default_rng(seed).random(shape[:leading]) < 0.5
    x = data.draw(uniform(shape))
    (out,) = assert_grads_match(lambda t: t[mask], [x])
    np.testing.assert_array_equal(out.data, x[mask])
    np.testing.assert_array_equal(ts.Tensor(x)[ts.Tensor(mask)].data, out.data)


@st.composite
def ints_beside_index_arrays(draw: st.DrawFn, shape: tuple) -> tuple:
    """An index of ``shape``'s dims holding at least one int and one integer list, in any order,
    with slices and None between them: where numpy's reading is not PyTorch's."""
    kinds = draw(st.lists(st.sampled_from(["int", "list", "slice"]), min_size=len(shape), max_size=len(shape))
                 .filter(lambda kinds: "int" in kinds and "list" in kinds))
    length, index = draw(st.integers(1, 3)), []  # one length for all lists: they broadcast together
    for size, kind in zip(shape, kinds, strict=True):
        if draw(st.booleans()) and draw(st.booleans()):
            index.append(None)
        if kind == "int":
            index.append(draw(st.integers(-size, size - 1)))
        elif kind == "list":
            index.append(draw(st.lists(st.integers(-size, size - 1), min_size=length, max_size=length)))
        else:
            index.append(slice(draw(st.integers(0, size - 1)), None))
    return tuple(index)


@given(data=st.data(), shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=3))
def test_getitem_ints_beside_index_arrays(data: st.DataObject, shape: tuple) -> None:
    """PyTorch's reading: the ints select first, and the index arrays index what remains."""
    index = data.draw(ints_beside_index_arrays(shape), label="index")
    x = data.draw(uniform(shape))
    (out,) = assert_grads_match(lambda t: t[index], [x])
    ints = tuple(part if isinstance(part, int) else slice(None) for part in index if part is not None)
    rest = tuple(part for part in index if not isinstance(part, int))
    np.testing.assert_array_equal(out.data, x[ints][rest])


def test_getitem_with_true_or_a_0d_integer_tensor_beside_index_arrays() -> None:
    """True adds a dim and consumes none; a 0-d integer tensor indexes as an int (PyTorch's reading)."""
    x = ts.tensor(np.arange(24.0).reshape(2, 3, 4))
    np.testing.assert_array_equal(x[True, 0, [1, 2]].numpy(), [[4, 5, 6, 7], [8, 9, 10, 11]])  # torch's
    picked = x[ts.tensor(1), :, [0, 1]]
    assert picked.shape == (3, 2)
    np.testing.assert_array_equal(picked.numpy(), np.arange(24.0).reshape(2, 3, 4)[1][:, [0, 1]])


def test_getitem_selects_with_ints_before_index_arrays() -> None:
    x = ts.tensor(np.arange(24.0).reshape(2, 3, 4), requires_grad=True)
    picked = x[0, :, [0, 1]]  # numpy alone: shape (2, 3), the list's dim first
    np.testing.assert_array_equal(picked.numpy(), [[0, 1], [4, 5], [8, 9]])
    (picked * ts.tensor([[1.0, 2.0]])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0], [[1, 2, 0, 0]] * 3)
    assert not x.grad.numpy()[1].any()


def test_mutating_an_index_or_operand_array_after_forward_leaves_gradient_unchanged() -> None:
    """The graph copies numpy operands: it must not read the caller's array again at backward."""
    index, weights = np.array([0, 0, 1]), np.array([1.0, 2.0, 3.0])
    x = ts.Tensor(np.zeros(3), requires_grad=True)
    loss = (x[index] * weights).sum()
    index[:], weights[:] = 2, 100.0
    loss.backward()
    np.testing.assert_array_equal(x.grad.data, [3.0, 3.0, 0.0])


# -- joining and splitting ---------------------------------------------------------------------------


@given(shape=NONSCALAR_SHAPES, count=st.integers(1, 3), data=st.data())
def test_cat(shape: tuple, count: int, data: st.DataObject) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    shapes = [shape[:dim % len(shape)] + (data.draw(st.integers(1, 3)),) + shape[dim % len(shape) + 1:]
              for _ in range(count)]
    arrays = [data.draw(uniform(s)) for s in shapes]
    (out,) = assert_grads_match(lambda *parts: ts.cat(parts, dim=dim), arrays)
    np.testing.assert_array_equal(out.data, np.concatenate(arrays, axis=dim))


@given(shape=SHAPES, count=st.integers(1, 3), data=st.data())
def test_stack(shape: tuple, count: int, data: st.DataObject) -> None:
    dim = data.draw(st.integers(-len(shape) - 1, len(shape)), label="dim")
    arrays = [data.draw(uniform(shape)) for _ in range(count)]
    (out,) = assert_grads_match(lambda *parts: ts.stack(parts, dim=dim), arrays)
    np.testing.assert_array_equal(out.data, np.stack(arrays, axis=dim))


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), data=st.data())
def test_split_chunk_unbind(shape: tuple, data: st.DataObject) -> None:
    """Every piece is an output, so a gradient lost or misplaced in any of them shows up."""
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    length = shape[dim]
    x = data.draw(uniform(shape))
    size = data.draw(st.integers(1, length + 1), label="split size")
    pieces = assert_grads_match(lambda t: t.split(size, dim), [x])
    expected = np.split(x, range(size, length, size), axis=dim)
    assert [p.shape for p in pieces] == [e.shape for e in expected]
    cuts = sorted(data.draw(st.lists(st.integers(0, length), max_size=3), label="cuts"))
    sizes = list(np.diff([0, *cuts, length]))
    assert [p.shape[dim] for p in assert_grads_match(lambda t: ts.split(t, sizes, dim), [x])] == sizes
    chunks = data.draw(st.integers(1, length + 1), label="chunks")
    assert_grads_match(lambda t: t.chunk(chunks, dim), [x])
    slices = assert_grads_match(lambda t: t.unbind(dim), [x])
    for i, piece in enumerate(slices):
        np.testing.assert_array_equal(piece.data, np.take(x, i, axis=dim))


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), data=st.data())
def test_narrow(shape: tuple, data: st.DataObject) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    size = shape[dim]
    start = data.draw(st.integers(-size, size), label="start")
    length = data.draw(st.integers(0, size - start % size if start < 0 else size - start), label="length")
    x = data.draw(uniform(shape))
    (out,) = assert_grads_match(lambda t: t.narrow(dim, start, length), [x])
    first = start % size if start < 0 else start
    np.testing.assert_array_equal(out.data, np.take(x, range(first, first + length), axis=dim))


def test_narrows_of_one_place_share_one_backward_and_each_get_their_gradient() -> None:
    """A recurrent layer's gate slices: one backward object for every step's slice of a gate."""
    x = ts.Tensor(np.arange(12.0).reshape(2, 6), requires_grad=True)
    first, again, other = x.narrow(1, 2, 2), (x * 1).narrow(-1, 2, 2), x.narrow(1, 0, 2)
    assert first._node.backward is again._node.backward
    assert first._node.backward is not other._node.backward
    (first * 2 + again * 3 + other).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [[1, 1, 5, 5, 0, 0]] * 2)


# -- softmax family --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(shape=NONSCALAR_SHAPES, data=st.data())
def test_softmax_and_log_softmax(name: str, shape: tuple, data: st.DataObject) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    x = data.draw(uniform(shape, -3, 3))
    (out,) = assert_grads_match(lambda t: getattr(t, name)(dim), [x])
    log_probs = x - np.logaddexp.reduce(x, axis=dim, keepdims=True)
    np.testing.assert_allclose(out.data, np.exp(log_probs) if name == "softmax" else log_probs,
                               rtol=1e-13, atol=1e-15)


@given(shape=SHAPES, keepdim=st.booleans(), data=st.data())
def test_logsumexp(shape: tuple, keepdim: bool, data: st.DataObject) -> None:
    dim = data.draw(_dims(len(shape)), label="dim")
    x = data.draw(uniform(shape, -3, 3))
    (out,) = assert_grads_match(lambda t: t.logsumexp(dim, keepdim), [x])
    expected = np.logaddexp.reduce(x.reshape(-1) if dim is None else x, axis=0 if dim is None else dim,
                                   keepdims=keepdim and dim is not None)
    if dim is None and keepdim:
        expected = np.reshape(expected, (1,) * x.ndim)
    # a result near 0 has no relative precision: an absolute tolerance too
    np.testing.assert_allclose(out.data, expected, rtol=1e-14, atol=1e-14)


# -- random compositions ----------------------------------------------------------------------------

# Each step maps operand tensors to a tensor; the unary ones are safe on all reals by construction.
UNARY_STEPS: dict[str, Callable] = {
    "tanh": ts.tanh,
    "sigmoid": ts.sigmoid,
    "neg": ts.neg,
    "exp_tanh": lambda t: t.tanh().exp(),
    "log_1p_square": lambda t: (1 + t * t).log(),
    "sqrt_1p_square": lambda t: (t * t + 1).sqrt(),
    "square_pow": lambda t: t ** 2,
}
BINARY_STEPS: dict[str, Callable] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div_1p_square": lambda a, b: a / (1 + b * b),
}
REDUCE_LAST_STEPS: dict[str, Callable] = {  # keepdim, so results still broadcast with the rest
    "sum": lambda t: t.sum(-1, keepdim=True),
    "mean": lambda t: t.mean(-1, keepdim=True),
    "logsumexp": lambda t: t.logsumexp(-1, keepdim=True),
    "softmax": lambda t: t.softmax(-1),
}


@st.composite
def programs(draw: st.DrawFn) -> tuple[list[tuple], list[tuple[str, tuple[int, ...]]]]:
    """2-3 broadcastable input shapes and 2-6 steps, each applying a named op to earlier values
    (inputs or step results, so values are shared): a random expression DAG."""
    count = draw(st.integers(2, 3))
    broadcastable = draw(hnp.mutually_broadcastable_shapes(num_shapes=count, max_dims=3, max_side=3))
    shapes = list(broadcastable.input_shapes)
    value_shapes = list(shapes)
    steps = []
    for _ in range(draw(st.integers(2, 6))):
        kind = draw(st.sampled_from(["unary", "binary", "reduce"]))
        if kind == "binary":
            name = draw(st.sampled_from(sorted(BINARY_STEPS)))
            any_value = st.integers(0, len(value_shapes) - 1)
            operands = (draw(any_value), draw(any_value))
            value_shapes.append(np.broadcast_shapes(*(value_shapes[i] for i in operands)))
        else:
            reducible = [i for i, s in enumerate(value_shapes) if len(s) > 0]
            if kind == "reduce" and reducible:
                name = "reduce_" + draw(st.sampled_from(sorted(REDUCE_LAST_STEPS)))
                operands = (draw(st.sampled_from(reducible)),)
                shape = value_shapes[operands[0]]
                value_shapes.append(shape if name == "reduce_softmax" else shape[:-1] + (1,))
            else:
                name = draw(st.sampled_from(sorted(UNARY_STEPS)))
                operands = (draw(st.integers(0, len(value_shapes) - 1)),)
                value_shapes.append(value_shapes[operands[0]])
        steps.append((name, operands))
    return shapes, steps


def _run_program(steps: list[tuple[str, tuple[int, ...]]], inputs: tuple) -> list:
    values = list(inputs)
    for name, operands in steps:
        if name.startswith("reduce_"):
            step = REDUCE_LAST_STEPS[name.removeprefix("reduce_")]
        else:
            step = BINARY_STEPS.get(name) or UNARY_STEPS[name]
        values.append(step(*(values[i] for i in operands)))
    return values[len(inputs):]  # every intermediate is an output: each one's gradient is checked


@given(program=programs(), seed=SEEDS)
def test_random_compositions(program: tuple, seed: int) -> None:
    shapes, steps = program
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1.5, 1.5, s) for s in shapes]
    assert_grads_match(lambda *inputs: _run_program(steps, inputs), arrays, rtol=1e-6, atol=1e-7)


# -- numerical stability at large magnitudes -------------------------------------------------------

# Multiples of 0.5: differences between entries are exact in float64, so a reference that
# subtracts one of them first loses nothing (subtracting a log-sum-exp of magnitude 1e4 would
# cost ~1e-12 of absolute accuracy).
LARGE = np.array([[1e4, -1e4, 0.5, 1e4 - 1.0], [-1e4, -1e4 + 2.0, -1e4 + 0.5, -1e4]])


def _stable_log_softmax(x: np.ndarray, dim: int) -> np.ndarray:
    """Shift by the first entry (exact here), then log-sum-exp by pairwise logaddexp: a different
    route from the library's max shift, immune to overflow all the same."""
    shifted = x - np.take(x, [0], axis=dim)
    return shifted - np.logaddexp.reduce(shifted, axis=dim, keepdims=True)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_family_is_finite_and_right_at_large_magnitudes(dim: int) -> None:
    x = ts.Tensor(LARGE, requires_grad=True)
    projection = np.random.default_rng(dim + 5).standard_normal(LARGE.shape)
    expected_log = _stable_log_softmax(LARGE, dim)
    expected = np.exp(expected_log)

    probabilities = x.softmax(dim)
    np.testing.assert_allclose(probabilities.data, expected, rtol=1e-14, atol=1e-300)
    probabilities.backward(projection)
    # d softmax^T P = s * (P - sum(P s))
    expected_grad = expected * (projection - (projection * expected).sum(dim, keepdims=True))
    np.testing.assert_allclose(x.grad.data, expected_grad, rtol=1e-12, atol=1e-300)

    x.grad = None
    log_probabilities = x.log_softmax(dim)
    np.testing.assert_allclose(log_probabilities.data, expected_log, rtol=1e-14)
    log_probabilities.backward(projection)
    expected_grad = projection - expected * projection.sum(dim, keepdims=True)
    np.testing.assert_allclose(x.grad.data, expected_grad, rtol=1e-12, atol=1e-12)

    x.grad = None
    total = x.logsumexp(dim)
    np.testing.assert_allclose(total.data, np.logaddexp.reduce(LARGE, axis=dim), rtol=1e-15)
    total.sum().backward()
    # The gradient is exp(x - logsumexp) (PyTorch's formula too): the rounding of a result of
    # magnitude 1e4 (half an ulp, ~9e-13) becomes a relative error of the same size.
    np.testing.assert_allclose(x.grad.data, expected, rtol=2e-12, atol=1e-300)


def test_sigmoid_is_finite_and_right_at_large_magnitudes() -> None:
    x = ts.Tensor(LARGE, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning may escape
        y = x.sigmoid()
        y.sum().backward()
    expected = np.exp(-np.logaddexp(0.0, -LARGE))  # log-space: never overflows
    np.testing.assert_allclose(y.data, expected, rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(x.grad.data, expected * (1 - expected), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_sigmoid_is_silent_and_exact_where_exp_overflows_and_near_it(dtype: str) -> None:
    """On either side of where exp(-x) overflows (and at -inf, inf, nan) no warning escapes and the
    values are PyTorch's formula 1 / (1 + exp(-x)), bit for bit."""
    bound = float(np.log(np.finfo(dtype).max))
    x = np.array([-bound - 2, -bound - 0.5, -bound, -bound + 0.5, -bound + 1.5, 0, 3,
                  -np.inf, np.inf, np.nan], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ts.tensor(x).sigmoid().data
    with np.errstate(over="ignore"):
        expected = 1 / (1 + np.exp(-x))
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, expected)


def test_sigmoid_of_integers_and_booleans_converts_them_first() -> None:
    """As PyTorch: the value is converted, then negated (an int8 -128 negated in int8 would wrap to
    -128, and a uint8 1 to 255); the result is float32, as PyTorch's. 0-d and empty inputs keep their
    shape."""
    for values, dtype, result in (([-128, 0, 127], "int8", np.float32), ([1, 200], "uint8", np.float32),
                                  ([-70000, 3], "int32", np.float32), ([True, False], "bool", np.float32)):
        x = np.array(values, dtype)
        out = ts.tensor(x).sigmoid().data
        converted = x.astype(result)
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(out, 1 / (1 + np.exp(-converted)))
        assert out.dtype == result
    assert ts.tensor(np.float64(-3.0)).sigmoid().shape == ()
    assert ts.tensor(np.zeros((0, 4))).sigmoid().shape == (0, 4)


def test_logsumexp_of_an_all_negative_infinity_row_is_negative_infinity_silently() -> None:
    x = ts.Tensor(np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, np.log(3.0)]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = x.logsumexp(1)
        probabilities = x[1:].softmax(1)
    np.testing.assert_array_equal(out.data[0], -np.inf)
    np.testing.assert_allclose(out.data[1], np.log(4.0), rtol=1e-15)
    np.testing.assert_allclose(probabilities.data, [[0.25, 0.0, 0.75]], rtol=1e-15)
