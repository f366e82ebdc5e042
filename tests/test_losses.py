"""Losses: gradients against float64 finite differences, values and gradients against PyTorch,
and the errors that stop silent shape bugs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_grads_match

import tinygrad_seq as ts
from tinygrad_seq.nn import functional as F

# input shape, target shape: batched, unbatched [C], and [N, C, d...] with classes in dim 1
CLASS_SHAPES = [((5, 4), (5,)), ((4,), ()), ((3, 4, 2), (3, 2)), ((2, 3, 2, 2), (2, 2, 2))]


def class_data(rng: np.random.Generator, input_shape: tuple, target_shape: tuple, ignored: bool):
    logits = rng.standard_normal(input_shape)
    classes = input_shape[0] if len(input_shape) == 1 else input_shape[1]
    target = rng.integers(0, classes, size=target_shape)
    if ignored and target.size > 1:
        target.reshape(-1)[::3] = -100  # every third target ignored, but never all of them
    return logits, target, classes


# -- gradients against finite differences --------------------------------------------------------


@pytest.mark.parametrize("input_shape,target_shape", CLASS_SHAPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_gradient_matches_finite_differences(rng, input_shape, target_shape, reduction):
    logits, target, classes = class_data(rng, input_shape, target_shape, ignored=True)
    weight = rng.uniform(0.5, 2.0, classes)
    assert_grads_match(lambda x: F.cross_entropy(x, target, weight=weight, reduction=reduction,
                                                 label_smoothing=0.1), [logits])


@pytest.mark.parametrize("input_shape,target_shape", CLASS_SHAPES[:3])
def test_nll_loss_gradient_matches_finite_differences(rng, input_shape, target_shape):
    log_probs, target, classes = class_data(rng, input_shape, target_shape, ignored=True)
    weight = rng.uniform(0.5, 2.0, classes)
    assert_grads_match(lambda x: F.nll_loss(x, target, weight=weight, reduction="none"), [log_probs])
    assert_grads_match(lambda x: F.nll_loss(x, target), [log_probs])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_with_logits_gradient_matches_finite_differences(rng, reduction):
    logits = rng.standard_normal((4, 3)) * 3
    target = rng.uniform(0, 1, (4, 3))
    weight, pos_weight = rng.uniform(0.5, 2, (4, 1)), rng.uniform(0.5, 3, 3)
    assert_grads_match(lambda x, y: F.binary_cross_entropy_with_logits(
        x, y, weight=weight, reduction=reduction, pos_weight=pos_weight), [logits, target])
    assert_grads_match(lambda x: F.binary_cross_entropy_with_logits(x, target, reduction=reduction), [logits])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_mse_gradient_matches_finite_differences(rng, reduction):
    assert_grads_match(lambda x, y: F.mse_loss(x, y, reduction=reduction),
                       [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))])


def test_library_gradcheck_agrees_on_cross_entropy(rng):
    """ts.gradcheck (written alongside) localises bugs; here it must simply pass."""
    gradcheck = getattr(ts, "gradcheck", None)
    if not callable(gradcheck):
        pytest.skip("ts.gradcheck is not available")
    logits, target, _ = class_data(rng, (3, 4, 2), (3, 2), ignored=True)
    x = ts.Tensor(logits, requires_grad=True)
    assert gradcheck(lambda x: F.cross_entropy(x, target, label_smoothing=0.2), [x]) is True


def test_bce_gradient_is_sigmoid_minus_target_everywhere_including_zero_and_extremes():
    """max(x, 0) has a kink at 0, where zero-initialised logits sit: the tie split of maximum and
    sign(0) = 0 of |x| must combine to the true derivative sigmoid(0) - y = 0.5 - y."""
    x = ts.Tensor(np.array([0.0, 0.0, 800.0, -800.0, 3.0]), requires_grad=True)
    y = np.array([0.0, 1.0, 0.0, 1.0, 0.25])
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="sum")
    loss.backward()
    sigmoid = 1 / (1 + np.exp(-np.clip(x.data, -700, 700)))
    np.testing.assert_allclose(x.grad.data, sigmoid - y, rtol=1e-12, atol=1e-300)
    expected = np.log(2) * 2 + 800.0 + 800.0 + (np.log1p(np.exp(-3.0)) + 3.0 - 0.25 * 3.0)
    assert np.isfinite(loss.item()) and loss.item() == pytest.approx(expected, rel=1e-12)


# -- values and gradients against PyTorch --------------------------------------------------------


def torch_value_and_grad(torch, fn, x: np.ndarray, *args, **kwargs):
    tx = torch.tensor(x, requires_grad=True)
    out = fn(tx, *args, **kwargs)
    projection = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(torch.tensor(projection))
    return out.detach().numpy(), tx.grad.numpy(), projection


def ours_value_and_grad(fn, x: np.ndarray, projection: np.ndarray, *args, **kwargs):
    tx = ts.Tensor(x, requires_grad=True)
    out = fn(tx, *args, **kwargs)
    out.backward(gradient=projection)
    return out.data, tx.grad.data


@pytest.mark.parametrize("input_shape,target_shape", CLASS_SHAPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_cross_entropy_matches_torch(rng, input_shape, target_shape, reduction, weighted, label_smoothing):
    torch = pytest.importorskip("torch")
    logits, target, classes = class_data(rng, input_shape, target_shape, ignored=True)
    weight = rng.uniform(0.5, 2.0, classes) if weighted else None
    value, grad, projection = torch_value_and_grad(
        torch, torch.nn.functional.cross_entropy, logits, torch.tensor(target),
        weight=None if weight is None else torch.tensor(weight), reduction=reduction,
        label_smoothing=label_smoothing)
    ours, our_grad = ours_value_and_grad(F.cross_entropy, logits, projection, target, weight=weight,
                                         reduction=reduction, label_smoothing=label_smoothing)
    assert ours.shape == value.shape
    np.testing.assert_allclose(ours, value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(our_grad, grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("input_shape,target_shape", CLASS_SHAPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_nll_loss_matches_torch(rng, input_shape, target_shape, reduction, ignore_index):
    torch = pytest.importorskip("torch")
    log_probs, target, classes = class_data(rng, input_shape, target_shape, ignored=ignore_index == -100)
    weight = rng.uniform(0.5, 2.0, classes)
    value, grad, projection = torch_value_and_grad(
        torch, torch.nn.functional.nll_loss, log_probs, torch.tensor(target), weight=torch.tensor(weight),
        ignore_index=ignore_index, reduction=reduction)
    ours, our_grad = ours_value_and_grad(F.nll_loss, log_probs, projection, target, weight=weight,
                                         ignore_index=ignore_index, reduction=reduction)
    np.testing.assert_allclose(ours, value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(our_grad, grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits_matches_torch(rng, reduction, weighted):
    torch = pytest.importorskip("torch")
    logits = np.concatenate([rng.standard_normal((3, 4)) * 4, [[0.0, 60.0, -60.0, 1e-3]]])
    target = rng.uniform(0, 1, (4, 4))
    weight, pos_weight = (rng.uniform(0.5, 2, (4, 1)), rng.uniform(0.5, 3, 4)) if weighted else (None, None)
    value, grad, projection = torch_value_and_grad(
        torch, torch.nn.functional.binary_cross_entropy_with_logits, logits, torch.tensor(target),
        weight=None if weight is None else torch.tensor(weight), reduction=reduction,
        pos_weight=None if pos_weight is None else torch.tensor(pos_weight))
    ours, our_grad = ours_value_and_grad(F.binary_cross_entropy_with_logits, logits, projection, target,
                                         weight=weight, reduction=reduction, pos_weight=pos_weight)
    np.testing.assert_allclose(ours, value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(our_grad, grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_mse_matches_torch(rng, reduction):
    torch = pytest.importorskip("torch")
    x, y = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    value, grad, projection = torch_value_and_grad(torch, torch.nn.functional.mse_loss, x, torch.tensor(y),
                                                   reduction=reduction)
    ours, our_grad = ours_value_and_grad(F.mse_loss, x, projection, y, reduction=reduction)
    np.testing.assert_allclose(ours, value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(our_grad, grad, rtol=1e-12, atol=1e-12)


def test_all_targets_ignored_gives_nan_mean_like_torch():
    torch = pytest.importorskip("torch")
    logits, target = np.zeros((2, 3)), np.array([-100, -100])
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(target)).item()
    assert np.isnan(expected) and np.isnan(F.cross_entropy(ts.Tensor(logits), target).item())
    assert F.cross_entropy(ts.Tensor(logits), target, reduction="sum").item() == 0.0


# -- behaviour beyond the oracle -----------------------------------------------------------------


def test_ignored_rows_with_masked_minus_inf_logits_do_not_poison_the_loss():
    """Padding rows often carry -inf logits; -inf * 0 would be nan if ignored rows were touched."""
    logits = np.array([[2.0, 1.0, 0.5], [-np.inf, -np.inf, 0.0]])
    target = np.array([0, -100])
    x = ts.Tensor(logits, requires_grad=True)
    losses = F.cross_entropy(x, target, reduction="none")
    expected0 = -(2.0 - np.log(np.exp(2.0) + np.exp(1.0) + np.exp(0.5)))
    np.testing.assert_allclose(losses.data, [expected0, 0.0], rtol=1e-12)
    F.cross_entropy(x, target).backward()
    assert np.isfinite(x.grad.data).all() and not x.grad.data[1].any()


def test_float32_stays_float32_and_modules_match_functions(rng):
    logits = ts.Tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    target = np.array([0, 2, 1, 2])
    loss = ts.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, target)
    assert loss.dtype == np.float32
    assert loss.item() == F.cross_entropy(logits, target, label_smoothing=0.1).item()
    log_probs = logits.log_softmax(dim=1)
    assert ts.nn.NLLLoss(reduction="sum")(log_probs, target).item() == F.nll_loss(
        log_probs, target, reduction="sum").item()
    y = (rng.uniform(size=(4, 3)) > 0.5).astype(np.float32)
    assert ts.nn.BCEWithLogitsLoss()(logits, y).item() == F.binary_cross_entropy_with_logits(logits, y).item()
    assert ts.nn.MSELoss()(logits, y).item() == F.mse_loss(logits, y).item()
    assert "reduction='mean'" in repr(ts.nn.MSELoss())


def test_target_tensor_of_integers_and_hand_computed_value():
    x = ts.Tensor(np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])))
    loss = F.nll_loss(x, ts.Tensor(np.array([1, 2])), weight=np.array([1.0, 2.0, 3.0]))
    # weighted mean: (2 * -log 0.25 + 3 * -log 0.8) / (2 + 3)
    assert loss.item() == pytest.approx((2 * np.log(4) + 3 * -np.log(0.8)) / 5, rel=1e-12)


# -- errors --------------------------------------------------------------------------------------


def test_target_shape_mismatch_names_the_loss_and_both_shapes():
    with pytest.raises(ValueError, match=r"cross_entropy: target shape \(4, 1\).*input shape \(4, 3\)"):
        F.cross_entropy(ts.zeros(4, 3), np.zeros((4, 1), dtype=np.int64))
    with pytest.raises(ValueError, match=r"nll_loss: target shape \(2,\).*\(2, 3, 5\).*expected \(2, 5\)"):
        F.nll_loss(ts.zeros(2, 3, 5), np.zeros(2, dtype=np.int64))


def test_float_targets_are_refused_with_the_dtype():
    with pytest.raises(TypeError, match="cross_entropy: target must hold integer class indices.*float64"):
        F.cross_entropy(ts.zeros(4, 3), np.zeros(4))


@pytest.mark.parametrize("bad", [3, -1, 7])
def test_class_index_out_of_range_names_the_value_and_the_class_count(bad):
    with pytest.raises(IndexError, match=rf"cross_entropy: target class index {bad} is out of range "
                                         r"for 3 classes"):
        F.cross_entropy(ts.zeros(2, 3), np.array([0, bad]))


def test_mse_and_bce_refuse_to_broadcast_mismatched_shapes():
    with pytest.raises(ValueError, match=r"mse_loss: target shape \(4,\) must equal input shape \(4, 1\)"):
        F.mse_loss(ts.zeros(4, 1), np.zeros(4))
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits: target shape \(3, 1\)"):
        F.binary_cross_entropy_with_logits(ts.zeros(3), np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(4,\) does not broadcast.*\(2, 3\)"):
        F.binary_cross_entropy_with_logits(ts.zeros(2, 3), np.zeros((2, 3)), pos_weight=np.ones(4))


def test_bad_reduction_and_weight_shape_are_rejected():
    with pytest.raises(ValueError, match="reduction must be 'none', 'mean' or 'sum', got 'avg'"):
        ts.nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="mse_loss: reduction"):
        F.mse_loss(ts.zeros(2), np.zeros(2), reduction="elementwise_mean")
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\), one per class, got \(2,\)"):
        F.cross_entropy(ts.zeros(2, 3), np.array([0, 1]), weight=np.ones(2))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        F.cross_entropy(ts.zeros(2, 3), np.array([0, 1]), label_smoothing=1.5)
