"""Tensor: a read-only numpy array plus, when it requires grad, the graph node that made it.

Arrays inside tensors are never mutated (numpy's writeable flag is off), so an array that the
graph saved for backward cannot change under it; "in-place" updates such as an optimizer step
rebind ``.data`` to a new array instead.  Ops and operators (``+``, ``@``, ``.tanh()``, ...) are
defined next to their gradients in ``tinygrad_seq.ops`` and attached to this class there.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import anomaly
from .autograd import Node, run_backward, state


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(False)  # write=False, positionally: parsing the keyword costs more than the call
    return array


def to_array(data: Any, dtype: Any = None) -> np.ndarray:
    """Copy ``data`` into a fresh array; Python floats become float32, as in PyTorch."""
    if isinstance(data, Tensor):
        data = data._data
    try:
        array = np.array(data, dtype=dtype)
    except ValueError as err:  # ragged nesting, or text that is not a number
        raise ValueError(f"cannot make a Tensor from {type(data).__name__}: {err}") from None
    if dtype is not None:
        return array
    if array.dtype == np.float64 and not isinstance(data, (np.ndarray, np.generic)):
        array = array.astype(np.float32)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"cannot make a Tensor from {type(data).__name__} of dtype {array.dtype}: "
                        "expected booleans, integers or floats")
    return array


class Tensor:
    """An n-dimensional array that records the ops applied to it, for ``backward()``."""

    __slots__ = ("_data", "_node", "_grad", "_name", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operator

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None,
                 name: str | None = None) -> None:
        self._data = _readonly(to_array(data, dtype))
        self._node: Node | None = None
        self._grad: Tensor | None = None
        self._name = name
        if requires_grad:
            self.requires_grad_(True)

    # -- the one way ops make results ---------------------------------------------------------
    @classmethod
    def from_op(cls, out: Any, op: str, inputs: Sequence[Any],
                backward: Callable[[np.ndarray], Sequence[np.ndarray | None]]) -> Tensor:
        """Wrap an op's output ``out``; record a node if grad is on and an input requires grad.

        ``backward(g)`` must return one gradient per entry of ``inputs`` (None where unneeded);
        non-Tensor inputs (Python scalars, arrays) are constants and get no gradient.
        """
        if type(out) is not np.ndarray:
            out = np.asarray(out)
        node = None
        if state.grad_enabled:  # one to three inputs spelled out: they are most ops, at half the cost
            if len(inputs) == 1:
                parent = getattr(inputs[0], "_node", None)
                parents, recorded = (parent,), parent is not None
            elif len(inputs) == 2:
                first, second = inputs
                parents = (getattr(first, "_node", None), getattr(second, "_node", None))
                recorded = parents[0] is not None or parents[1] is not None
            elif len(inputs) == 3:  # addmm, addcmul, where
                first, second, third = inputs
                parents = (getattr(first, "_node", None), getattr(second, "_node", None),
                           getattr(third, "_node", None))
                recorded = parents[0] is not None or parents[1] is not None or parents[2] is not None
            else:
                parents = tuple([getattr(x, "_node", None) for x in inputs])
                recorded = any(parents)
            if recorded:
                node = Node(backward, parents, op, out.shape, out.dtype)
        if state.tap is not None:
            out = np.asarray(state.tap(out, op, node))
        result = cls._wrap(out)
        result._node = node
        if state.anomaly:
            anomaly.check_forward(op, out, node, inputs)
        return result

    @classmethod
    def _wrap(cls, array: np.ndarray) -> Tensor:
        """A graph-less Tensor around ``array``, frozen and not copied; nothing is recorded or tapped
        (``from_op`` does that): for arrays nobody else writes, as the gradients backward deposits."""
        array.setflags(False)  # what _readonly does, without the call: this runs for every op
        result = cls.__new__(cls)
        result._data = array
        result._node = None
        result._grad = None
        result._name = None
        return result

    @classmethod
    def constant(cls, array: np.ndarray) -> Tensor:
        """Wrap an array this library just made (no copy, no graph): comparisons, argmax, grads."""
        return cls.from_op(array, "constant", (), None)

    # -- data ----------------------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        """The (read-only) array. Assigning a new array replaces it without touching the graph."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        value = np.asarray(value._data if isinstance(value, Tensor) else value)
        if value.shape != self._data.shape:
            raise ValueError(f"Tensor.data: new array has shape {value.shape}, expected {self._data.shape}")
        if value.flags.writeable or value.base is not None:
            value = value.copy()  # the caller keeps no handle that could mutate what we hold
        self._replace_data(value)

    def _replace_data(self, array: np.ndarray) -> None:
        """Swap in an array that nobody else holds (optimizers use this to skip the copy)."""
        self._data = _readonly(array)
        if self._node is not None:
            self._node.dtype = array.dtype

    shape = property(lambda self: self._data.shape, doc="Tuple of dimension sizes.")
    dtype = property(lambda self: self._data.dtype, doc="The numpy dtype.")
    ndim = property(lambda self: self._data.ndim, doc="Number of dimensions.")
    size = property(lambda self: self._data.size, doc="Number of elements.")

    def numel(self) -> int:
        return self._data.size

    def dim(self) -> int:
        return self._data.ndim

    def numpy(self) -> np.ndarray:
        """The array itself (read-only; ``.numpy().copy()`` for a mutable one)."""
        return self._data

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if dtype is not None and dtype != self._data.dtype:
            return self._data.astype(dtype)
        return self._data.copy() if copy else self._data

    def item(self) -> float | int | bool:
        if self._data.size != 1:
            raise ValueError(f"item(): only a tensor with one element converts to a Python scalar, "
                             f"this one has shape {self.shape}")
        return self._data.item()

    def tolist(self) -> Any:
        return self._data.tolist()

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self._data)

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self._data)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._data.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors can be used as an index, not {self.dtype}")
        return int(self.item())

    __hash__ = object.__hash__  # identity; == is elementwise, as in PyTorch

    # -- autograd ------------------------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        return self._node is not None

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        self.requires_grad_(flag)

    def requires_grad_(self, flag: bool = True) -> Tensor:
        """Make this leaf record ops (and receive ``.grad``), or stop it; returns self."""
        if self._node is not None and not self._node.is_leaf:
            if flag:
                return self
            raise RuntimeError(f"requires_grad_(False) on a tensor made by '{self._node.op}': only "
                               "leaves can be switched off; use .detach() to cut the graph")
        if not flag:
            self._node = None
            return self
        if self._data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, this one is {self.dtype}")
        if self._node is None:
            node = Node(None, (), None, self._data.shape, self._data.dtype)
            node.tensor = weakref.ref(self)
            node.name = self._name
            self._node = node
        return self

    @property
    def grad(self) -> Tensor | None:
        """The gradient backward left here (None until then)."""
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        """As PyTorch: a gradient of another shape or dtype is refused here, where it is set, rather
        than reshaping or retyping the parameter at the optimizer's next step."""
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"Tensor.grad: expected a Tensor or None, got {type(value).__name__}")
            if value._data.shape != self._data.shape or value._data.dtype != self._data.dtype:
                raise ValueError(f"Tensor.grad: a gradient of shape {value.shape} and dtype {value.dtype} "
                                 f"for a tensor of shape {self.shape} and dtype {self.dtype} (must match)")
        self._grad = value

    @property
    def is_leaf(self) -> bool:
        return self._node is None or self._node.is_leaf

    @property
    def grad_fn(self) -> Node | None:
        """The node of the op that made this tensor (None for leaves), as in PyTorch."""
        return None if self.is_leaf else self._node

    @property
    def name(self) -> str | None:
        """A label that graph pictures and gradcheck reports show."""
        return self._name

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value
        if self._node is not None:
            self._node.name = value

    def named(self, name: str) -> Tensor:
        """Set ``name`` and return self, for use inside expressions."""
        self.name = name
        return self

    def detach(self) -> Tensor:
        """The same (immutable) array, cut from the graph."""
        out = Tensor.constant(self._data)
        out._name = self._name
        return out

    def retain_grad(self) -> Tensor:
        """Keep ``.grad`` on this intermediate tensor after backward (e.g. to study dL/dh_t)."""
        if self._node is None:
            raise RuntimeError("retain_grad() on a tensor that does not require grad")
        self._node.tensor = weakref.ref(self)
        return self

    @property
    def retains_grad(self) -> bool:
        return self._node is not None and not self._node.is_leaf and self._node.tensor is not None

    def register_hook(self, hook: Callable[[Tensor], Any]) -> Callable[[], None]:
        """Call ``hook(grad)`` with the gradient flowing into this tensor (a Tensor, as in PyTorch);
        a non-None return (Tensor or array, same shape) replaces it.  Returns a remover."""
        if self._node is None:
            raise RuntimeError("register_hook() on a tensor that does not require grad")
        if not callable(hook):
            raise TypeError(f"register_hook: expected a function of the gradient, got {type(hook).__name__}")
        node = self._node

        def on_gradient(grad: np.ndarray) -> Any:
            return hook(Tensor.constant(grad))

        if node.hooks is None:
            node.hooks = []
        node.hooks.append(on_gradient)
        return lambda: node.hooks.remove(on_gradient) if on_gradient in node.hooks else None

    def _zero_grad(self, set_to_none: bool) -> None:
        """What ``zero_grad`` (a module's or an optimizer's) does to one parameter: None, or zeros where
        there was a gradient (None is written to the slot itself: it needs none of the setter's checks)."""
        if set_to_none or self._grad is None:
            self._grad = None
        else:
            self._grad = Tensor.constant(np.zeros_like(self._data))

    def _accumulate_grad(self, grad: np.ndarray) -> None:
        """Called by the engine: add ``grad`` into ``.grad`` (a new read-only array, or ``grad`` itself
        frozen: the engine never writes into a gradient it has handed on)."""
        total = grad if self._grad is None else self._grad._data + grad
        self._grad = Tensor._wrap(np.asarray(total))  # asarray: 0-d arithmetic gives numpy scalars

    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Compute d(self)/d(leaf) for every leaf that requires grad and add it to ``leaf.grad``."""
        if self._node is None:
            raise RuntimeError("backward() on a tensor that does not require grad: no input of the ops "
                               "that made it had requires_grad=True (or they ran under no_grad)")
        if gradient is None:
            if self._data.size != 1:
                raise RuntimeError(f"backward() on a tensor of shape {self.shape} needs an explicit "
                                   "gradient of that shape: only a scalar's gradient is implicitly 1")
            seed = np.array(1, self._data.dtype).reshape(self._data.shape)  # (np.ones: 3x the cost)
        else:
            # a copy: .grad arrays are frozen read-only, and that must not freeze the caller's array
            seed = np.array(gradient._data if isinstance(gradient, Tensor) else gradient,
                            dtype=self._data.dtype)
            if seed.shape != self._data.shape:
                raise ValueError(f"backward(): gradient has shape {seed.shape}, "
                                 f"expected the tensor's shape {self.shape}")
        run_backward(self._node, seed, retain_graph)

    # -- display -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        body = np.array2string(self._data, separator=", ", precision=4, threshold=20,
                               prefix="tensor(")
        extras = []
        if self._data.dtype not in (np.float32, np.int64, np.bool_):
            extras.append(f"dtype={self._data.dtype}")
        if self._node is not None:
            extras.append("requires_grad=True" if self._node.is_leaf else f"op={self._node.op}")
        if self._name:
            extras.append(f"name={self._name!r}")
        return f"tensor({body}{''.join(', ' + e for e in extras)})"
