"""Moving weights and whole modules between tinygrad_seq and PyTorch.

Parameters here carry PyTorch's names (``weight_ih_l0``, ``bias``, ...), so a state dict maps
key for key; modules map to their PyTorch twin of the same class name, built from the same
hyper-parameters (read as the attributes both libraries store them under).  torch is imported
inside the functions only: the library itself never needs it.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import nn

# class name (the same in both libraries) -> constructor arguments, stored as attributes of that name
_HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "Linear": ("in_features", "out_features", "bias"),
    "Embedding": ("num_embeddings", "embedding_dim", "padding_idx"),
    "Dropout": ("p",),
    "RNN": ("input_size", "hidden_size", "num_layers", "nonlinearity", "bias", "batch_first", "dropout",
            "bidirectional"),
    "LSTM": ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"),
    "GRU": ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"),
    "RNNCell": ("input_size", "hidden_size", "bias", "nonlinearity"),
    "LSTMCell": ("input_size", "hidden_size", "bias"),
    "GRUCell": ("input_size", "hidden_size", "bias"),
}

# PyTorch options without a counterpart here: a torch module converts only if they are at default
_TORCH_ONLY_DEFAULTS: dict[str, dict[str, Any]] = {
    "Embedding": {"max_norm": None, "scale_grad_by_freq": False, "sparse": False},
    "LSTM": {"proj_size": 0},
}


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError("tinygrad_seq.interop needs PyTorch: pip install torch") from None
    return torch


def _hyperparameters(module: Any, names: tuple[str, ...]) -> dict[str, Any]:
    values = {name: getattr(module, name) for name in names}
    if "bias" in values and not isinstance(values["bias"], bool):  # Linear keeps the tensor, or None
        values["bias"] = values["bias"] is not None
    return values


def _supported() -> str:
    return ", ".join(["Sequential"] + [name for name in _HYPERPARAMETERS if hasattr(nn, name)])


def _float_dtype(module: Any) -> Any:
    """The dtype of the module's first parameter (None when it has none, e.g. Dropout)."""
    return next((p.dtype for p in module.parameters()), None)


def _array(value: Any) -> np.ndarray:
    """A torch tensor (or anything array-like) as a numpy array; bfloat16, which numpy lacks, as the
    float32 that holds each of its values exactly."""
    if not hasattr(value, "detach"):
        return np.asarray(value)
    value = value.detach().cpu()
    return (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()


def _module(value: Any, op: str) -> nn.Module:
    if not isinstance(value, nn.Module):
        raise TypeError(f"{op}: expected a tinygrad_seq module, got {type(value).__name__}")
    return value


def to_torch_state_dict(module: nn.Module) -> OrderedDict[str, Any]:
    """The module's parameters as writable torch tensors under the same names and dtypes."""
    torch = _torch()
    module = _module(module, "to_torch_state_dict")
    return OrderedDict((name, torch.from_numpy(np.array(array)))
                       for name, array in module.state_dict().items())


def from_torch_state_dict(module: nn.Module, torch_state_dict: Mapping[str, Any],
                          strict: bool = True) -> tuple[list, list]:
    """Load a PyTorch state dict into ``module`` (cast to its parameters' dtypes); returns
    (missing_keys, unexpected_keys) as ``Module.load_state_dict`` does."""
    module = _module(module, "from_torch_state_dict")
    if not isinstance(torch_state_dict, Mapping):
        raise TypeError(f"from_torch_state_dict: expected a state dict (a mapping of names to tensors), "
                        f"got {type(torch_state_dict).__name__}")
    return module.load_state_dict({name: _array(value) for name, value in torch_state_dict.items()},
                                  strict=strict)


def to_torch(module: nn.Module) -> Any:
    """A PyTorch module with the same class, hyper-parameters, weights, dtype and train/eval mode."""
    torch = _torch()
    name = type(module).__name__
    if hasattr(nn, "Sequential") and type(module) is nn.Sequential:
        twin = torch.nn.Sequential(OrderedDict((child_name, to_torch(child))
                                               for child_name, child in module.named_children()))
        _tie_like(module._state_entries(), twin)
        return twin.train(module.training)
    if name not in _HYPERPARAMETERS or type(module) is not getattr(nn, name, None):
        raise TypeError(f"to_torch: no PyTorch twin for {name}; supported: {_supported()}")
    kwargs = _hyperparameters(module, _HYPERPARAMETERS[name])
    dtype = _float_dtype(module)
    if dtype is not None:
        kwargs["dtype"] = torch.from_numpy(np.empty(0, dtype)).dtype
    twin = getattr(torch.nn, name)(**kwargs)
    try:
        twin.load_state_dict(to_torch_state_dict(module))
    except RuntimeError as err:
        raise ValueError(f"to_torch: the parameters of {name} do not match those of torch.nn.{name}: "
                         f"{err}") from None
    return twin.train(module.training)


def _tie_like(source_entries: Iterable[tuple[str, Any]], twin: Any) -> None:
    """Share in ``twin`` the parameters its source shares: ``source_entries`` are the source's
    (dotted name, parameter) pairs with a shared one under each of its names (tied embedding and
    output weights, a module used twice). The children were converted one by one, each with its own
    copy, which training would let drift apart."""
    first_names: dict[int, str] = {}
    for name, param in source_entries:
        first = first_names.setdefault(id(param), name)
        if first != name:
            path, _, leaf = name.rpartition(".")
            owner = functools.reduce(getattr, path.split("."), twin) if path else twin
            setattr(owner, leaf, functools.reduce(getattr, first.split("."), twin))


def from_torch(torch_module: Any) -> nn.Module:
    """A tinygrad_seq module with the same class, hyper-parameters, weights, dtype and mode."""
    torch = _torch()
    name = type(torch_module).__name__
    if type(torch_module) is torch.nn.Sequential and hasattr(nn, "Sequential"):
        module = nn.Sequential(OrderedDict((child_name, from_torch(child))
                                           for child_name, child in torch_module.named_children()))
        _tie_like(torch_module.named_parameters(remove_duplicate=False), module)
        return module.train(torch_module.training)
    ours = getattr(nn, name, None)
    if name not in _HYPERPARAMETERS or ours is None or type(torch_module) is not getattr(torch.nn, name):
        raise TypeError(f"from_torch: no tinygrad_seq twin for {type(torch_module).__name__}; "
                        f"supported: {_supported()}")
    for option, default in _TORCH_ONLY_DEFAULTS.get(name, {}).items():
        if getattr(torch_module, option) != default:
            raise ValueError(f"from_torch: torch.nn.{name} with {option}={getattr(torch_module, option)!r} "
                             f"has no equivalent here (only {option}={default!r})")
    module = ours(**_hyperparameters(torch_module, _HYPERPARAMETERS[name]))
    dtype = _float_dtype(torch_module)
    if dtype is not None:
        module.to(_array(torch.empty(0, dtype=dtype)).dtype)  # (bfloat16 as float32)
    from_torch_state_dict(module, torch_module.state_dict())
    return module.train(torch_module.training)


__all__ = ["from_torch", "from_torch_state_dict", "to_torch", "to_torch_state_dict"]
