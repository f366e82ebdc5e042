"""Optimizers: the same parameters and gradients as PyTorch for several steps give the same values
(float64, 1e-12), state dicts round-trip, and parameter arrays are replaced, never mutated."""

from __future__ import annotations

import re

import numpy as np
import pytest

import tinygrad_seq as ts
from tinygrad_seq import optim

SHAPES = [(3, 4), (4,)]
STEPS = 5

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.5, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=0.1, betas=(0.3, 0.7), eps=1e-3)),  # 1 - beta1 >= 0.5: ATen lerp's other branch
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.5, amsgrad=True, betas=(0.5, 0.9))),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-6)),
]


def config_id(config: tuple) -> str:
    name, kwargs = config
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def make_params(rng: np.random.Generator) -> list[ts.nn.Parameter]:
    return [ts.nn.Parameter(rng.standard_normal(shape)) for shape in SHAPES]


def gradient_sequence(rng: np.random.Generator, steps: int = STEPS) -> list[list[np.ndarray | None]]:
    """Random gradients per step; the second parameter has none at step 2 (it must be skipped)."""
    grads = [[rng.standard_normal(shape) for shape in SHAPES] for _ in range(steps)]
    if steps > 2:
        grads[2][1] = None
    return grads


def run_ours(optimizer: optim.Optimizer, params: list, grads: list) -> None:
    for step_grads in grads:
        for param, grad in zip(params, step_grads, strict=True):
            param.grad = None if grad is None else ts.Tensor(grad)
        optimizer.step()


def run_torch(torch, name: str, kwargs: dict, initial: list[np.ndarray], grads: list) -> list[np.ndarray]:
    params = [torch.tensor(a, requires_grad=True) for a in initial]
    optimizer = getattr(torch.optim, name)(params, foreach=False, **kwargs)
    for step_grads in grads:
        for param, grad in zip(params, step_grads, strict=True):
            param.grad = None if grad is None else torch.tensor(grad)
        optimizer.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_matches_torch_over_several_steps(rng, config):
    torch = pytest.importorskip("torch")
    name, kwargs = config
    params = make_params(rng)
    initial = [p.data.copy() for p in params]
    grads = gradient_sequence(rng)
    run_ours(getattr(optim, name)(params, **kwargs), params, grads)
    expected = run_torch(torch, name, kwargs, initial, grads)
    for param, want in zip(params, expected, strict=True):
        assert param.dtype == np.float64
        np.testing.assert_allclose(param.data, want, rtol=1e-12, atol=1e-12)


def test_param_groups_with_their_own_hyperparameters_match_torch(rng):
    torch = pytest.importorskip("torch")
    params = make_params(rng)
    initial = [p.data.copy() for p in params]
    grads = gradient_sequence(rng)
    ours = optim.Adam([{"params": [params[0]]}, {"params": params[1], "lr": 0.1, "amsgrad": True}], lr=0.01)
    run_ours(ours, params, grads)
    torch_params = [torch.tensor(a, requires_grad=True) for a in initial]
    theirs = torch.optim.Adam([{"params": [torch_params[0]]},
                               {"params": [torch_params[1]], "lr": 0.1, "amsgrad": True}],
                              lr=0.01, foreach=False)
    for step_grads in grads:
        for param, grad in zip(torch_params, step_grads, strict=True):
            param.grad = None if grad is None else torch.tensor(grad)
        theirs.step()
    for param, want in zip(params, torch_params, strict=True):
        np.testing.assert_allclose(param.data, want.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert [g["lr"] for g in ours.param_groups] == [0.01, 0.1]


def test_sgd_by_hand():
    param = ts.nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([param], lr=0.5, momentum=0.9)
    for grad, expected in [([1.0, 1.0], [0.5, -2.5]), ([1.0, 0.0], [-0.45, -2.95])]:
        param.grad = ts.Tensor(np.array(grad))
        opt.step()  # buffer: [1, 1], then 0.9 * [1, 1] + [1, 0] = [1.9, 0.9]
        np.testing.assert_allclose(param.data, expected, rtol=1e-15)


def test_adam_first_moment_is_exactly_the_gradient_when_beta1_is_zero(rng):
    """ATen's lerp switches formula at weight 0.5 so that weight 1 gives ``end`` exactly;
    the naive start + 1 * (end - start) can be an ulp off."""
    param = ts.nn.Parameter(rng.standard_normal(1000))
    opt = optim.Adam([param], betas=(0.0, 0.999))
    for _ in range(2):
        grad = rng.standard_normal(1000) * 1e3
        param.grad = ts.Tensor(grad)
        opt.step()
        np.testing.assert_array_equal(opt.state[param]["exp_avg"], grad)


# -- never in place ------------------------------------------------------------------------------


def test_step_replaces_parameter_arrays_and_leaves_old_ones_untouched(rng):
    params = make_params(rng)
    opt = optim.Adam(params, lr=0.1)
    old = [p.data for p in params]
    snapshots = [a.copy() for a in old]
    for p in params:
        p.grad = ts.Tensor(np.ones(p.shape))
    opt.step()
    for p, before, snapshot in zip(params, old, snapshots, strict=True):
        assert p.data is not before and not p.data.flags.writeable
        np.testing.assert_array_equal(before, snapshot)
        assert not np.array_equal(p.data, snapshot)


def test_float32_parameters_stay_float32(rng):
    param = ts.nn.Parameter(rng.standard_normal(3).astype(np.float32))
    for opt in (optim.SGD([param], lr=0.1, momentum=0.9), optim.Adam([param]), optim.Adagrad([param])):
        param.grad = ts.Tensor(np.ones(3, np.float32))
        opt.step()
        assert param.dtype == np.float32


def test_zero_grad_sets_to_none_or_zeros(rng):
    params = make_params(rng)
    opt = optim.SGD(params, lr=0.1)
    params[0].grad = ts.Tensor(np.ones(SHAPES[0]))
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(params[0].grad.data, np.zeros(SHAPES[0]))
    assert params[1].grad is None
    opt.zero_grad()
    assert params[0].grad is None


def test_step_with_closure_returns_the_loss_and_training_converges():
    """Fit y = 2x - 1 with a one-weight model built from Module + Parameter."""

    class Affine(ts.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w, self.b = ts.nn.Parameter(np.zeros(1)), ts.nn.Parameter(np.zeros(1))

        def forward(self, x: ts.Tensor) -> ts.Tensor:
            return x * self.w + self.b

    model = Affine()
    x = ts.Tensor(np.linspace(-1, 1, 16))
    y = 2 * x.data - 1
    opt = optim.Adam(model.parameters(), lr=0.1)

    def closure() -> ts.Tensor:
        opt.zero_grad()
        loss = ts.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    first = opt.step(closure).item()
    for _ in range(300):
        last = opt.step(closure).item()
    assert first == pytest.approx(np.mean((y) ** 2)) and last < 1e-6


# -- state dicts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[5], CONFIGS[10]], ids=config_id)
def test_state_dict_round_trip_resumes_identically(rng, config):
    name, kwargs = config
    grads = gradient_sequence(rng, 6)
    params_a = make_params(rng)
    params_b = [ts.nn.Parameter(p.data) for p in params_a]
    straight = getattr(optim, name)(params_a, **kwargs)
    run_ours(straight, params_a, grads)

    first = getattr(optim, name)(params_b, **kwargs)
    run_ours(first, params_b, grads[:3])
    saved = first.state_dict()
    resumed = getattr(optim, name)(params_b, **{**kwargs, "lr": 123.0})  # lr comes back from the dict
    resumed.load_state_dict(saved)
    run_ours(resumed, params_b, grads[3:])
    for a, b in zip(params_a, params_b, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_has_torch_layout_and_is_a_snapshot(rng):
    torch = pytest.importorskip("torch")
    params = make_params(rng)
    opt = optim.Adam(params, lr=0.01, amsgrad=True)
    run_ours(opt, params, gradient_sequence(rng, 2))
    sd = opt.state_dict()
    torch_opt = torch.optim.Adam([torch.zeros(s, requires_grad=True) for s in SHAPES], lr=0.01, amsgrad=True)
    for p in torch_opt.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    torch_opt.step()
    torch_sd = torch_opt.state_dict()
    assert set(sd) == set(torch_sd) == {"state", "param_groups"}
    assert set(sd["state"]) == set(torch_sd["state"]) == {0, 1}
    assert set(sd["state"][0]) == set(torch_sd["state"][0])
    assert sd["param_groups"][0]["params"] == torch_sd["param_groups"][0]["params"] == [0, 1]
    assert sd["state"][0]["step"] == 2
    before = sd["state"][0]["exp_avg"].copy()
    run_ours(opt, params, gradient_sequence(rng, 1))
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], before)


def test_load_state_dict_rejects_mismatches(rng):
    params = make_params(rng)
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    run_ours(opt, params, gradient_sequence(rng, 1))
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="2 parameters in the state dict, 1 in this optimizer"):
        optim.SGD(params[:1], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="1 parameter groups, this optimizer has 2"):
        optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1).load_state_dict(sd)
    swapped = [ts.nn.Parameter(np.zeros(SHAPES[1])), ts.nn.Parameter(np.zeros(SHAPES[0]))]
    with pytest.raises(ValueError, match=r"'momentum_buffer' of parameter 0 has shape \(3, 4\).*\(4,\)"):
        optim.SGD(swapped, lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})
    corrupted = {**sd, "param_groups": [{**sd["param_groups"][0], "lr": -0.5}]}
    with pytest.raises(ValueError, match="invalid lr -0.5"):
        opt.load_state_dict(corrupted)
    assert opt.param_groups[0]["lr"] == 0.1  # a refused load changes nothing


# -- construction errors -------------------------------------------------------------------------


def test_constructor_errors_are_clear(rng):
    params = make_params(rng)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(TypeError, match="got a single Tensor"):
        optim.SGD(params[0], lr=0.1)
    with pytest.raises(TypeError, match=r"got a Module \(pass its .parameters\(\)\)"):
        optim.SGD(ts.nn.Module(), lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors, got ndarray"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf Tensor"):
        optim.SGD([params[0] * 2], lr=0.1)
    with pytest.raises(ValueError, match="invalid lr -1"):
        optim.SGD(params, lr=-1)
    with pytest.raises(ValueError, match="invalid betas"):
        optim.Adam(params, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        optim.SGD(params, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="appears more than once"):
        optim.SGD([{"params": params}, {"params": [params[0]]}], lr=0.1)
    with pytest.raises(ValueError, match="invalid initial_accumulator_value"):
        optim.Adagrad(params, initial_accumulator_value=-1)
    description = repr(optim.AdamW(params))
    assert "Parameter Group 0" in description and "weight_decay: 0.01" in description


def test_hyper_parameters_of_the_wrong_kind_are_named() -> None:
    """lr=None failed comparing None >= 0 without the optimizer's name; nesterov='no' is truthy and
    switched Nesterov on; betas=0.9 failed in tuple()."""
    params = [ts.nn.Parameter(np.ones(2, np.float32))]
    cases = [
        (lambda: ts.optim.SGD(params, lr=None), "SGD: lr must be a number, got None"),
        (lambda: ts.optim.SGD(params, lr=0.1, momentum=0.9, nesterov="no"),
         "SGD: nesterov must be True or False, got 'no'"),
        (lambda: ts.optim.Adam(params, betas=0.9), "Adam: betas must be a pair of numbers"),
        (lambda: ts.optim.Adam(params, amsgrad="x"), "Adam: amsgrad must be True or False"),
        (lambda: ts.optim.Adagrad(params, lr_decay="a"), "Adagrad: lr_decay must be a number"),
    ]
    for make, fragment in cases:
        with pytest.raises(TypeError, match=re.escape(fragment)):
            make()
    assert ts.optim.Adam(params, betas=[0.8, 0.9]).param_groups[0]["betas"] == (0.8, 0.9)


def test_the_state_of_another_optimizer_is_refused_at_load() -> None:
    """It loaded, and the next step raised KeyError: 'step'."""
    param = ts.nn.Parameter(np.ones(2, np.float32))
    sgd = ts.optim.SGD([param], lr=0.1, momentum=0.9)
    param.grad = ts.ones(2)
    sgd.step()
    adam = ts.optim.Adam([param])
    with pytest.raises(ValueError, match=re.escape("Adam.load_state_dict: the state of parameter 0 holds "
                                                   "['momentum_buffer'], where Adam's holds ['exp_avg'")):
        adam.load_state_dict(sgd.state_dict())
    adam.step()
    amsgrad = ts.optim.Adam([param], amsgrad=True)
    with pytest.raises(ValueError, match="max_exp_avg_sq"):  # settings that need more state than saved
        amsgrad.load_state_dict({**adam.state_dict(), "param_groups": [
            {**adam.state_dict()["param_groups"][0], "amsgrad": True}]})
    ts.optim.Adam([param]).load_state_dict(adam.state_dict())  # its own kind loads
