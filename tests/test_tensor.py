"""The Tensor object: dtype rules, conversions, grad bookkeeping, hooks, names, repr, immutability."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_seq as ts

# -- dtypes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, dtype", [
    (1.5, np.float32), ([1.0, 2.0], np.float32), ([[1, 2.5]], np.float32),
    ([1, 2], np.int64), (3, np.int64), ([True, False], np.bool_),
    (np.zeros(2, np.float64), np.float64), (np.zeros(2, np.float16), np.float16),
    (np.float64(2.0), np.float64),
])
def test_constructor_dtype_follows_pytorch_defaults(data: object, dtype: type) -> None:
    """Python floats become float32 as in PyTorch; numpy data keeps its dtype."""
    assert ts.tensor(data).dtype == dtype
    assert ts.Tensor(data).dtype == dtype


def test_explicit_dtype_wins() -> None:
    assert ts.tensor([1, 2], dtype="float64").dtype == np.float64
    assert ts.tensor(1.5, dtype=np.float16).dtype == np.float16


def test_float64_stays_float64_through_ops_and_grads(rng: np.random.Generator) -> None:
    x = ts.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    w = ts.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    steps = [x @ w]
    steps.append(steps[-1].tanh() * 2.5 + 1)
    steps.append(steps[-1].sigmoid() ** 2 / 3.0)
    steps.append(steps[-1].softmax(-1).log_softmax(0).logsumexp(1))
    steps.append(ts.cat([steps[-1], steps[-1][:1]]).mean())
    for step in steps:
        assert step.dtype == np.float64, step
    steps[-1].backward()
    assert x.grad.dtype == np.float64 and w.grad.dtype == np.float64


@pytest.mark.parametrize("expression", [
    lambda x: x * 2.5, lambda x: 2.5 * x, lambda x: x + 1, lambda x: x - 0.1, lambda x: 1 / x,
    lambda x: x ** 2.0, lambda x: 2.0 ** x, lambda x: x.clip(0.1, 1.0), lambda x: ts.maximum(x, 0.5),
    lambda x: ts.where(x > 1.0, x, 0.0), lambda x: x.tanh().exp().sum() / 7,
])
def test_float32_with_python_scalars_stays_float32(expression: object) -> None:
    x = ts.Tensor(np.array([0.5, 1.5], np.float32), requires_grad=True)
    out = expression(x)
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float32


def test_mixed_precision_promotes_and_each_grad_keeps_its_inputs_dtype() -> None:
    single = ts.Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    double = ts.Tensor(np.array([3.0, 4.0], np.float64), requires_grad=True)
    out = single * double
    assert out.dtype == np.float64
    out.sum().backward()
    assert single.grad.dtype == np.float32 and double.grad.dtype == np.float64
    np.testing.assert_array_equal(single.grad.data, [3.0, 4.0])
    np.testing.assert_array_equal(double.grad.data, [1.0, 2.0])


INT, F32, F64 = np.array([1, 2]), np.array([0.5, 0.25], np.float32), np.array([0.5, 0.25])
# (spelled with lib = ts or torch, the dtype PyTorch gives): an integer meeting a float takes the float
# tensor's dtype, or float32 with a Python float; float-valued ops of integers give float32
PROMOTIONS = [
    ("int + float32", lambda lib: lib.tensor(INT) + lib.tensor(F32), "float32"),
    ("float32 * int", lambda lib: lib.tensor(F32) * lib.tensor(INT), "float32"),
    ("int - float64", lambda lib: lib.tensor(INT) - lib.tensor(F64), "float64"),
    ("bool * float32", lambda lib: lib.tensor(INT > 1) * lib.tensor(F32), "float32"),
    ("int * 0.5", lambda lib: lib.tensor(INT) * 0.5, "float32"),
    ("2.5 - int", lambda lib: 2.5 - lib.tensor(INT), "float32"),
    ("int ** 0.5", lambda lib: lib.tensor(INT) ** 0.5, "float32"),
    ("int / int", lambda lib: lib.tensor(INT) / lib.tensor(INT), "float32"),
    ("int / 2", lambda lib: lib.tensor(INT) / 2, "float32"),
    ("int + int", lambda lib: lib.tensor(INT) + lib.tensor(INT), "int64"),
    ("int * 2", lambda lib: lib.tensor(INT) * 2, "int64"),
    ("maximum(int, float32)", lambda lib: lib.maximum(lib.tensor(INT), lib.tensor(F32)), "float32"),
    ("where(bool, int, 0.5)", lambda lib: lib.where(lib.tensor(INT > 1), lib.tensor(INT), 0.5), "float32"),
    ("exp(int)", lambda lib: lib.tensor(INT).exp(), "float32"),
    ("sqrt(int)", lambda lib: lib.tensor(INT).sqrt(), "float32"),
    ("log(int)", lambda lib: lib.tensor(INT).log(), "float32"),
    ("tanh(int)", lambda lib: lib.tensor(INT).tanh(), "float32"),
    ("sigmoid(int)", lambda lib: lib.tensor(INT).sigmoid(), "float32"),
    ("float64 * float32", lambda lib: lib.tensor(F64) * lib.tensor(F32), "float64"),
    ("int * np.float64", lambda lib: lib.tensor(INT) * np.float64(2.5), "float32"),
    ("int / np.int64", lambda lib: lib.tensor(INT) / np.int64(2), "float32"),
    ("float32 * np.float64", lambda lib: lib.tensor(F32) * np.float64(2.0), "float32"),
    ("int8 + np.int64", lambda lib: lib.tensor(INT.astype(np.int8)) + np.int64(2), "int8"),
    ("clamp(int, 0.5, 2.5)", lambda lib: lib.clamp(lib.tensor(INT), 0.5, 2.5), "float32"),
    ("float32 * 0-d float64", lambda lib: lib.tensor(F32) * lib.tensor(np.float64(2.0)), "float32"),
    ("int8 + 0-d int64", lambda lib: lib.tensor(INT.astype(np.int8)) + lib.tensor(np.int64(2)), "int8"),
    ("int * 0-d float64", lambda lib: lib.tensor(INT) * lib.tensor(np.float64(2.5)), "float64"),
    ("where(bool, 2, 3.5)", lambda lib: lib.where(lib.tensor(INT > 1), 2, 3.5), "float32"),
    ("where(bool, f64, 3.5)", lambda lib: lib.where(lib.tensor(INT > 1), lib.tensor(F64), 3.5), "float64"),
    ("0-d f32 * 0-d f64", lambda lib: lib.tensor(np.float32(2)) * lib.tensor(np.float64(3)), "float64"),
]


@pytest.mark.parametrize("name, call, dtype", PROMOTIONS, ids=[case[0] for case in PROMOTIONS])
def test_integers_meeting_floats_promote_as_in_pytorch(name: str, call: object, dtype: str) -> None:
    """numpy alone would give float64 for each float32 here: int64 with float32 (or with 0.5) is
    float64 to numpy, so integer targets in a loss would turn a float32 model's arithmetic into float64."""
    assert call(ts).dtype == np.dtype(dtype)


def test_a_0d_float64_tensor_with_a_float32_one_gives_each_its_gradient_in_its_dtype() -> None:
    x = ts.tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    scale = ts.tensor(np.float64(3.0), requires_grad=True)
    out = x * scale
    assert out.dtype == np.float32  # the 0-d tensor defers, as in PyTorch
    out.sum().backward()
    assert (x.grad.dtype, scale.grad.dtype) == (np.float32, np.float64)
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
    assert scale.grad.item() == 3.0


def test_integer_promotions_match_torch() -> None:
    torch = pytest.importorskip("torch")
    for name, call, dtype in PROMOTIONS:
        theirs, ours = call(torch), call(ts)
        assert str(theirs.dtype) == f"torch.{dtype}", name
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, err_msg=name)  # exp: 1 ulp


def test_an_integer_matrix_meets_a_float_one_in_the_float_s_dtype() -> None:
    """PyTorch refuses to mix them in a matmul; numpy makes float64. Here, as in the elementwise ops, the
    float's dtype: a Linear layer fed integer features stays float32."""
    ints = ts.tensor([[1, 2]])
    assert (ints @ ts.ones(2, 2)).dtype == np.float32 and ts.nn.Linear(2, 3)(ints).dtype == np.float32
    assert ts.addmm(ts.tensor([1, 2]), ts.ones(2, 2), ts.ones(2, 2)).dtype == np.float32  # an integer bias
    np.testing.assert_array_equal((ints @ ts.ones(2, 2)).numpy(), [[3.0, 3.0]])


def test_cast_between_float_types_carries_the_gradient_back() -> None:
    x = ts.Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    doubled = x.double()
    assert doubled.dtype == np.float64 and doubled.float().dtype == np.float32
    (doubled * doubled).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0])


@pytest.mark.parametrize("data", [[1, 2], [True, False], np.arange(3, dtype=np.int32)])
def test_integer_and_bool_tensors_cannot_require_grad(data: object) -> None:
    with pytest.raises(TypeError, match="floating-point"):
        ts.Tensor(data, requires_grad=True)
    with pytest.raises(TypeError, match="floating-point"):
        ts.Tensor(data).requires_grad_()


def test_casting_to_int_leaves_the_graph() -> None:
    x = ts.Tensor([1.5, 2.5], requires_grad=True)
    assert not x.astype(np.int64).requires_grad


# -- conversions and properties -------------------------------------------------------------------


def test_shape_dtype_ndim_and_conversions() -> None:
    source = np.arange(6.0).reshape(2, 3)
    x = ts.Tensor(source)
    assert x.shape == (2, 3) and x.ndim == 2 and x.dtype == np.float64 and x.size == 6
    assert x.numel() == 6 and x.dim() == 2 and len(x) == 2
    np.testing.assert_array_equal(x.numpy(), source)
    np.testing.assert_array_equal(np.asarray(x), source)
    assert np.asarray(x, dtype=np.float32).dtype == np.float32
    assert x.tolist() == source.tolist()
    assert ts.Tensor([[2.5]]).item() == 2.5 and isinstance(ts.Tensor([[2.5]]).item(), float)
    assert float(ts.Tensor(2.5)) == 2.5 and int(ts.Tensor(3)) == 3


def test_detach_cuts_the_graph_and_shares_nothing_mutable() -> None:
    x = ts.Tensor([1.0, 2.0], requires_grad=True, name="x")
    y = x * 3
    detached = y.detach()
    assert not detached.requires_grad and detached.grad_fn is None and detached.is_leaf
    np.testing.assert_array_equal(detached.data, y.data)
    assert not detached.data.flags.writeable
    (detached * x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [3.0, 6.0])  # no gradient through the detached factor


def test_requires_grad_switches_leaves_only() -> None:
    x = ts.Tensor([1.0, 2.0])
    assert not x.requires_grad and x.is_leaf
    assert x.requires_grad_() is x and x.requires_grad and x.is_leaf and x.grad_fn is None
    y = x * 2
    assert y.requires_grad and not y.is_leaf and y.grad_fn.op == "mul"
    with pytest.raises(RuntimeError, match="detach"):
        y.requires_grad_(False)
    x.requires_grad = False
    assert not x.requires_grad and not (x * 2).requires_grad


def test_retain_grad_keeps_an_intermediate_gradient() -> None:
    x = ts.Tensor([1.0, 2.0], requires_grad=True)
    hidden, other = x * 3, x * 4
    hidden.retain_grad()
    assert hidden.retains_grad and not other.retains_grad
    (hidden * hidden + other).sum().backward()
    np.testing.assert_array_equal(hidden.grad.data, 2 * hidden.data)
    assert other.grad is None
    np.testing.assert_array_equal(x.grad.data, 2 * hidden.data * 3 + 4)
    with pytest.raises(RuntimeError, match="does not require grad"):
        ts.Tensor([1.0]).retain_grad()


# -- hooks --------------------------------------------------------------------------------------


def test_hook_sees_the_accumulated_gradient_once_and_can_replace_it() -> None:
    x = ts.Tensor([1.0, 2.0], requires_grad=True)
    hidden = x * 2
    seen: list[np.ndarray] = []

    def record_and_scale(grad: np.ndarray) -> np.ndarray:
        seen.append(np.array(grad))
        return grad * 10

    hidden.register_hook(record_and_scale)
    (hidden + hidden * hidden).sum().backward()  # two uses: 1 + 2 * hidden
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], 1 + 2 * hidden.data)
    np.testing.assert_array_equal(x.grad.data, (1 + 2 * hidden.data) * 10 * 2)


def test_hook_returning_none_keeps_the_gradient_and_removal_works() -> None:
    x = ts.Tensor([1.0, 2.0], requires_grad=True)
    calls: list[np.ndarray] = []
    remove_observer = x.register_hook(calls.append)
    remove_doubler = x.register_hook(lambda grad: grad * 2)
    (x * 3).sum().backward()
    assert len(calls) == 1
    np.testing.assert_array_equal(x.grad.data, [6.0, 6.0])  # a leaf hook changes what lands in .grad
    remove_observer()
    remove_doubler()
    remove_doubler()  # removing twice is harmless
    x.grad = None
    (x * 3).sum().backward()
    assert len(calls) == 1
    np.testing.assert_array_equal(x.grad.data, [3.0, 3.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        ts.Tensor([1.0]).register_hook(print)


# -- names and repr --------------------------------------------------------------------------------


def test_names_reach_the_graph_node() -> None:
    w = ts.Tensor([1.0, 2.0], requires_grad=True, name="w")
    assert w.name == "w" and w._node.name == "w"
    hidden = (w * 2).named("hidden")
    assert hidden.name == "hidden" and hidden.grad_fn.name == "hidden"
    w.name = "weight"
    assert w._node.name == "weight"
    assert ts.randn(2, name="noise").name == "noise"


def test_repr_shows_values_op_dtype_and_name() -> None:
    x = ts.Tensor(np.array([0.5, -1.25]), requires_grad=True, name="x")
    assert repr(x) == "tensor([ 0.5 , -1.25], dtype=float64, requires_grad=True, name='x')"
    assert repr(x.tanh()) == "tensor([ 0.4621, -0.8483], dtype=float64, op=tanh)"
    assert repr(ts.Tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(ts.Tensor([1, 2])) == "tensor([1, 2])"
    assert "..." in repr(ts.zeros(1000))  # long tensors are summarised


# -- immutability of arrays ------------------------------------------------------------------------


def test_data_and_numpy_arrays_are_read_only() -> None:
    x = ts.Tensor([1.0, 2.0], requires_grad=True)
    for view in (x.data, x.numpy(), np.asarray(x)):
        with pytest.raises(ValueError, match="read-only"):
            view[0] = 5.0
    (x * x).sum().backward()
    with pytest.raises(ValueError, match="read-only"):
        x.grad.data[0] = 5.0


def test_constructor_copies_its_source() -> None:
    source = np.array([1.0, 2.0])
    x = ts.Tensor(source, requires_grad=True)
    y = x * x
    source[:] = 100.0
    assert source.flags.writeable  # the caller's array is left alone
    np.testing.assert_array_equal(x.data, [1.0, 2.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0])
    copy = ts.Tensor(x)
    assert copy.data is not x.data and not copy.requires_grad


def test_backward_does_not_freeze_the_callers_gradient_array() -> None:
    x = ts.Tensor(np.array([1.0, 2.0]), requires_grad=True)  # float64 like the seed: no cast-copy
    seed = np.array([1.0, 1.0])
    (x + 1).backward(seed)
    seed[0] = 3.0  # still the caller's to change, and .grad does not follow
    np.testing.assert_array_equal(x.grad.data, [1.0, 1.0])


def test_assigning_data_replaces_it_without_touching_the_graph() -> None:
    x = ts.Tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    replacement = np.array([10.0, 20.0])
    x.data = replacement
    replacement[0] = -1.0  # assignment copied it
    np.testing.assert_array_equal(x.data, [10.0, 20.0])
    np.testing.assert_array_equal(y.data, [1.0, 4.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0])  # the graph saved the old array
    assert x.requires_grad and x.is_leaf
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(2,\)"):
        x.data = np.zeros(3)
