"""The backward engine: depth, long recurrences, accumulation, grad mode, memory release,
error messages, node order, provenance, and the O(T) cost of slicing a sequence."""

from __future__ import annotations

import gc
import sys
import tracemalloc
import weakref

import numpy as np
import pytest
from helpers import assert_grads_match

import tinygrad_seq as ts
from tinygrad_seq.autograd import ProductGrad, topological_order

# -- depth and long recurrences ------------------------------------------------------------------


def test_a_100000_op_chain_backpropagates_without_recursion() -> None:
    recursion_limit = sys.getrecursionlimit()
    x = ts.Tensor(np.array([0.5]), requires_grad=True)
    y = x
    for _ in range(50_000):
        y = y * 1.00001 + 0.001  # two ops per iteration
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, [1.00001 ** 50_000], rtol=1e-12)
    assert sys.getrecursionlimit() == recursion_limit
    del y  # freeing a 100,000-deep graph must not recurse either
    gc.collect()


def _rnn(W: ts.Tensor, U: ts.Tensor, x: ts.Tensor, h0: ts.Tensor) -> ts.Tensor:
    """h_t = tanh(h_{t-1} W + x_t U) over the first axis of x (T, B, I); returns h_T."""
    h = h0
    for t in range(x.shape[0]):
        h = ts.tanh(h @ W + x[t] @ U)
    return h


def _numpy_bptt(W: np.ndarray, U: np.ndarray, x: np.ndarray, h0: np.ndarray,
                dh_last: np.ndarray) -> tuple[np.ndarray, ...]:
    """Hand-written backpropagation through time for ``_rnn``: (h_T, dW, dU, dx, dh0)."""
    hs = [h0]
    for x_t in x:
        hs.append(np.tanh(hs[-1] @ W + x_t @ U))
    dW, dU, dx = np.zeros_like(W), np.zeros_like(U), np.zeros_like(x)
    dh = dh_last
    for t in reversed(range(len(x))):
        dpre = dh * (1 - hs[t + 1] ** 2)
        dW += hs[t].T @ dpre
        dU += x[t].T @ dpre
        dx[t] = dpre @ U.T
        dh = dpre @ W.T
    return hs[-1], dW, dU, dx, dh


def _rnn_arrays(rng: np.random.Generator, steps: int, batch: int = 2, inputs: int = 3,
                hidden: int = 4) -> list[np.ndarray]:
    return [rng.standard_normal((hidden, hidden)) * 0.8 / np.sqrt(hidden),
            rng.standard_normal((inputs, hidden)) / np.sqrt(inputs),
            rng.standard_normal((steps, batch, inputs)),
            rng.standard_normal((batch, hidden)) * 0.5]


def test_short_rnn_matches_finite_differences(rng: np.random.Generator) -> None:
    assert_grads_match(_rnn, _rnn_arrays(rng, steps=5))


def test_rnn_numpy_reference_matches_finite_differences(rng: np.random.Generator) -> None:
    """The reference used for the long run is itself checked first, on a short one."""
    from helpers import numeric_gradient

    arrays = _rnn_arrays(rng, steps=4)
    dh_last = rng.standard_normal(arrays[3].shape)
    _, *analytic = _numpy_bptt(*arrays, dh_last)
    numeric = numeric_gradient(lambda *a: float(np.sum(_numpy_bptt(*a, dh_last)[0] * dh_last)), arrays)
    for got, expected in zip(analytic, numeric, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_10000_step_rnn_matches_numpy_bptt(rng: np.random.Generator) -> None:
    arrays = _rnn_arrays(rng, steps=10_000)
    W, U, x, h0 = (ts.Tensor(a, requires_grad=True) for a in arrays)
    h_last = _rnn(W, U, x, h0)
    dh_last = rng.standard_normal(h_last.shape)
    h_last.backward(dh_last)
    expected_h, *expected_grads = _numpy_bptt(*arrays, dh_last)
    np.testing.assert_allclose(h_last.data, expected_h, rtol=1e-12)
    for tensor, expected in zip((W, U, x, h0), expected_grads, strict=True):
        assert np.isfinite(tensor.grad.data).all()
        np.testing.assert_allclose(tensor.grad.data, expected, rtol=1e-10, atol=1e-14)
    assert np.abs(W.grad.data).max() > 1e-3  # the check above compares something non-trivial


# -- accumulation --------------------------------------------------------------------------------


def test_a_weight_used_many_times_receives_the_sum(rng: np.random.Generator) -> None:
    w = ts.Tensor(rng.standard_normal(3), requires_grad=True)
    xs = rng.standard_normal((50, 3))
    loss = ts.Tensor(0.0)
    for x in xs:
        loss = loss + (w * x).sum()
    loss.backward()
    np.testing.assert_allclose(w.grad.data, xs.sum(0), rtol=1e-14)


def test_an_input_used_twice_in_one_expression() -> None:
    x = ts.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, 2 * x.data + 1)


def test_backward_twice_with_retain_graph_accumulates() -> None:
    x = ts.Tensor(np.array([0.3, -0.7]), requires_grad=True)
    loss = x.tanh().sum()
    loss.backward(retain_graph=True)
    first = x.grad.data.copy()
    loss.backward(retain_graph=True)
    np.testing.assert_array_equal(x.grad.data, 2 * first)
    loss.backward()
    np.testing.assert_array_equal(x.grad.data, 3 * first)
    (x * 5).sum().backward()  # a second graph adds in as well
    np.testing.assert_array_equal(x.grad.data, 3 * first + 5)


def test_scalar_leaf_gradients_accumulate_over_several_uses() -> None:
    """0-d gradients are numpy scalars after arithmetic; three paths must all add up."""
    x = ts.Tensor(np.array(0.7), requires_grad=True)
    (x / (1 + x * x)).backward()
    np.testing.assert_allclose(x.grad.data, (1 - 0.49) / 1.49 ** 2, rtol=1e-15)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_full_reduction_spreads_its_scalar_gradient_in_any_form(dtype: type) -> None:
    """sum / mean of everything hand their 0-d gradient to every element as one read-only view; it
    may arrive as an array or, after 0-d arithmetic, as a numpy scalar (here: times 3, and a product)."""
    x = ts.Tensor(np.arange(6, dtype=dtype).reshape(2, 3), requires_grad=True)
    (x.sum() * 3.0).backward()
    (x.mean() * x.mean()).backward()
    expected = 3.0 + 2 * x.data.mean() / 6
    np.testing.assert_allclose(x.grad.data, np.full((2, 3), expected), rtol=1e-6)
    assert x.grad.dtype == dtype and not x.grad.data.flags.writeable
    empty = ts.Tensor(np.zeros((0, 3), dtype), requires_grad=True)
    empty.sum().backward()
    assert empty.grad.shape == (0, 3)



def test_nodes_share_shape_tuples_and_the_table_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from tinygrad_seq import autograd

    a = ts.Tensor(np.ones((3, 4)), requires_grad=True)
    assert (a * 2)._node.shape is (a + 1)._node.shape == (3, 4)
    monkeypatch.setattr(autograd, "_shapes", {})  # what other tests left in it does not count here
    monkeypatch.setattr(autograd, "_SHAPES_KEPT", 3)
    for n in range(1, 10):
        assert (ts.Tensor(np.ones(n), requires_grad=True) * 2)._node.shape == (n,)
        assert len(autograd._shapes) <= 3
    assert (a * 3)._node.shape == (3, 4) and (a * 3).grad_fn.shape is (a * 4).grad_fn.shape


# -- grad mode -------------------------------------------------------------------------------------


def test_no_grad_context_records_nothing_and_restores() -> None:
    x = ts.Tensor([1.0, 2.0], requires_grad=True)
    with ts.no_grad():
        assert not ts.is_grad_enabled()
        y = (x * 2).tanh()
        with ts.enable_grad():
            z = x * 3
        with ts.no_grad():
            pass
        assert not ts.is_grad_enabled()
    assert ts.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn.op == "mul"


def test_no_grad_decorator_and_restoring_after_an_exception() -> None:
    @ts.no_grad()
    def double(t: ts.Tensor) -> ts.Tensor:
        """Doubles."""
        return t * 2

    x = ts.Tensor([1.0], requires_grad=True)
    assert not double(x).requires_grad and double.__doc__ == "Doubles."
    assert ts.is_grad_enabled()
    with pytest.raises(ZeroDivisionError), ts.no_grad():
        raise ZeroDivisionError
    assert ts.is_grad_enabled()


# -- release of saved arrays ------------------------------------------------------------------------


def _loss_through_a_dropped_intermediate(x: ts.Tensor) -> tuple[ts.Tensor, weakref.ref]:
    """tanh saves its output for backward; the Tensor holding it is dropped on return, so the
    graph is the array's only owner."""
    inner = x.tanh()
    return (inner * 3).sum(), weakref.ref(inner.data)


def test_saved_arrays_are_released_by_backward() -> None:
    x = ts.Tensor(np.ones(1000), requires_grad=True)
    loss, saved = _loss_through_a_dropped_intermediate(x)
    gc.collect()
    assert saved() is not None  # kept for backward
    loss.backward()
    gc.collect()
    assert saved() is None
    with pytest.raises(RuntimeError, match="the arrays saved by 'sum'.*retain_graph=True"):
        loss.backward()  # the walk stops at the first freed node: the loss's own sum


def test_retain_graph_keeps_saved_arrays_until_the_last_backward() -> None:
    x = ts.Tensor(np.ones(1000), requires_grad=True)
    loss, saved = _loss_through_a_dropped_intermediate(x)
    loss.backward(retain_graph=True)
    gc.collect()
    assert saved() is not None
    loss.backward()
    gc.collect()
    assert saved() is None
    np.testing.assert_allclose(x.grad.data, 2 * 3 * (1 - np.tanh(1.0) ** 2), rtol=1e-15)


# -- errors ------------------------------------------------------------------------------------------


def test_backward_of_a_non_scalar_needs_a_gradient_naming_the_shape() -> None:
    y = ts.Tensor(np.ones((2, 3)), requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\)"):
        y.backward()
    expected = r"gradient has shape \(3, 2\), expected the tensor's shape \(2, 3\)"
    with pytest.raises(ValueError, match=expected):
        y.backward(np.ones((3, 2)))
    with pytest.raises(RuntimeError, match="does not require grad"):
        ts.Tensor([1.0]).sum().backward()


# -- node order and provenance ------------------------------------------------------------------------


def _small_graph() -> ts.Tensor:
    x = ts.Tensor(np.ones((2, 3)), requires_grad=True)
    w = ts.Tensor(np.ones((3, 3)), requires_grad=True)
    h = (x @ w).tanh()
    gates = h.split(1, dim=1)
    return (gates[0] * gates[1].sigmoid() + ts.cat(gates[1:], 1).sum(1, keepdim=True) + h.mean()).sum()


def test_topological_order_is_deterministic_and_valid() -> None:
    first, second = topological_order(_small_graph()._node), topological_order(_small_graph()._node)
    assert [(n.op, n.shape) for n in first] == [(n.op, n.shape) for n in second]
    position = {id(node): i for i, node in enumerate(first)}
    for node in first:
        for parent in node.parents:
            if parent is not None:
                assert position[id(parent)] > position[id(node)]  # each node before its inputs
    assert sum(node.is_leaf for node in first) == 2


def test_scope_provenance_is_recorded_and_nested_labels_join() -> None:
    x = ts.Tensor([1.0, 2.0], requires_grad=True)
    with ts.scope("lbl", step=3):
        inside = x * 2
        with ts.scope("inner", gate="f"):
            nested = inside.tanh()
    outside = x * 2
    assert inside.grad_fn.prov.label == "lbl" and inside.grad_fn.prov.step == 3
    assert nested.grad_fn.prov.label == "lbl/inner"
    assert nested.grad_fn.prov.step == 3 and nested.grad_fn.prov.gate == "f"
    assert outside.grad_fn.prov is None


def test_step_and_gate_records_share_the_rest_and_read_like_full_records() -> None:
    """``at(step=, gate=)`` makes the recurrent layers' per-step records: sharing their fixed part must
    not let one record's change reach another."""
    from tinygrad_seq.provenance import Provenance

    run = Provenance(module="rnn", layer=1, direction=0, label="enc", call=4)
    gate = run.at(step=2).at(gate="f")
    assert gate._fixed is run._fixed
    same = Provenance("rnn", 1, 0, 2, "f", "enc", 4)
    assert gate == same and hash(gate) == hash(same)
    assert gate.as_dict() == {"module": "rnn", "layer": 1, "direction": 0, "step": 2, "gate": "f",
                              "label": "enc", "call": 4}
    other = gate.at(layer=3).child(label="dec", module="cell")
    assert (other.layer, other.label, other.module, other.step, other.gate) == (3, "enc/dec", "rnn.cell", 2,
                                                                                 "f")
    assert (run.layer, run.label, run.module, run.step, gate.layer) == (1, "enc", "rnn", None, 1)
    assert str(gate) == "rnn layer=1 forward t=2 gate=f [enc]"


# -- cost of slicing a sequence -----------------------------------------------------------------------


def test_unbind_backward_does_not_allocate_a_full_buffer_per_slice(rng: np.random.Generator) -> None:
    """The T slice gradients go into one buffer. The peak, about 2.5x the tensor's size, is that
    buffer plus the slices' own gradients, which wait until the walk reaches the slices (made before
    the chain, so visited last). A dense full-size gradient per slice peaks at about 5.5x (measured
    by patching getitem's backward to return ``IndexGrad.dense()``) and costs O(T^2) time; hence
    the 3.0x bound."""
    steps, width = 2000, 64
    x = ts.Tensor(rng.standard_normal((steps, width)), requires_grad=True)
    total = None
    for step in x.unbind(0):
        total = step if total is None else total * 0.5 + step
    loss = total.sum()
    tracemalloc.start()
    try:
        loss.backward()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3.0 * x.data.nbytes, f"backward peaked at {peak / x.data.nbytes:.1f}x the tensor's size"
    expected = 0.5 ** np.minimum(np.arange(steps)[::-1], steps - 1)[:, None] * np.ones(width)
    np.testing.assert_array_equal(x.grad.data, expected)


def test_hooks_see_tensors_and_may_replace_them_like_pytorch() -> None:
    x = ts.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g))
    y = x * x
    y.register_hook(lambda g: g.clip(-1.0, 1.0) * 10)  # a PyTorch-style hook: Tensor in, Tensor out
    (y * 5).sum().backward()
    assert isinstance(seen[0], ts.Tensor)
    np.testing.assert_array_equal(x.grad.numpy(), 2 * np.array([1.0, -2.0, 3.0]) * 10)


def test_a_hook_returning_the_wrong_shape_is_refused() -> None:
    x = ts.tensor(np.ones(3), requires_grad=True)
    x.register_hook(lambda g: np.ones(4))
    with pytest.raises(ValueError, match=r"hook on 'leaf' returned a gradient of shape \(4,\), expected"):
        x.sum().backward()


def test_no_grad_and_enable_grad_decorate_without_parentheses() -> None:
    x = ts.tensor(np.ones(2), requires_grad=True)

    @ts.no_grad
    def frozen(t):
        return t * 2

    @ts.enable_grad
    def recorded(t):
        return t * 2

    assert not frozen(x).requires_grad
    with ts.no_grad():
        assert recorded(x).requires_grad


# -- garbage collector pauses and deferred weight-gradient products ---------------------------------


class _GCProbe(ts.nn.Module):
    """Records whether the cyclic collector runs while its forward builds a graph."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail, self.seen = fail, []

    def forward(self, x: ts.Tensor) -> ts.Tensor:
        self.seen.append(gc.isenabled())
        if self.fail:
            raise ValueError("boom")
        return x * 2


def test_forward_and_backward_pause_the_collector_and_always_restore_it() -> None:
    probe, x = _GCProbe(), ts.tensor([1.0, 2.0], requires_grad=True)
    seen_in_backward = []
    y = probe(x)
    y.register_hook(lambda g: seen_in_backward.append(gc.isenabled()))
    assert gc.isenabled()
    y.sum().backward()
    assert probe.seen == [False] and seen_in_backward == [False] and gc.isenabled()
    with pytest.raises(ValueError, match="boom"):
        _GCProbe(fail=True)(x)
    assert gc.isenabled()
    gc.disable()  # the caller's choice stands
    try:
        probe(x).sum().backward()
        assert not gc.isenabled()
    finally:
        gc.enable()


@ts.custom_op
def _shared_weight_step(h, w):
    """h @ w^T whose weight gradient is a deferred ProductGrad, as a 2-D matmul returns it."""
    return h @ w.T, lambda g: (g @ w, ProductGrad(g, h))


@pytest.mark.parametrize("batch", [2, 100])  # 100: 400 rows in all, folded FOLD_ROWS at a time
def test_product_grads_of_a_weight_add_up_to_the_dense_sum(rng: np.random.Generator, batch: int) -> None:
    w0, h0 = rng.standard_normal((3, 3)), rng.standard_normal((batch, 3))
    w, h = ts.tensor(w0, requires_grad=True), ts.tensor(h0, requires_grad=True)
    out = h
    for _ in range(4):
        out = ts.tanh(_shared_weight_step(out, w))
    (out * w.sum()).sum().backward()  # the weight also gets a dense gradient, mixed with the products
    dense_w, dense_h = ts.tensor(w0, requires_grad=True), ts.tensor(h0, requires_grad=True)
    out = dense_h
    for _ in range(4):
        out = ts.tanh(out @ dense_w.T)
    (out * dense_w.sum()).sum().backward()
    np.testing.assert_allclose(w.grad.data, dense_w.grad.data, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h.grad.data, dense_h.grad.data, rtol=1e-12, atol=1e-14)
