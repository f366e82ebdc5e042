"""Module and Parameter, with PyTorch's names and behaviour.

Calling a module runs ``forward`` inside a provenance scope named after the module (its
attribute name in its parent, or its class name at the root), so every op it makes records
"which module" it came from, the hook that graph pictures and reports are built on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .. import provenance
from ..autograd import gc_paused
from ..checks import dtype_or_cpu, is_flag
from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and trains: requires grad by default."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True, name: str | None = None) -> None:
        super().__init__(data, requires_grad=requires_grad, name=name)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(KeyError, RuntimeError):
    """load_state_dict found missing keys, unexpected keys or shape mismatches (a RuntimeError
    too, so code ported from PyTorch that catches RuntimeError still catches it)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _check_name(owner: Module, name: Any, kind: str) -> None:
    """A child's name, as PyTorch checks it: a dotted one could not be told from a path in a state dict."""
    if not isinstance(name, str) or not name or "." in name:
        raise KeyError(f"{type(owner).__name__}: a {kind} name must be a non-empty string without '.', "
                       f"got {name!r}")


class Module:
    """Base class: assign Parameters and Modules as attributes and they are registered."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_scope_name", None)
        object.__setattr__(self, "_provenance_cache", (None, None, None))  # (outer, name, record): __call__

    # -- registration -------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning "
                                 "attributes")
        # a replacement keeps its predecessor's place in the order, as in PyTorch (dict assignment)
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            if value.name is None:
                value.name = name
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            value._scope_name = name
            self._modules[name] = value
        else:
            if name in self._parameters and value is not None:  # it would drop out of parameters() unseen
                raise TypeError(f"{type(self).__name__}: cannot assign a {type(value).__name__} as parameter "
                                f"{name!r} (a Parameter or None expected; to change its values, assign "
                                f"{name}.data)")
            if name in self._modules and value is not None:
                raise TypeError(f"{type(self).__name__}: cannot assign a {type(value).__name__} as child "
                                f"module {name!r} (a Module or None expected)")
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register (or, with None, declare absent) a parameter, e.g. a bias switched off."""
        _check_name(self, name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{type(self).__name__}.register_parameter: expected a Parameter or None for "
                            f"{name!r}, got {type(param).__name__}")
        if param is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, param)

    def add_module(self, name: str, module: Module) -> None:
        _check_name(self, name, "module")
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.add_module: expected a Module for {name!r}, got "
                            f"{type(module).__name__}")
        setattr(self, name, module)

    # -- traversal ------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Every module in the tree, depth first, each once, with its dotted path."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            path, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield path, module
            if module._modules:  # most modules (every layer) have none: skip the list
                stack.extend(reversed([(f"{path}.{name}" if path else name, child)
                                       for name, child in module._modules.items()]))

    def modules(self) -> Iterator[Module]:
        return (module for _, module in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        return iter(self._modules.items())

    def children(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs, each parameter once even if shared."""
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for path, module in modules:
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{path}.{name}" if path else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        return (param for _, param in self.named_parameters(recurse=recurse))

    # -- modes and grads ------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        if not is_flag(mode):
            raise TypeError(f"{type(self).__name__}.train: mode must be True or False, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        # not parameters(): its names and sharing checks cost more than this loop (once per training
        # step); a parameter two modules share is reset twice, to the same result
        for _, module in self.named_modules():
            for param in module._parameters.values():
                param._zero_grad(set_to_none)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    # -- dtype ----------------------------------------------------------------------------------
    def to(self, dtype: Any) -> Module:
        """Convert every parameter (and its gradient) to ``dtype``, in place; returns self. ``"cpu"``
        changes nothing (everything runs there)."""
        dtype = dtype_or_cpu(dtype, "Module.to")
        if dtype is None:
            return self
        if dtype.kind != "f":
            raise TypeError(f"Module.to: parameters must stay floating point, got {dtype}")
        for param in self.parameters():
            param._replace_data(param.data.astype(dtype))
            if param.grad is not None:
                param.grad = Tensor.constant(param.grad.data.astype(dtype))
        return self

    def double(self) -> Module:
        return self.to(np.float64)

    def float(self) -> Module:
        return self.to(np.float32)

    # -- state ----------------------------------------------------------------------------------
    def _state_entries(self) -> Iterator[tuple[str, Parameter]]:
        """Every (dotted name, parameter), a shared module or parameter under each of its names, in
        ``named_parameters``' order: PyTorch's state_dict keys, so that a tied-weight model's dict
        loads in either library."""
        stack: list[tuple[str, Module, frozenset]] = [("", self, frozenset())]
        while stack:
            path, module, ancestors = stack.pop()
            for name, param in module._parameters.items():
                yield (f"{path}.{name}" if path else name), param
            inside = ancestors | {id(module)}  # a module holding its own ancestor is not a tree: skip it
            stack.extend(reversed([(f"{path}.{name}" if path else name, child, inside)
                                   for name, child in module._modules.items() if id(child) not in inside]))

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Parameter arrays by dotted name, a shared one under each name (read-only arrays; they are
        never mutated)."""
        return OrderedDict((name, param.data) for name, param in self._state_entries())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> tuple[list, list]:
        """Copy arrays (numpy, Tensors, or anything array-like) into the parameters.

        Returns (missing_keys, unexpected_keys); with ``strict``, any of those, or any value of the
        wrong shape or not made of real numbers, raises ``StateDictError`` listing all of them at
        once. Every value is converted before any parameter changes: a failed load changes nothing.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{type(self).__name__}.load_state_dict: expected a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        params = dict(self._state_entries())
        given = {id(params[k]) for k in state_dict if k in params}
        # a shared parameter loads from any of its names (a dict saved before state_dict listed them all)
        missing = [k for k, param in params.items() if k not in state_dict and id(param) not in given]
        unexpected = [str(k) for k in state_dict if k not in params]
        values, mismatched = {}, []
        for key, param in params.items():
            if key in state_dict:
                try:
                    value = np.asarray(state_dict[key])  # (a Tensor gives its array)
                except ValueError as err:  # ragged nesting
                    mismatched.append(f"{key}: checkpoint holds no array ({err})")
                    continue
                if value.dtype.kind not in "biuf":
                    mismatched.append(f"{key}: checkpoint holds {value.dtype}, not real numbers")
                elif value.shape != param.shape:
                    mismatched.append(f"{key}: checkpoint {value.shape}, model {param.shape}")
                else:
                    values[key] = np.array(value, dtype=param.dtype)
        if mismatched or (strict and (missing or unexpected)):
            problems = []
            if missing:
                problems.append(f"missing keys: {', '.join(missing)}")
            if unexpected:
                problems.append(f"unexpected keys: {', '.join(unexpected)}")
            if mismatched:
                problems.append(f"mismatches: {'; '.join(mismatched)}")
            raise StateDictError(f"{type(self).__name__}.load_state_dict: " + " | ".join(problems))
        for key, value in values.items():
            params[key]._replace_data(value)
        return missing, unexpected

    # -- calling --------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outer = provenance.current
        name = self._scope_name or type(self).__name__
        kept_outer, kept_name, record = self._provenance_cache
        if kept_outer is not outer or kept_name != name:
            # records are immutable, so one made for this outer record serves every call from there
            record = (outer or provenance.ROOT).child(module=name)
            object.__setattr__(self, "_provenance_cache", (outer, name, record))
        provenance.current = record
        try:
            with gc_paused():  # a forward pass builds a graph: see autograd.gc_paused
                return self.forward(*args, **kwargs)
        finally:
            provenance.current = outer

    # -- display --------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        """PyTorch's layout: a one-line extra_repr stays inline; otherwise extra lines, then
        children, each on its own indented line."""
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + repr(child).replace("\n", "\n  ")
                       for name, child in self._modules.items()]
        head = f"{type(self).__name__}("
        if not child_lines and len(extra_lines) <= 1:
            return head + extra + ")"
        return head + "\n  " + "\n  ".join(extra_lines + child_lines) + "\n)"
