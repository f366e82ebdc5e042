"""The autograd engine: graph nodes, grad mode, and the backward walk.

Every differentiable op returns a Tensor whose ``_node`` records *how* it was made: the
op's name, the parent nodes, the provenance that was current, and a ``backward`` closure
holding exactly the arrays that the vector-Jacobian product needs.  Nodes hold parent
*nodes*, never parent tensors, so an intermediate Tensor the user drops is freed even while
the graph lives, and after backward only the tiny structure remains (pictures can still be
drawn from it; the saved arrays are gone unless ``retain_graph=True``).

The walk is iterative (a heap of pending nodes), so graph depth is limited only by memory.
"""

from __future__ import annotations

import gc
import itertools
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from heapq import heappop, heappush
from typing import Any

import numpy as np

from . import provenance

# ---------------------------------------------------------------------------------------------
# Grad mode


class _State:
    """Process-wide switches read on every op; one object so the hot path does one lookup."""

    __slots__ = ("grad_enabled", "anomaly", "tap")

    def __init__(self) -> None:
        self.grad_enabled = True
        self.anomaly = False
        # tap(out, op, node) -> out sees every op's output in creation order, with the node that
        # will record it (None if nothing records), and may replace it (same shape and dtype);
        # gradcheck replays a function through it to perturb one intermediate at a time.
        self.tap: Callable[[np.ndarray, str, Node | None], np.ndarray] | None = None


state = _State()


class _GradMode:
    """Context manager *and* decorator that sets grad mode, restoring the old one on exit."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._saved: list[bool] = []

    def __enter__(self) -> None:
        self._saved.append(state.grad_enabled)
        state.grad_enabled = self.enabled

    def __exit__(self, *exc: object) -> None:
        state.grad_enabled = self._saved.pop()

    def __call__(self, fn: Callable) -> Callable:
        import functools

        enabled = self.enabled

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _GradMode(enabled):
                return fn(*args, **kwargs)

        return wrapper


def no_grad(fn: Callable | None = None) -> Any:
    """Record nothing inside: ``with ts.no_grad(): ...``, ``@ts.no_grad()`` or ``@ts.no_grad``."""
    return _GradMode(False) if fn is None else _GradMode(False)(fn)


def enable_grad(fn: Callable | None = None) -> Any:
    """Record again inside a ``no_grad`` region (a context manager or decorator, like no_grad)."""
    return _GradMode(True) if fn is None else _GradMode(True)(fn)


def is_grad_enabled() -> bool:
    return state.grad_enabled


class gc_paused:  # noqa: N801 - used like a function: ``with gc_paused(): ...``
    """Pause Python's cyclic garbage collector inside the block (if it is on at all).

    A graph holds no reference cycles (nodes keep parent nodes and saved arrays, never tensors),
    so reference counting frees it; but every op allocates several objects the collector tracks,
    and its repeated passes over a growing graph cost a third of a long sequence's training step.
    Cyclic garbage made inside the block is collected after it, as usual. (A class, not a
    generator: it is entered on every module call.)"""

    __slots__ = ("paused",)

    def __enter__(self) -> None:
        self.paused = gc.isenabled()
        if self.paused:
            gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.paused:
            gc.enable()


# ---------------------------------------------------------------------------------------------
# Nodes


def _released(g: np.ndarray) -> None:  # stands in for a backward whose saved arrays are freed
    raise AssertionError("unreachable: the engine checks for _released before calling")


_creation_counter = itertools.count()
_shapes: dict[tuple, tuple] = {}
_SHAPES_KEPT = 4096  # distinct shapes remembered; then the table starts over (a program's are few)


def interned_shape(shape: tuple) -> tuple:
    """One shared tuple per distinct shape: every node (and slice backward) keeps a shape, and a
    recurrent layer's thousands of nodes have a handful of shapes between them."""
    kept = _shapes.get(shape)
    if kept is None:
        if len(_shapes) >= _SHAPES_KEPT:
            _shapes.clear()
        _shapes[shape] = kept = shape
    return kept


class _Rare:
    """The fields few nodes ever set (leaves, hooked or retained tensors, anomaly mode, pictures),
    kept out of ``Node`` so that the thousands of op nodes a recurrent layer records stay small and
    quick to make: 104 bytes and nine stores each, not 136 and thirteen. (Where every node gets one,
    under ``viz.record_grad_norms`` or anomaly mode, a node costs 72 bytes more: opt-in modes.)"""

    __slots__ = ("hooks", "tensor", "source", "grad_norm", "unrolled")

    def __init__(self) -> None:
        self.hooks: list[Callable] | None = None
        self.tensor: weakref.ref | None = None  # set for leaves and for retain_grad()
        self.source: str | None = None          # creating source line, in anomaly mode only
        self.grad_norm: float | None = None     # filled only by ts.viz.record_grad_norms()
        self.unrolled: Any = None               # a fused layer's per-step record (nn.fused.Unrolled)


def _rare_field(name: str) -> property:
    """A Node attribute that lives in its ``_Rare`` record: None until set."""

    def get(node: Node) -> Any:
        return None if node.rare is None else getattr(node.rare, name)

    def set_(node: Node, value: Any) -> None:
        if node.rare is None:
            node.rare = _Rare()
        setattr(node.rare, name, value)

    return property(get, set_)


class Node:
    """One recorded op (or one leaf that wants a gradient).

    ``backward(g)`` returns one gradient per entry of ``parents`` (None where not needed);
    gradients may have the op's broadcast shape: the engine sums them back (``unbroadcast``).
    A leaf has ``backward is None`` and a weak reference to its Tensor, to deposit ``.grad``.
    ``hooks``, ``tensor``, ``source``, ``grad_norm`` and ``unrolled`` read and write ``rare``.
    """

    __slots__ = ("backward", "parents", "op", "prov", "shape", "dtype", "name", "seq", "rare")

    def __init__(self, backward: Callable | None, parents: tuple, op: str | None,
                 shape: tuple, dtype: np.dtype) -> None:
        self.backward = backward
        self.parents = parents          # tuple[Node | None, ...]
        self.op = op                    # None for a leaf
        self.prov = provenance.current  # where it was made (module, layer, step, gate, label)
        self.shape = _shapes.get(shape) or interned_shape(shape)  # the call only for a new shape (or ())
        self.dtype = dtype
        self.name: str | None = None
        self.seq = next(_creation_counter)      # parents are always made first: see topological_order
        self.rare: _Rare | None = None

    hooks = _rare_field("hooks")
    tensor = _rare_field("tensor")
    source = _rare_field("source")
    grad_norm = _rare_field("grad_norm")
    unrolled = _rare_field("unrolled")

    @property
    def is_leaf(self) -> bool:
        return self.op is None

    @property
    def released(self) -> bool:
        return self.backward is _released

    def __repr__(self) -> str:
        what = "leaf" if self.op is None else self.op
        return f"<Node {what} {self.shape} {self.dtype}{'' if self.prov is None else ' @ ' + str(self.prov)}>"


class LazyGrad:
    """A gradient the engine may combine with others of its kind before making it an array."""

    __slots__ = ()

    def dense(self) -> np.ndarray:
        raise NotImplementedError


class IndexGrad(LazyGrad):
    """A gradient that is zero except at ``index`` of an array of ``shape``.

    Indexing ops return this instead of a full-size array, and the engine adds it into one
    buffer per parent: slicing T steps out of a sequence then costs O(T), not O(T^2).
    """

    __slots__ = ("index", "values", "shape", "dtype", "may_repeat")

    def __init__(self, index: Any, values: np.ndarray, shape: tuple, dtype: np.dtype,
                 may_repeat: bool) -> None:
        self.index, self.values, self.shape, self.dtype = index, values, shape, dtype
        self.may_repeat = may_repeat  # an integer array index may repeat elements: each must add

    def add_into(self, buffer: np.ndarray) -> None:
        if self.may_repeat:
            np.add.at(buffer, self.index, self.values)
            return
        part = buffer[self.index]
        part += self.values
        if part.base is not buffer:  # not a view of buffer (an advanced index copies): write it back
            buffer[self.index] = part

    def dense(self) -> np.ndarray:
        buffer = np.zeros(self.shape, self.dtype)
        if self.may_repeat:
            self.add_into(buffer)
        else:  # each element is selected once: into zeros, adding is assigning (and cheaper)
            buffer[self.index] = self.values
        return buffer


class ProductGrad(LazyGrad):
    """A gradient ``left.T @ right``, as a weight used at every time step gets from each step.

    The engine gathers all of a node's ProductGrads (``extend``) and multiplies the stacked factors
    out ``FOLD_ROWS`` rows at a time into a running sum: the T small products of BPTT become a few
    large ones, as in a hand-written BPTT (the sum is the same up to rounding order), while the
    factors held stay few (one product over all T steps would be slower here for large batches,
    and would hold every step's factors until the end). An op hands its ProductGrad to the
    engine, which may then extend it."""

    __slots__ = ("lefts", "rights", "rows", "total")

    FOLD_ROWS = 256  # measured: 128-512 rows beat both per-step products and one product over all steps

    def __init__(self, left: np.ndarray, right: np.ndarray) -> None:
        self.lefts, self.rights, self.rows = [left], [right], len(left)
        self.total: np.ndarray | None = None

    def extend(self, other: ProductGrad) -> None:
        self.lefts += other.lefts
        self.rights += other.rights
        self.rows += other.rows
        if other.total is not None:
            self._add(other.total)
        if self.rows >= self.FOLD_ROWS:
            self._fold()

    def _add(self, product: np.ndarray) -> None:
        if self.total is None:
            self.total = product
        else:
            self.total += product  # both are products made here, owned by no one else

    def _fold(self) -> None:
        if len(self.lefts) == 1:
            self._add(self.lefts[0].T.dot(self.rights[0]))  # .dot: see ops.linalg._product
        else:
            self._add(np.concatenate(self.lefts).T.dot(np.concatenate(self.rights)))
        self.lefts, self.rights, self.rows = [], [], 0

    def dense(self) -> np.ndarray:
        if self.lefts:
            self._fold()
        return self.total


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` back to ``shape``: the adjoint of numpy broadcasting ``shape`` up to grad's."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise ValueError(f"gradient of shape {grad.shape} has fewer dimensions than its input {shape}")
    axes = tuple(i for i in range(extra) if grad.shape[i] != 1) + tuple(  # size 1: the reshape drops it
        extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    summed = np.add.reduce(grad, axis=axes, keepdims=True) if axes else grad  # = .sum(), minus a wrapper
    if extra:
        summed = summed.reshape(summed.shape[extra:])
    if summed.shape != shape:
        raise ValueError(f"gradient of shape {grad.shape} does not broadcast to its input {shape}")
    return summed


# ---------------------------------------------------------------------------------------------
# The backward walk


def topological_order(root: Node) -> list[Node]:
    """Nodes reachable from ``root``, each before all of its parents.

    A node's parents always exist before it, so newest-first creation order is a topological
    order: collect what is reachable (iteratively), then sort by creation number.
    """
    reachable = {id(root): root}
    stack = [root]
    while stack:
        for parent in stack.pop().parents:
            if parent is not None and id(parent) not in reachable:
                reachable[id(parent)] = parent
                stack.append(parent)
    return sorted(reachable.values(), key=_creation_number, reverse=True)


def _creation_number(node: Node) -> int:
    return node.seq


def _fitted(node: Node, grad: np.ndarray) -> np.ndarray:
    """A dense gradient summed back to ``node``'s shape and cast to its dtype."""
    if grad.shape != node.shape:
        grad = unbroadcast(grad, node.shape)
    if grad.dtype != node.dtype:
        grad = grad.astype(node.dtype)
    return grad


def _added(node: Node, existing: Any, owned: bool, grad: Any) -> Any:
    """``existing + grad`` for ``node``: into ``existing`` when the walk owns it, else fresh."""
    if type(existing) is ProductGrad:
        if type(grad) is ProductGrad:
            existing.extend(grad)
            return existing
        existing, owned = _fitted(node, existing.dense()), True
    elif type(grad) is ProductGrad:
        grad = grad.dense()
    if type(grad) is IndexGrad:
        if not owned:
            existing = np.array(existing, dtype=node.dtype)
        grad.add_into(existing)
        return existing
    grad = _fitted(node, grad)
    if owned:
        existing += grad
        return existing
    return np.asarray(existing + grad)  # asarray: with 0-d operands numpy returns a scalar


# Called with (node, gradient) for every node the walk reaches; diagnostics and anomaly mode
# register here. Empty in normal training, so the hot loop pays one truth test.
observers: list[Callable[[Node, np.ndarray], None]] = []


def run_backward(root: Node, grad: np.ndarray, retain_graph: bool = False) -> None:
    """Propagate ``grad`` from ``root`` to every leaf that requires grad (``gc_paused``)."""
    with gc_paused():
        _walk(root, grad, retain_graph)


def _walk(root: Node, grad: np.ndarray, retain_graph: bool) -> None:
    """The backward walk.

    Nodes are visited newest first, from a heap keyed on creation number: every node that can
    contribute to a node's gradient was made after it, so the gradient is complete when popped.
    A node enters the heap when its first gradient arrives, so nothing is visited twice and
    branches that get no gradient are never walked.
    """
    grads: dict[Node, np.ndarray] = {root: _fitted(root, grad)}
    owned: set[Node] = set()  # buffers the walk made itself, safe to add into in place
    heap = [(-root.seq, root)]
    while heap:
        node = heappop(heap)[1]
        g = grads.pop(node)
        owned.discard(node)  # the set holds only pending gradients: it would grow with the graph
        if type(g) is ProductGrad:
            g = _fitted(node, g.dense())
        if state.anomaly:
            from .anomaly import check_incoming
            check_incoming(node, g)
        rare = node.rare  # read once: hooks and observers do not give a node a tensor to fill
        if rare is not None and rare.hooks:
            for hook in rare.hooks:
                replaced = hook(g)
                if replaced is not None:
                    g = np.asarray(replaced)
                    if g.shape != node.shape:
                        raise ValueError(f"a hook on '{node.op or 'leaf'}' returned a gradient of shape "
                                         f"{g.shape}, expected the tensor's shape {node.shape}")
        if observers:
            for observe in observers:
                observe(node, g)
        if rare is not None and rare.tensor is not None:
            tensor = rare.tensor()
            if tensor is not None:
                tensor._accumulate_grad(g)
        backward = node.backward
        if backward is None:
            continue
        if backward is _released:
            raise RuntimeError(
                f"backward through the graph a second time: the arrays saved by '{node.op}'"
                f"{'' if node.prov is None else ' (' + str(node.prov) + ')'} were freed after the "
                "first backward. Pass retain_graph=True to the first backward() to keep them.")
        parent_grads = backward(g)
        if state.anomaly:
            from .anomaly import check_backward
            check_backward(node, parent_grads)
        if not retain_graph:
            node.backward = _released  # frees the saved arrays now, not at the end of the walk
        for parent, parent_grad in zip(node.parents, parent_grads, strict=True):
            if parent is None or parent_grad is None:
                continue
            existing = grads.get(parent)
            if existing is not None:
                grads[parent] = _added(parent, existing, parent in owned, parent_grad)
                owned.add(parent)
                continue
            # A dense first gradient is kept as it is (not owned: an op may return one array to several
            # inputs); the usual case, exact shape and dtype (`is`: cheap), skips _fitted. A
            # ProductGrad waits, to be extended by the later ones.
            if type(parent_grad) is IndexGrad:
                parent_grad = parent_grad.dense()
                owned.add(parent)
            elif type(parent_grad) is not ProductGrad and (
                    parent_grad.dtype is not parent.dtype or parent_grad.shape != parent.shape):
                parent_grad = _fitted(parent, parent_grad)
            grads[parent] = parent_grad
            heappush(heap, (-parent.seq, parent))


@contextmanager
def observe_backward(fn: Callable[[Node, np.ndarray], None]) -> Iterator[None]:
    """Call ``fn(node, grad)`` for every node reached by backward inside the block."""
    observers.append(fn)
    try:
        yield
    finally:
        observers.remove(fn)
