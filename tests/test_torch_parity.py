"""PyTorch as an oracle in float64: composite functions agree to 1e-12 (values and every input's
gradient), and the backward formulas of the nonlinearities agree with PyTorch's backward
kernels fed the very same forward output, bit for bit where the arithmetic is the same."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

import tinygrad_seq as ts

torch = pytest.importorskip("torch")

HIDDEN = 3


def _as_list(result: object) -> list:
    return list(result) if isinstance(result, (list, tuple)) else [result]


def _assert_matches_torch(fn: Callable[..., object], arrays: list[np.ndarray], rtol: float = 1e-12) -> None:
    """Run ``fn(lib, *inputs)`` with lib = tinygrad_seq and lib = torch on the same float64 arrays;
    backpropagate the same random projection of every output; compare outputs and input grads."""
    ours_in = [ts.Tensor(a, requires_grad=True) for a in arrays]
    theirs_in = [torch.tensor(a, requires_grad=True) for a in arrays]
    ours, theirs = _as_list(fn(ts, *ours_in)), _as_list(fn(torch, *theirs_in))
    projection_rng = np.random.default_rng(1)
    projections = [projection_rng.standard_normal(out.shape) for out in ours]
    for out, projection in zip(ours, projections, strict=True):
        out.backward(projection, retain_graph=True)
    torch.autograd.backward(theirs, [torch.tensor(p) for p in projections])
    for i, (our_out, their_out) in enumerate(zip(ours, theirs, strict=True)):
        np.testing.assert_allclose(our_out.data, their_out.detach().numpy(), rtol=rtol, atol=1e-14,
                                   err_msg=f"output {i}")
    for i, (our_in, their_in) in enumerate(zip(ours_in, theirs_in, strict=True)):
        np.testing.assert_allclose(our_in.grad.data, their_in.grad.numpy(), rtol=rtol, atol=1e-14,
                                   err_msg=f"gradient of input {i}")


# -- composite functions ------------------------------------------------------------------------------


def _lstm(lib: ModuleType, xs: object, h: object, c: object, weight: object, bias: object) -> list:
    """A hand-written LSTM over the first axis of xs: cat, matmul, split, sigmoid, tanh."""
    for t in range(xs.shape[0]):
        gates = lib.cat([xs[t], h], 1) @ weight + bias
        i, f, g, o = gates.split(HIDDEN, 1)
        c = lib.sigmoid(f) * c + lib.sigmoid(i) * lib.tanh(g)
        h = lib.sigmoid(o) * lib.tanh(c)
    return [h, c]


@pytest.mark.parametrize("index", [
    (0, slice(None), [0, 1]), ([1, 0], slice(None), -1), (slice(None), 0, [0, 3]), ([0, 1], 0, [0, 1]),
    (0, [[0, 1], [1, 2]], slice(None)), (None, 0, slice(None), [1, 3]), (Ellipsis, 0, [1, 0]),
    (1, np.array([True, False, True]), slice(None)),
    (0, slice(1, None), np.array([True, False, True, False])),
])
def test_ints_beside_index_arrays_select_first_as_in_torch(index: tuple, rng: np.random.Generator) -> None:
    _assert_matches_torch(lambda lib, x: x[index], [rng.standard_normal((2, 3, 4))], rtol=0)


def test_clamp_with_tensor_bounds_matches_torch(rng: np.random.Generator) -> None:
    x = rng.uniform(-2, 2, (4, 3))
    x[0, 0], x[1, 1] = 0.25, 1.5  # ties with the bounds below
    low, high = np.array([0.25, -0.5, 0.0]), np.array([[1.0], [1.5], [-1.0], [0.5]])  # row 2: min > max
    _assert_matches_torch(lambda lib, t, lo, hi: lib.clamp(t, lo, hi), [x, low, high], rtol=0)
    _assert_matches_torch(lambda lib, t, lo: lib.clamp(t, min=lo), [x, low], rtol=0)


def test_narrow_matches_torch(rng: np.random.Generator) -> None:
    _assert_matches_torch(lambda lib, x: [x.narrow(1, 1, 2), lib.narrow(x, -1, -3, 3), x.narrow(0, 0, 0)],
                          [rng.standard_normal((3, 4))])


@pytest.mark.parametrize("bias_shape", [(2, 4), (4,), (1, 4), (2, 1), ()])
def test_addmm_matches_torch(bias_shape: tuple, rng: np.random.Generator) -> None:
    arrays = [rng.standard_normal(bias_shape), rng.standard_normal((2, 3)), rng.standard_normal((3, 4))]
    _assert_matches_torch(lambda lib, c, a, b: lib.addmm(c, a, b), arrays, rtol=0)


@pytest.mark.parametrize("value", [1, 0.3])
def test_addcmul_matches_torch(value: float, rng: np.random.Generator) -> None:
    arrays = [rng.standard_normal((2, 1, 3)), rng.standard_normal((4, 3)), rng.standard_normal((2, 4, 1))]
    _assert_matches_torch(lambda lib, x, a, b: lib.addcmul(x, a, b, value=value), arrays, rtol=0)


def test_lstm_matches_torch(rng: np.random.Generator) -> None:
    steps, batch, inputs = 3, 2, 4
    _assert_matches_torch(_lstm, [
        rng.standard_normal((steps, batch, inputs)), rng.standard_normal((batch, HIDDEN)),
        rng.standard_normal((batch, HIDDEN)), rng.standard_normal((inputs + HIDDEN, 4 * HIDDEN)) * 0.5,
        rng.standard_normal(4 * HIDDEN) * 0.1,
    ])


def test_softmax_cross_entropy_matches_torch_cross_entropy(rng: np.random.Generator) -> None:
    logits_array = rng.standard_normal((5, 4)) * 2
    targets = np.array([0, 3, 3, 1, 2])
    logits = ts.Tensor(logits_array, requires_grad=True)
    loss = -logits.log_softmax(1)[np.arange(5), targets].mean()
    loss.backward()
    their_logits = torch.tensor(logits_array, requires_grad=True)
    their_loss = torch.nn.functional.cross_entropy(their_logits, torch.tensor(targets))
    their_loss.backward()
    np.testing.assert_allclose(loss.item(), their_loss.item(), rtol=1e-12)
    np.testing.assert_allclose(logits.grad.data, their_logits.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_logsumexp_with_broadcasting_matches_torch(rng: np.random.Generator) -> None:
    def pairwise_logsumexp(lib: ModuleType, a: object, b: object, scale: object) -> object:
        return lib.logsumexp(a[:, None, :] + b[None, :, :] * scale, dim=-1)

    _assert_matches_torch(pairwise_logsumexp, [rng.standard_normal((3, 5)), rng.standard_normal((4, 5)),
                                               rng.standard_normal(5)])


def test_masked_mean_matches_torch(rng: np.random.Generator) -> None:
    mask = rng.random((4, 6)) < 0.5
    count = float(mask.sum())

    def masked_mean(lib: ModuleType, x: object, y: object) -> object:
        return lib.where(lib.tensor(mask), lib.tanh(x) * y, 0.0).sum() / count

    _assert_matches_torch(masked_mean, [rng.standard_normal((4, 6)), rng.standard_normal(6)])


# -- backward formulas, fed the same forward output -----------------------------------------------------

SHAPE = (16, 9)


def _torch(array: np.ndarray) -> object:
    return torch.tensor(np.array(array))  # a writable copy: torch refuses read-only numpy memory


def _our_backward(op: Callable[[ts.Tensor], ts.Tensor], x: np.ndarray,
                  grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(forward output, input gradient) of ``op`` at ``x`` for output gradient ``grad``."""
    tensor = ts.Tensor(x, requires_grad=True)
    out = op(tensor)
    out.backward(grad)
    return out.data, tensor.grad.data


def test_sigmoid_backward_is_bit_exact(rng: np.random.Generator) -> None:
    x, grad = rng.standard_normal(SHAPE) * 4, rng.standard_normal(SHAPE)
    y, ours = _our_backward(ts.sigmoid, x, grad)
    np.testing.assert_array_equal(ours, torch.ops.aten.sigmoid_backward(_torch(grad), _torch(y)).numpy())


def test_tanh_backward_within_one_rounding_of_torch(rng: np.random.Generator) -> None:
    """Both compute g * (1 - y*y), but torch's vectorized kernel fuses 1 - y*y into one FMA while
    numpy rounds y*y first: the results differ by at most 2^-52 |g| (near |y| = 1 that is a
    large *relative* difference, from cancellation, not from either being wrong)."""
    x, grad = rng.standard_normal(SHAPE) * 3, rng.standard_normal(SHAPE)
    y, ours = _our_backward(ts.tanh, x, grad)
    theirs = torch.ops.aten.tanh_backward(_torch(grad), _torch(y)).numpy()
    assert np.all(np.abs(ours - theirs) <= 2.0 ** -52 * np.abs(grad))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_and_log_softmax_backward_match_torch_kernels(dim: int, rng: np.random.Generator) -> None:
    """Same formulas; the sum over ``dim`` runs in a different order (torch vectorizes it), and
    log_softmax's exp comes from a different libm, so each element agrees to 1e-15 of the
    magnitude of the terms that were added (not of the possibly cancelled result)."""
    x, grad = rng.standard_normal(SHAPE) * 3, rng.standard_normal(SHAPE)
    y, ours = _our_backward(lambda t: t.softmax(dim), x, grad)
    theirs = torch.ops.aten._softmax_backward_data(_torch(grad), _torch(y), dim, torch.float64).numpy()
    magnitude = y * (np.abs(grad) + np.abs(grad * y).sum(dim, keepdims=True))
    assert np.all(np.abs(ours - theirs) <= 1e-15 * magnitude)

    y, ours = _our_backward(lambda t: t.log_softmax(dim), x, grad)
    theirs = torch.ops.aten._log_softmax_backward_data(_torch(grad), _torch(y), dim, torch.float64).numpy()
    magnitude = np.abs(grad) + np.exp(y) * np.abs(grad).sum(dim, keepdims=True)
    assert np.all(np.abs(ours - theirs) <= 1e-15 * magnitude)


@pytest.mark.parametrize("dim", [0, 1])
def test_logsumexp_backward_matches_torch_formula(dim: int, rng: np.random.Generator) -> None:
    """PyTorch's logsumexp backward is grad * exp(x - result) (no kernel of its own), here run
    with torch's exp on our forward result.  numpy's libm exp and torch's differ in the last
    ulp for some arguments, hence 1e-15 relative rather than equality."""
    x = rng.standard_normal(SHAPE) * 3
    tensor = ts.Tensor(x, requires_grad=True)
    out = tensor.logsumexp(dim, keepdim=True)
    grad = rng.standard_normal(out.shape)
    out.backward(grad)
    theirs = (_torch(grad) * (_torch(x) - _torch(out.data)).exp()).numpy()
    np.testing.assert_allclose(tensor.grad.data, theirs, rtol=1e-15, atol=0)
