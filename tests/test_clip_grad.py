"""Gradient clipping against torch.nn.utils (same total norm, same clipped gradients, including the
non-finite cases) and the gradient-norm report that names the parameter that exploded."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinygrad_seq as ts
from tinygrad_seq.nn.utils import clip_grad_norm_, clip_grad_value_, grad_norm_report

SHAPES = [(3, 4), (4,), (2, 2, 2)]


def params_with_grads(grads: list[np.ndarray | None]) -> list[ts.nn.Parameter]:
    params = []
    for grad in grads:
        shape = np.shape(grad) if grad is not None else (2,)
        param = ts.nn.Parameter(np.zeros(shape, grad.dtype if grad is not None else np.float64))
        param.grad = None if grad is None else ts.Tensor(grad)
        params.append(param)
    return params


def torch_params_with_grads(torch, grads: list[np.ndarray | None]) -> list:
    params = []
    for grad in grads:
        if grad is None:
            param = torch.zeros(2, requires_grad=True)
        else:
            param = torch.zeros(grad.shape, dtype=torch.from_numpy(grad).dtype, requires_grad=True)
            param.grad = torch.tensor(grad)
        params.append(param)
    return params


def random_grads(rng: np.random.Generator, dtype=np.float64) -> list[np.ndarray]:
    return [(rng.standard_normal(shape) * 3).astype(dtype) for shape in SHAPES]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clips / leaves alone
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_norm_matches_torch(rng, norm_type, max_norm, dtype):
    torch = pytest.importorskip("torch")
    grads = random_grads(rng, dtype) + [None]
    params = params_with_grads(grads)
    torch_params = torch_params_with_grads(torch, grads)
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    torch_total = torch.nn.utils.clip_grad_norm_(torch_params, max_norm, norm_type=norm_type, foreach=False)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    assert isinstance(total, ts.Tensor) and total.shape == () and total.dtype == dtype
    assert float(total) == pytest.approx(torch_total.item(), rel=rtol)
    for param, torch_param in zip(params[:-1], torch_params[:-1], strict=True):
        assert param.grad.dtype == dtype
        np.testing.assert_allclose(param.grad.data, torch_param.grad.numpy(), rtol=rtol, atol=0)
    assert params[-1].grad is None


def test_clip_grad_norm_by_hand():
    params = params_with_grads([np.array([3.0, 0.0]), np.array([4.0])])  # total L2 norm 5
    total = clip_grad_norm_(params, max_norm=1.0)
    assert float(total) == 5.0
    coef = 1.0 / (5.0 + 1e-6)
    np.testing.assert_array_equal(params[0].grad.data, np.array([3.0, 0.0]) * coef)
    assert float(clip_grad_norm_(params, 1.0, norm_type=math.inf)) == pytest.approx(4 * coef, rel=1e-15)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_total_matches_torch_or_raises_naming_the_norm(rng, bad):
    torch = pytest.importorskip("torch")
    grads = random_grads(rng)
    grads[1][2] = bad
    params, torch_params = params_with_grads(grads), torch_params_with_grads(torch, grads)
    with pytest.raises(RuntimeError, match=f"total norm of order 2.0 of the gradients is {bad}"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(params[1].grad.data, grads[1])  # raising left the gradients alone
    total = clip_grad_norm_(params, 1.0)
    torch_total = torch.nn.utils.clip_grad_norm_(torch_params, 1.0, foreach=False)
    np.testing.assert_equal(float(total), torch_total.item())
    for param, torch_param in zip(params, torch_params, strict=True):
        np.testing.assert_array_equal(param.grad.data, torch_param.grad.numpy())  # nan where torch has nan


def test_single_tensor_and_no_gradients():
    param = ts.nn.Parameter(np.zeros(3))
    assert float(clip_grad_norm_(param, 1.0)) == 0.0  # no gradient anywhere: norm 0, like torch
    param.grad = ts.Tensor(np.array([0.0, 6.0, 8.0]))
    assert float(clip_grad_norm_(param, 20.0)) == 10.0
    np.testing.assert_array_equal(param.grad.data, [0.0, 6.0, 8.0])
    with pytest.raises(ValueError, match="norm_type must be positive"):
        clip_grad_norm_(param, 1.0, norm_type=0)


def test_gradients_are_replaced_never_mutated():
    param = ts.nn.Parameter(np.zeros(2))
    param.grad = ts.Tensor(np.array([30.0, 40.0]))
    old = param.grad
    clip_grad_norm_([param], 5.0)
    np.testing.assert_array_equal(old.data, [30.0, 40.0])
    assert param.grad is not old and not param.grad.data.flags.writeable
    clip_grad_value_([param], 1.0)
    assert param.grad.data.max() <= 1.0


def test_clip_grad_value_matches_torch(rng):
    torch = pytest.importorskip("torch")
    grads = random_grads(rng)
    grads[0][0, 0] = np.nan
    params, torch_params = params_with_grads(grads), torch_params_with_grads(torch, grads)
    assert clip_grad_value_(params, 1.5) is None
    torch.nn.utils.clip_grad_value_(torch_params, 1.5, foreach=False)
    for param, torch_param in zip(params, torch_params, strict=True):
        np.testing.assert_array_equal(param.grad.data, torch_param.grad.numpy())
    with pytest.raises(ValueError, match="clip_value must be >= 0"):
        clip_grad_value_(params, -1)


# -- the report ----------------------------------------------------------------------------------


class TwoLayer(ts.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = ts.nn.Module()
        self.inner.weight = ts.nn.Parameter(np.zeros((2, 3)))
        self.head = ts.nn.Parameter(np.zeros(3))
        self.unused = ts.nn.Parameter(np.zeros(1))


def test_report_names_the_largest_then_the_non_finite_parameter():
    model = TwoLayer()
    model.inner.weight.grad = ts.Tensor(np.full((2, 3), 0.5))  # L2 norm sqrt(6) / 2 ~ 1.22
    model.head.grad = ts.Tensor(np.array([3.0, 4.0, 0.0]))     # norm 5
    report = grad_norm_report(model)
    assert report.worst == "head" and [e.name for e in report] == ["head", "inner.weight"]
    assert report.norms["head"] == 5.0 and report.without_grad == ["unused"]
    total = clip_grad_norm_(model.parameters(), 1e9)
    assert report.total == pytest.approx(float(total), rel=1e-15)

    model.inner.weight.grad = ts.Tensor(np.array([[1.0, np.inf, np.nan], [0.0, 0.0, 0.0]]))
    report = grad_norm_report(model.named_parameters(), norm_type=math.inf)
    assert report.worst == "inner.weight" and report.entries[0].nonfinite == 2
    table = str(report)
    assert table.splitlines()[0].startswith("gradient norms (order inf) of 2 parameters")
    assert "worst: inner.weight" in table and "no gradient: unused" in table
    row = next(line for line in table.splitlines() if line.startswith("inner.weight"))
    assert "(2, 3)" in row and row.rstrip().endswith("2")
    assert "worst='inner.weight'" in repr(report)


def test_report_of_a_model_without_gradients_is_empty():
    report = grad_norm_report(TwoLayer())
    assert report.worst is None and len(report) == 0 and report.total == 0.0
    assert "no gradient: head, unused, inner.weight" in str(report)


def test_clipping_names_what_it_was_given_instead_of_parameters() -> None:
    model = ts.nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"clip_grad_norm_: expected parameters, got a Linear module; pass "
                                        r"its \.parameters\(\)"):
        clip_grad_norm_(model, 1.0)
    with pytest.raises(TypeError, match="clip_grad_norm_: expected Tensors, got a NoneType at position 1"):
        clip_grad_norm_([model.weight, None], 1.0)
    with pytest.raises(TypeError, match="clip_grad_norm_: max_norm must be a number, got None"):
        clip_grad_norm_(model.parameters(), None)
    with pytest.raises(TypeError, match="clip_grad_value_: clip_value must be a number, got 'a'"):
        clip_grad_value_(model.parameters(), "a")
    model.weight.grad = ts.ones(2, 2)
    assert clip_grad_norm_(model.parameters(), 1.0, norm_type="inf").item() == 1.0  # PyTorch's spelling


def test_clipping_parameters_of_different_dtypes_keeps_each_gradient_s_dtype() -> None:
    """The float64 scale made a float32 gradient float64 (numpy 2), which .grad now refuses."""
    params = [ts.tensor(np.full(3, 10.0, np.float32), requires_grad=True),
              ts.tensor(np.full(3, 10.0), requires_grad=True)]
    for p in params:
        (p * p).sum().backward()
    total = clip_grad_norm_(params, 1.0)
    assert [p.grad.dtype for p in params] == [np.float32, np.float64]
    np.testing.assert_allclose(total.item(), np.sqrt(6 * 20.0 ** 2), rtol=1e-6)
    np.testing.assert_allclose(params[1].grad.numpy(), 20.0 / (total.item() + 1e-6), rtol=1e-6)
