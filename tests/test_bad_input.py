"""Bad input fails early with the op's name, the shapes involved and what was expected."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

import tinygrad_seq as ts

A = ts.Tensor(np.ones((2, 3)))  # the tensor most cases misuse
B = ts.Tensor(np.ones(4))


def _raises(error: type[Exception], call: Callable[[], object], *fragments: str) -> None:
    """``call()`` raises ``error`` whose message contains every fragment (literally)."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"


# -- shape mismatches: ValueError naming the op and both shapes ---------------------------------------


@pytest.mark.parametrize("op, call", [
    ("add", lambda: A + B), ("sub", lambda: A - B), ("mul", lambda: A * B), ("div", lambda: A / B),
    ("pow", lambda: A ** B), ("maximum", lambda: ts.maximum(A, B)), ("minimum", lambda: ts.minimum(B, A)),
    ("eq", lambda: A == B),
])
def test_elementwise_broadcast_mismatch(op: str, call: Callable) -> None:
    shapes = ("(4,)", "(2, 3)") if op == "minimum" else ("(2, 3)", "(4,)")
    _raises(ValueError, call, f"{op}:", f"shapes {shapes[0]} and {shapes[1]} do not broadcast")


@pytest.mark.parametrize("call, shapes", [
    (lambda: ts.addcmul(A, A, B), "(2, 3), (2, 3) and (4,)"),
    (lambda: ts.addcmul(B, A, A), "(4,), (2, 3) and (2, 3)"),  # the product fits; the input does not
])
def test_addcmul_broadcast_mismatch(call: Callable, shapes: str) -> None:
    _raises(ValueError, call, "addcmul:", f"shapes {shapes} do not broadcast")


@pytest.mark.parametrize("call, fragments", [
    (lambda: A @ A, ["matmul:", "(2, 3) and (2, 3)", "last dimension of the first (3)",
                     "second-to-last dimension of the second (2)"]),
    (lambda: A @ B, ["matmul:", "(2, 3) and (4,)", "only dimension of the second (4)"]),
    (lambda: ts.Tensor(np.ones((2, 2, 3))) @ ts.Tensor(np.ones((3, 3, 4))),
     ["matmul:", "batch dims", "(2, 2, 3) and (3, 3, 4)"]),
    (lambda: A @ ts.Tensor(2.0), ["matmul:", "at least 1 dimension", "(2, 3) and ()"]),
])
def test_matmul_mismatch(call: Callable, fragments: list[str]) -> None:
    _raises(ValueError, call, *fragments)


@pytest.mark.parametrize("call, fragments", [
    (lambda: ts.addmm(ts.Tensor(np.ones(3)), ts.Tensor(np.ones(2)), ts.Tensor(np.ones((2, 3)))),
     ["addmm:", "matrices", "(2,) and (2, 3)"]),
    (lambda: ts.addmm(ts.Tensor(np.ones(2)), A, A), ["addmm:", "(2, 3) and (2, 3)", "not aligned"]),
    (lambda: ts.addmm(ts.Tensor(np.ones((3, 2))), A, A.T), ["addmm:", "input of shape (3, 2)",
                                                             "product's shape (2, 2)"]),
    (lambda: ts.addmm(ts.Tensor(np.ones((4, 2, 2))), A, A.T), ["addmm:", "(4, 2, 2)", "(2, 2)"]),
    # rows= (a recurrent step's rows of the projection): exactly the product's shape, no broadcasting
    (lambda: ts.addmm(ts.Tensor(np.ones((6, 1))), A, A.T, rows=slice(2, 4)),
     ["addmm:", "rows 2:4", "shape (6, 1)", "product's shape (2, 2)"]),
    (lambda: ts.addmm(ts.Tensor(np.ones((6, 2))), A, A.T, rows=slice(5, 7)), ["addmm:", "rows 5:7"]),
    (lambda: ts.addmm(ts.Tensor(np.ones(6)), A, A.T, rows=slice(0, 2)), ["addmm:", "shape (6,)"]),
    (lambda: ts.addmm(1.0, A, A.T, rows=slice(0, 2)), ["addmm:", "shape ()"]),
])
def test_addmm_mismatch(call: Callable, fragments: list[str]) -> None:
    _raises(ValueError, call, *fragments)


@pytest.mark.parametrize("call, fragments", [
    (lambda: ts.cat([A, ts.Tensor(np.ones((3, 4)))], dim=0), ["cat:", "except dim 0", "[(2, 3), (3, 4)]"]),
    (lambda: ts.cat([A, ts.Tensor(np.ones((3, 3)))], dim=-1), ["cat:", "except dim 1", "[(2, 3), (3, 3)]"]),
    (lambda: ts.cat([A, ts.Tensor(np.ones((2, 3, 1)))]), ["cat:", "[(2, 3), (2, 3, 1)]"]),
    (lambda: ts.cat([]), ["cat:", "non-empty"]),
    (lambda: ts.stack([A, A.T]), ["stack:", "same shape", "[(2, 3), (3, 2)]"]),
    (lambda: ts.where(ts.Tensor(np.ones(5, bool)), A, 0.0), ["where:", "(5,), (2, 3) and ()"]),
    (lambda: A.reshape(4, 2), ["reshape:", "shape (2, 3)", "6 elements", "(4, 2)"]),
    (lambda: A.view(-1, 4), ["reshape:", "shape (2, 3)", "(-1, 4)"]),
    (lambda: A.expand(4, 3), ["expand:", "shape (2, 3)", "(4, 3)"]),
    (lambda: A.broadcast_to((3, 3)), ["expand:", "shape (2, 3)", "(3, 3)"]),
    (lambda: A.split([1, 1], 1), ["split:", "[1, 1] sum to 2", "dim 1 has size 3"]),
    (lambda: A.split(0), ["split:", "positive", "0"]),
    (lambda: A.permute(0, 0), ["permute:", "(0, 0)", "shape (2, 3)"]),
    (lambda: A.sum((0, -2)), ["sum:", "(0, -2)", "twice", "shape (2, 3)"]),
    (lambda: A.logsumexp((1, 1)), ["logsumexp:", "twice", "shape (2, 3)"]),
    (lambda: A.clip(), ["clip:", "min and max"]),
    (lambda: ts.Tensor(np.ones((0, 2))).max(), ["max:", "empty", "(0, 2)"]),
    (lambda: ts.Tensor([[1.0, 2.0], [3.0]]), ["cannot make a Tensor from list", "inhomogeneous"]),
])
def test_structural_mismatch(call: Callable, fragments: list[str]) -> None:
    _raises(ValueError, call, *fragments)


def test_where_needs_a_boolean_condition() -> None:
    _raises(TypeError, lambda: ts.where(A, A, A), "where:", "boolean", "float64")


# -- out-of-range dims: IndexError naming the op, the dim and the shape ------------------------------


@pytest.mark.parametrize("op, call, dim", [
    ("sum", lambda: A.sum(2), 2), ("sum", lambda: A.sum((0, -3)), -3), ("mean", lambda: A.mean(5), 5),
    ("max", lambda: A.max(2), 2), ("min", lambda: A.min(-3), -3), ("argmax", lambda: A.argmax(2), 2),
    ("argmin", lambda: A.argmin(-3), -3), ("logsumexp", lambda: A.logsumexp(3), 3),
    ("softmax", lambda: A.softmax(2), 2), ("log_softmax", lambda: A.log_softmax(-3), -3),
    ("transpose", lambda: A.transpose(0, 2), 2), ("permute", lambda: A.permute(0, 2), 2),
    ("squeeze", lambda: A.squeeze(2), 2), ("unsqueeze", lambda: A.unsqueeze(4), 4),
    ("flatten", lambda: A.flatten(0, 5), 5), ("cat", lambda: ts.cat([A, A], dim=2), 2),
    ("split", lambda: A.split(1, 2), 2), ("chunk", lambda: A.chunk(2, -3), -3),
    ("unbind", lambda: A.unbind(2), 2),
])
def test_dim_out_of_range(op: str, call: Callable, dim: int) -> None:
    _raises(IndexError, call, f"{op}:", f"dim {dim} is out of range", "(2, 3)")


def test_stack_dim_out_of_range() -> None:
    _raises(IndexError, lambda: ts.stack([A, A], dim=3), "stack:", "dim 3 is out of range", "(2, 3)")


# -- dims that are not integers: TypeError naming the op and the value, as PyTorch refuses them ---------
# (True would otherwise be dim 1, and a float dim would be truncated or fail inside numpy)


@pytest.mark.parametrize("op, call, shown", [
    ("sum", lambda: A.sum(True), "True"), ("sum", lambda: A.sum(1.0), "1.0"),
    ("sum", lambda: A.sum((0, 1.0)), "1.0"), ("mean", lambda: A.mean("1"), "'1'"),
    ("amax", lambda: A.amax([True]), "True"),
    ("logsumexp", lambda: A.logsumexp(0.0), "0.0"), ("argmax", lambda: A.argmax(True), "True"),
    ("softmax", lambda: A.softmax((0, 1)), "(0, 1)"), ("log_softmax", lambda: A.log_softmax(1.0), "1.0"),
    ("transpose", lambda: A.transpose(0, 1.0), "1.0"), ("permute", lambda: A.permute(True, 0), "True"),
    ("squeeze", lambda: A.squeeze(0.0), "0.0"), ("unsqueeze", lambda: A.unsqueeze(1.5), "1.5"),
    ("flatten", lambda: A.flatten(0, 1.0), "1.0"), ("cat", lambda: ts.cat([A, A], dim=1.0), "1.0"),
    ("stack", lambda: ts.stack([A, A], dim=True), "True"), ("split", lambda: A.split(1, dim=True), "True"),
    ("chunk", lambda: A.chunk(2, dim=0.0), "0.0"), ("unbind", lambda: A.unbind(True), "True"),
    ("max", lambda: A.max(1.0), "1.0"),
])
def test_dims_must_be_integers(op: str, call: Callable, shown: str) -> None:
    _raises(TypeError, call, f"{op}:", "dim must be", shown)


def test_numpy_integers_are_integers() -> None:
    """What numpy hands out (shapes' arithmetic, argmax) works wherever an int does, as in PyTorch."""
    two, one = np.int64(2), np.int32(1)
    assert A.sum((np.int64(0),)).shape == (3,) and A.softmax(one).shape == (2, 3)
    assert [t.shape for t in A.chunk(two, one)] == [(2, 2), (2, 1)]
    assert [t.shape for t in A.split([one, two], dim=one)] == [(2, 1), (2, 2)]
    assert ts.stack([A, A], dim=two).shape == (2, 3, 2) and A.unsqueeze(two).shape == (2, 3, 1)
    assert ts.nn.RNN(two, two, num_layers=one).hidden_size == 2
    windows = list(ts.nn.truncated_bptt(ts.arange(5.0), ts.arange(5.0), window=two))
    assert [x.shape for x, _ in windows] == [(2,), (2,), (1,)]


# -- indexing and conversions -------------------------------------------------------------------------


@pytest.mark.parametrize("index, fragment", [
    (5, "index 5 is out of bounds"), ((0, -4), "index -4 is out of bounds"),
    ([0, 2], "index 2 is out of bounds"), ((0, 0, 0), "too many indices"),
    (np.ones(3, bool), "boolean index did not match"),
])
def test_getitem_out_of_bounds_names_the_shape(index: object, fragment: str) -> None:
    _raises(IndexError, lambda: A[index], "getitem:", fragment, "shape (2, 3)")


def test_getitem_rejects_float_index_arrays() -> None:
    _raises(IndexError, lambda: A[np.array([0.5])], "getitem:", "integer or boolean", "float64")


def test_item_of_a_multi_element_tensor() -> None:
    _raises(ValueError, A.item, "item()", "one element", "shape (2, 3)")
    _raises(ValueError, lambda: bool(A), "ambiguous", "(2, 3)")


@pytest.mark.parametrize("data", [[1, 2], np.array([True]), np.arange(2, dtype=np.uint8)])
def test_integer_tensors_cannot_require_grad(data: object) -> None:
    _raises(TypeError, lambda: ts.Tensor(data, requires_grad=True), "floating-point", "require grad")
    _raises(TypeError, lambda: ts.tensor(data).requires_grad_(), "floating-point")


def test_non_numeric_data_is_refused() -> None:
    _raises(TypeError, lambda: ts.Tensor([object()]), "cannot make a Tensor from list",
            "expected booleans, integers or floats")
    _raises(TypeError, lambda: ts.tensor("abc"), "cannot make a Tensor from str", "<U3")
    _raises(TypeError, lambda: ts.tensor([1 + 2j]), "complex128")


def test_chunk_needs_a_positive_count() -> None:
    _raises(ValueError, lambda: ts.ones(4).chunk(0), "chunk", "positive integer", "0")


def test_narrow_names_the_dim_start_and_length_that_do_not_fit() -> None:
    x = ts.ones(2, 5)
    _raises(IndexError, lambda: x.narrow(2, 0, 1), "narrow", "dim 2", "(2, 5)")
    _raises(IndexError, lambda: x.narrow(1, 6, 0), "narrow", "start 6", "size 5")
    _raises(ValueError, lambda: x.narrow(1, 3, 3), "narrow", "length 3", "0 <= length <= 2")
    _raises(ValueError, lambda: x.narrow(1, -1, 2), "narrow", "start 4", "0 <= length <= 1")
    _raises(TypeError, lambda: x.narrow(1, 1.5, 1), "narrow", "start must be an integer", "1.5")
    _raises(IndexError, lambda: ts.tensor(1.0).narrow(0, 0, 1), "narrow", "0-d")


def test_split_refuses_sizes_that_are_not_whole_or_are_negative() -> None:
    """A float size would be truncated (and an element silently dropped); PyTorch refuses both."""
    _raises(TypeError, lambda: ts.arange(5).split([2.5, 2.5]), "split", "each size must be an integer", "2.5")
    _raises(ValueError, lambda: ts.arange(5).split([-1, 6]), "split", "[-1, 6]", "must not be negative")
    _raises(TypeError, lambda: ts.arange(5).split(True), "split", "an int or a list of ints", "True")
    _raises(TypeError, lambda: ts.arange(5).split("ab"), "split", "an int or a list of ints", "'ab'")


# -- in-place mutation of what the graph saved ---------------------------------------------------------


def test_in_place_writes_to_saved_arrays_are_refused() -> None:
    x = ts.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x.tanh()  # tanh saves y's array for backward
    for writable_looking in (x.data, x.numpy(), y.data, y.numpy()):
        with pytest.raises(ValueError, match=re.escape("read-only")):
            writable_looking[0] = 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, 1 - np.tanh([1.0, 2.0]) ** 2, rtol=1e-15)


def test_a_tuple_of_tensors_is_not_an_operand() -> None:
    a = ts.ones(2, 3)
    _raises(TypeError, lambda: a + a.max(dim=1), "ValuesAndIndices holding Tensors", ".values")
    _raises(TypeError, lambda: a * [a, a], "list holding Tensors", "ts.stack")


def test_list_operands_follow_the_constructor_dtype_rule() -> None:
    a = ts.ones(2)
    assert (a + [1.0, 2.0]).dtype == np.float32
    assert (a + ts.tensor([1.0, 2.0])).dtype == np.float32


# -- gradients assigned by hand -------------------------------------------------------------------------


def test_a_gradient_of_another_shape_or_dtype_is_refused_where_it_is_set() -> None:
    """It was stored, and the optimizer's next step then reshaped (3, 1) to (3, 3) or made it float64."""
    param = ts.nn.Parameter(np.ones((3, 1), np.float32))
    _raises(ValueError, lambda: setattr(param, "grad", ts.ones(3)), "Tensor.grad", "shape (3,)", "(3, 1)")
    _raises(ValueError, lambda: setattr(param, "grad", ts.ones(3, 1, dtype=np.float64)), "dtype float64",
            "float32")
    _raises(TypeError, lambda: setattr(param, "grad", np.ones((3, 1), np.float32)), "Tensor.grad", "ndarray")
    param.grad = ts.ones(3, 1)
    ts.optim.SGD([param], lr=0.5).step()
    np.testing.assert_array_equal(param.numpy(), np.full((3, 1), 0.5))
    param.grad = None
    assert param.grad is None


def test_a_plain_tensor_cannot_replace_a_parameter() -> None:
    """It was stored as an attribute and the parameter silently left parameters(), the optimizer and
    the state dict; PyTorch refuses it too. None still declares the parameter absent."""
    layer = ts.nn.Linear(2, 2)
    _raises(TypeError, lambda: setattr(layer, "weight", ts.randn(2, 2)), "Linear", "Tensor", "'weight'",
            "weight.data")
    _raises(TypeError, lambda: setattr(layer, "weight", 5), "int")
    assert list(layer.state_dict()) == ["weight", "bias"]
    layer.bias = None
    assert list(layer.state_dict()) == ["weight"] and layer.bias is None


def test_joining_needs_tensors_and_promotes_integers_as_pytorch() -> None:
    _raises(TypeError, lambda: ts.cat([ts.ones(2), np.ones(2)]), "cat:", "ndarray at position 1")
    _raises(TypeError, lambda: ts.stack([ts.ones(2), None]), "stack:", "NoneType at position 1")
    assert ts.cat([ts.tensor([1]), ts.ones(1)]).dtype == np.float32  # numpy alone: float64
    assert ts.stack([ts.tensor([1]), ts.ones(1, dtype=np.float64)]).dtype == np.float64
    assert ts.cat([ts.tensor([1]), ts.tensor([True])]).dtype == np.int64


def test_reductions_refuse_conflicting_or_odd_arguments() -> None:
    """Both PyTorch's and numpy's spellings at once were resolved silently (axis won)."""
    x = ts.ones(2, 3)
    _raises(TypeError, lambda: x.sum(dim=0, axis=1), "sum:", "dim=0", "axis=1")
    _raises(TypeError, lambda: x.mean(0, keepdim=True, keepdims=False), "mean:", "keepdim=True",
            "keepdims=False")
    _raises(TypeError, lambda: x.amax(0, keepdim="x"), "amax:", "True or False", "'x'")
    assert x.sum(axis=1, keepdims=True).shape == (2, 1) and x.sum(0, keepdim=np.True_).shape == (1, 3)


def test_softmax_family_of_integers_is_float32() -> None:
    """It overflowed: the max of an int tensor with -inf as numpy's initial value."""
    x = ts.tensor([1, 2, 3])
    for op in ("softmax", "log_softmax", "logsumexp"):
        out = getattr(x, op)(0)
        assert out.dtype == np.float32, op
    np.testing.assert_allclose(x.softmax(0).numpy(), np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum(), rtol=1e-6)


def test_sizes_and_dtypes_of_new_tensors_are_checked() -> None:
    """numpy took reshape(-2, 3) as -1, failed on randn(2.5) in its own words, made a string tensor of
    ones(dtype=str), and truncated randn's samples to integers."""
    _raises(ValueError, lambda: ts.ones(6).reshape(-2, 3), "reshape:", ">= -1", "(-2, 3)")
    _raises(TypeError, lambda: ts.ones(6).view(2, 3.0), "reshape:", "integers", "(2, 3.0)")
    _raises(ValueError, lambda: ts.randn(-1), "randn:", ">= 0", "(-1,)")
    _raises(TypeError, lambda: ts.zeros((2, 2.5)), "zeros:", "integers")
    _raises(TypeError, lambda: ts.randn(3, dtype=np.int64), "randn:", "floating-point", "int64")
    _raises(TypeError, lambda: ts.ones(2, dtype=str), "booleans, integers or floats", "<U")
    assert ts.full(3, 2.0).shape == (3,) and ts.full((2, 3), 1.0).shape == (2, 3)
    assert ts.ones(6).reshape((-1, 2)).shape == (3, 2) and ts.zeros(np.int64(2), 3).shape == (2, 3)


def test_module_registration_and_hooks_check_their_arguments() -> None:
    layer = ts.nn.Linear(2, 2)
    _raises(TypeError, lambda: layer.train("no"), "Linear.train", "True or False", "'no'")
    _raises(KeyError, lambda: layer.register_parameter("a.b", None), "without '.'", "'a.b'")
    _raises(TypeError, lambda: layer.register_parameter("w", ts.ones(2)), "expected a Parameter", "Tensor")
    _raises(TypeError, lambda: layer.add_module("child", 5), "add_module", "expected a Module", "int")
    _raises(TypeError, lambda: layer.weight.register_hook(5), "register_hook", "int")
    x, y = ts.ones(6, 4), ts.ones(6, 2)
    _raises(ValueError, lambda: ts.nn.truncated_bptt(x, y, window=2), "truncated_bptt", "batch size in dim 1")
    assert len(list(ts.nn.truncated_bptt(x, ts.ones(6, 4, 3), window=4))) == 2


def test_a_ragged_state_value_is_named_and_agreeing_keepdims_are_no_conflict() -> None:
    x = ts.ones(2, 3)
    assert x.sum(0, keepdim=True, keepdims=np.True_).shape == (1, 3)
    model = ts.nn.Linear(2, 2)
    _raises(ts.nn.StateDictError, lambda: model.load_state_dict({"weight": [[1.0, 2.0], [3.0]],
                                                                  "bias": np.zeros(2)}),
            "weight: checkpoint holds no array")


def test_linear_computes_in_its_weight_dtype_and_transpose_needs_both_dims() -> None:
    """As PyTorch: a float32 Linear refuses a float64 input rather than turning the model's
    arithmetic into float64; ``x.transpose(1)`` is an error, not a silent swap of dim 1 with itself."""
    layer = ts.nn.Linear(3, 2)
    _raises(TypeError, lambda: layer(ts.ones(4, 3, dtype=np.float64)), "linear", "input is float64",
            "weight is float32", "module.to(float64)")
    bias64 = ts.zeros(2, dtype=np.float64)
    _raises(TypeError, lambda: ts.nn.functional.linear(ts.ones(4, 3), layer.weight, bias64), "linear",
            "bias is float64")
    assert layer.double()(ts.ones(4, 3, dtype=np.float64)).dtype == np.float64
    with pytest.raises(TypeError, match="dim1"):
        A.transpose(1)
    assert A.transpose(1, 0).shape == (3, 2)


def test_seeds_take_pytorch_s_range_and_partition_offsets_are_checked() -> None:
    ts.manual_seed(-1)  # as in PyTorch, counted back from 2**64 (numpy alone refuses it)
    first = ts.randn(3).numpy()
    ts.manual_seed(2 ** 64 - 1)
    np.testing.assert_array_equal(ts.randn(3).numpy(), first)
    _raises(ValueError, lambda: ts.manual_seed(2 ** 64), "manual_seed", "[-2**63, 2**64)")
    _raises(TypeError, lambda: ts.manual_seed(1.5), "manual_seed", "seed must be an integer", "1.5")
    text = np.arange(23)
    _raises(ValueError, lambda: ts.nn.sequential_partition(text, 3, offset=-1), "offset must be >= 0", "-1")
    _raises(TypeError, lambda: ts.nn.sequential_partition(text, 3, offset=1.5), "offset must be an integer")
    inputs, _ = ts.nn.sequential_partition(text, 3, offset=np.int64(1))
    assert inputs.shape == (7, 3) and inputs[0, 0].item() == 1
