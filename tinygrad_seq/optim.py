"""Optimizers with PyTorch's update formulas, operation for operation.

Each update follows the order of operations of PyTorch's single-tensor (``foreach=False``) code
path, so float64 runs agree with it to rounding.  Parameter arrays are read-only: an update
computes a new array and swaps it in with ``_replace_data``; the optimizer's own state arrays
(momentum buffers, moment estimates) are private and updated in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from .autograd import enable_grad
from .checks import is_flag, is_number
from .tensor import Tensor

ParamsArg = Iterable[Tensor] | Iterable[Mapping[str, Any]]


class Optimizer:
    """Base class: holds ``param_groups`` (dicts of params + hyper-parameters) and per-parameter
    ``state``; subclasses implement ``_update`` for one parameter."""

    def __init__(self, params: ParamsArg, defaults: dict[str, Any]) -> None:
        expected = f"{type(self).__name__}: params must be an iterable of Tensors or of dicts"
        if isinstance(params, Tensor):
            raise TypeError(f"{expected}, got a single Tensor (wrap it in a list)")
        if hasattr(params, "named_parameters"):
            raise TypeError(f"{expected}, got a {type(params).__name__} (pass its .parameters())")
        self.defaults = defaults
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], Mapping):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group of parameters with its own hyper-parameters (the rest from ``defaults``)."""
        name = type(self).__name__
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError(f"{name}: a parameter group must be a dict with a 'params' entry, "
                            f"got {type(param_group).__name__}")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for param in params:
            if not isinstance(param, Tensor):
                raise TypeError(f"{name} can only optimize Tensors, got {type(param).__name__}")
            if not param.is_leaf:
                raise ValueError(f"{name} can't optimize a non-leaf Tensor (made by '{param.grad_fn.op}')")
            if param.dtype.kind != "f":
                raise TypeError(f"{name} can only optimize floating-point tensors, got {param.dtype}")
        known = {id(p) for group in self.param_groups for p in group["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in known for p in params):
            raise ValueError(f"{name}: a parameter appears more than once in the parameter groups")
        group = {**self.defaults, **param_group, "params": params}
        self._check_hyperparameters(group)
        self.param_groups.append(group)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        """Raise TypeError on a hyper-parameter of the wrong kind (a flag that is not a bool, a number
        that is not one: the string 'no' would switch nesterov on) and ValueError on an invalid one
        (subclasses extend this)."""
        name = type(self).__name__
        for key, value in group.items():
            if key in ("nesterov", "amsgrad"):
                if not is_flag(value):
                    raise TypeError(f"{name}: {key} must be True or False, got {value!r}")
            elif key == "betas":
                if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(map(is_number, value))):
                    raise TypeError(f"{name}: betas must be a pair of numbers, got {value!r}")
                group[key] = tuple(value)
            elif key in self.defaults and not is_number(value):
                raise TypeError(f"{name}: {key} must be a number, got {value!r}")
        for key in ("lr", "weight_decay", "eps"):
            if key in group and not group[key] >= 0.0:
                raise ValueError(f"{name}: invalid {key} {group[key]} (must be >= 0)")

    def _state_keys(self, group: dict[str, Any]) -> set[str]:
        """The entries of a parameter's state once it has been stepped (with ``group``'s settings)."""
        raise NotImplementedError

    # -- stepping ---------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                param._zero_grad(set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; ``closure`` re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state.setdefault(param, {})
                param._replace_data(self._update(param.data, param.grad.data, state, group))
        return loss

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> np.ndarray:
        """Return the parameter's new array (a fresh one: ``param`` is read-only)."""
        raise NotImplementedError

    # -- state dicts ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """PyTorch's layout: ``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``
        with parameters numbered in group order.  State arrays are copies: a snapshot."""
        index_of: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            indices = []
            for param in group["params"]:
                index_of.setdefault(id(param), len(index_of))
                indices.append(index_of[id(param)])
            groups.append({**group, "params": indices})
        state = {index_of[id(param)]: {k: v.copy() if isinstance(v, np.ndarray) else v
                                       for k, v in param_state.items()}
                 for param, param_state in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore hyper-parameters and state saved by ``state_dict`` (here or from a checkpoint),
        matching parameters by position; arrays are checked against the parameters' shapes."""
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError(f"{name}: expected a dict with 'state' and 'param_groups' entries")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}: the state dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        params_by_index: dict[int, Tensor] = {}
        for number, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}: parameter group {number} has {len(saved['params'])} parameters in "
                                 f"the state dict, {len(group['params'])} in this optimizer")
            params_by_index.update(zip((int(i) for i in saved["params"]), group["params"], strict=True))
        groups = [{**self.defaults, **saved, "params": group["params"]}
                  for saved, group in zip(saved_groups, self.param_groups, strict=True)]
        for group in groups:
            self._check_hyperparameters(group)
        group_of = {id(param): group for group in groups for param in group["params"]}
        new_state: dict[Tensor, dict[str, Any]] = {}
        for index, saved_state in state_dict["state"].items():
            param = params_by_index.get(int(index))
            if param is None:
                raise ValueError(f"{name}: state for parameter {index}, which no parameter group lists")
            expected = self._state_keys(group_of[id(param)])
            if saved_state and set(saved_state) != expected:  # (an empty state: never stepped)
                raise ValueError(f"{name}: the state of parameter {index} holds {sorted(saved_state)}, where "
                                 f"{type(self).__name__}'s holds {sorted(expected)} with these settings (a "
                                 "state dict of another optimizer?)")
            new_state[param] = {key: self._restored(name, index, key, value, param)
                                for key, value in saved_state.items()}
        self.state, self.param_groups = new_state, groups

    @staticmethod
    def _restored(name: str, index: Any, key: str, value: Any, param: Tensor) -> Any:
        """A private, writable copy of a saved state array, in the parameter's dtype and shape."""
        if isinstance(value, Tensor):
            value = value.data
        if not isinstance(value, np.ndarray) or value.ndim == 0:  # counters such as 'step'
            return value.item() if isinstance(value, (np.ndarray, np.generic)) else value
        array = np.array(value, dtype=param.dtype)
        if array.shape != param.shape:
            raise ValueError(f"{name}: state '{key}' of parameter {index} has shape {array.shape}, "
                             f"the parameter has shape {param.shape}")
        return array

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for number, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {number}")
            lines.extend(f"    {key}: {value}" for key, value in sorted(group.items()) if key != "params")
        return "\n".join(lines) + "\n)"


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """start += weight * (end - start), in place, with ATen's two-sided formula (exact at weight 1)."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    def __init__(self, params: ParamsArg, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        super()._check_hyperparameters(group)
        if not group["momentum"] >= 0.0:
            raise ValueError(f"SGD: invalid momentum {group['momentum']} (must be >= 0)")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum > 0 and zero dampening")

    def _state_keys(self, group: dict[str, Any]) -> set[str]:
        return {"momentum_buffer"} if group["momentum"] != 0 else set()

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> np.ndarray:
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param
        momentum = group["momentum"]
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = np.array(grad)
            else:
                buffer *= momentum
                buffer += (1 - group["dampening"]) * grad
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        return param - group["lr"] * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, optional AMSGrad, and L2 weight decay added to
    the gradient; ``AdamW`` decays the weights directly instead."""

    decoupled_weight_decay = False

    def __init__(self, params: ParamsArg, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        super()._check_hyperparameters(group)
        betas = group["betas"]
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"{type(self).__name__}: invalid betas {betas} (two values in [0, 1))")

    def _state_keys(self, group: dict[str, Any]) -> set[str]:
        return {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group["amsgrad"] else set())

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> np.ndarray:
        lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(param), exp_avg_sq=np.zeros_like(param))
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(param)
        state["step"] += 1
        step = state["step"]
        if weight_decay != 0:
            if self.decoupled_weight_decay:
                param = param * (1 - lr * weight_decay)
            else:
                grad = grad + weight_decay * param
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        _lerp_(exp_avg, grad, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        if group["amsgrad"]:
            second_moment = np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
        else:
            second_moment = exp_avg_sq
        denom = np.sqrt(second_moment) / bias_correction2_sqrt + eps
        return param + -step_size * exp_avg / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay."""

    decoupled_weight_decay = True

    def __init__(self, params: ParamsArg, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class Adagrad(Optimizer):
    """Adagrad: per-coordinate step lr / sqrt(sum of squared gradients) (min-char-rnn's optimizer)."""

    def __init__(self, params: ParamsArg, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        super()._check_hyperparameters(group)
        for key in ("lr_decay", "initial_accumulator_value"):
            if not group[key] >= 0.0:
                raise ValueError(f"Adagrad: invalid {key} {group[key]} (must be >= 0)")

    def _state_keys(self, group: dict[str, Any]) -> set[str]:
        return {"step", "sum"}

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> np.ndarray:
        if not state:
            state.update(step=0, sum=np.full_like(param, group["initial_accumulator_value"]))
        state["step"] += 1
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        state["sum"] += grad * grad
        return param + -clr * grad / (np.sqrt(state["sum"]) + group["eps"])


__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer"]
