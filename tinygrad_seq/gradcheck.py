"""ts.gradcheck: compare backward() with finite differences, and point at the op that is wrong.

The check reduces ``fn``'s outputs to one number ``L = sum_o <w_o, o>`` with fixed random weights,
takes dL/dinput from one backward, and compares it with central differences of L, all in float64
(on copies swapped into the very tensors the user passed, so module parameters that ``fn`` closes
over are covered).  When entries disagree, a second stage localises the bug: it replays ``fn``
through the op tap (``autograd.state.tap``), perturbing one intermediate output at a time, and
compares each intermediate's analytic gradient with its own finite difference.  Walking from the
output towards the inputs, the first intermediate whose gradient is wrong while the gradients of
all the ops consuming it are right was handed a wrong gradient by one of those consumers: that
op's backward is the bug, and the report names it with its provenance.  When there are several
consumers, a local check of each one's backward against the replayed forward tells them apart.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import creation
from .autograd import (
    LazyGrad,
    Node,
    enable_grad,
    no_grad,
    observe_backward,
    state,
    topological_order,
    unbroadcast,
)
from .nn.module import Module
from .provenance import Provenance
from .tensor import Tensor

MAX_ROWS = 10               # worst entries shown in the report
MAX_LOCALISED_OPS = 2000    # intermediates localisation checks (two replays of fn each)
_SEED = 20240601            # gradcheck's own generator: the same weights and directions every run

# Sees each op's output as fn runs (see autograd.state.tap); may return it perturbed.
Tap = Callable[[np.ndarray, str, Node | None], np.ndarray]

# ---------------------------------------------------------------------------------------------
# The report


class GradcheckRow(NamedTuple):
    """One compared entry: an element of an input, or (fast mode, ``index`` None) a random direction."""

    name: str
    index: tuple[int, ...] | None
    where: str            # provenance of the input's leaf (module, t=step, ...), "" if none
    analytic: float       # from backward()
    numeric: float        # central finite difference
    abs_error: float
    rel_error: float
    failed: bool


@dataclass(frozen=True)
class SuspectOp:
    """An op whose backward may have produced a wrong gradient."""

    op: str
    name: str | None
    shape: tuple
    prov: Provenance | None

    def __str__(self) -> str:
        name = f" (tensor '{self.name}')" if self.name else ""
        return f"op '{self.op}'{name}{_at(self.prov)}, output shape {self.shape}"


@dataclass(frozen=True)
class Culprit:
    """The first op (from the output back) whose own backward disagrees with finite differences.

    ``suspects`` holds the op(s) consuming the wrongly-graded tensor whose own backward fails a
    local check (all of its consumers if that check cannot single one out).  ``receiver`` says
    which tensor got the wrong gradient; ``analytic`` / ``numeric`` are that gradient projected
    on a random direction (or, for an input, its worst element).
    """

    suspects: tuple[SuspectOp, ...]
    receiver: str
    analytic: float
    numeric: float

    def __str__(self) -> str:
        if len(self.suspects) == 1:
            which, outputs, sends = str(self.suspects[0]), "its output agrees", "it sends"
        else:
            which = ("one or more of the ops consuming the same tensor: "
                     + "; ".join(str(s) for s in self.suspects))
            outputs, sends = "their outputs agree", "they send"
        return (f"first wrong backward: {which}. The gradient reaching {outputs} with finite "
                f"differences, but the gradient {sends} to {self.receiver} does not (analytic (backward) "
                f"{self.analytic:.6g} vs numeric (finite diff) {self.numeric:.6g}, abs error "
                f"{abs(self.analytic - self.numeric):.3g})")


@dataclass(eq=False)
class GradcheckReport:
    """What gradcheck found: truthy iff every input passed; ``str()`` is the full table."""

    passed: bool
    rows: list[GradcheckRow]                            # the worst entries, failures first
    per_tensor: list[tuple[str, float, float, bool]]    # (input name, max abs err, max rel err, passed)
    culprit: Culprit | None
    kink_warnings: list[str]
    localisation_note: str                              # why there is no culprit, when failed
    settings: str
    entries: int                                        # how many entries were compared

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        failed = [name for name, _, _, ok in self.per_tensor if not ok]
        if self.passed:
            head = ("gradcheck passed: backward agrees with finite differences for all "
                    f"{len(self.per_tensor)} inputs")
        else:
            head = ("gradcheck FAILED: backward disagrees with finite differences for input"
                    f"{'s' if len(failed) > 1 else ''} {', '.join(repr(n) for n in failed)}")
        lines = [head,
                 f"  ({self.settings}; an entry fails when |analytic - numeric| > atol + rtol*|numeric|)",
                 "", f"worst entries ({len(self.rows)} of {self.entries}):"]
        lines += _table(("input", "index", "where", "analytic (backward)", "numeric (finite diff)",
                         "abs error", "rel error", ""),
                        [(r.name, "random direction" if r.index is None else str(r.index), r.where,
                          f"{r.analytic:.8g}", f"{r.numeric:.8g}", f"{r.abs_error:.3g}", f"{r.rel_error:.3g}",
                          "FAIL" if r.failed else "ok") for r in self.rows])
        lines += ["", "per input:"]
        lines += _table(("input", "max abs error", "max rel error", ""),
                        [(name, f"{a:.3g}", f"{r:.3g}", "ok" if ok else "FAIL")
                         for name, a, r, ok in self.per_tensor])
        if self.culprit is not None:
            lines += ["", str(self.culprit)]
        elif self.localisation_note:
            lines += ["", self.localisation_note]
        lines += [f"warning: {message}" for message in self.kink_warnings]
        return "\n".join(lines)


class GradcheckError(AssertionError):
    """Raised by ``gradcheck`` (with ``raise_exception=True``) on failure; ``.report`` has the details."""

    def __init__(self, report: GradcheckReport) -> None:
        super().__init__(str(report))
        self.report = report


def _at(prov: Provenance | None) -> str:
    return f" at {prov}" if prov is not None and str(prov) else ""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in (headers, *rows)]


# ---------------------------------------------------------------------------------------------
# The public entry point


def gradcheck(fn: Callable[..., Any], inputs: Tensor | Iterable[Tensor], eps: float = 1e-6,
              atol: float = 1e-5, rtol: float = 1e-3, raise_exception: bool = True,
              fast_mode: bool = False) -> bool | GradcheckReport:
    """Check ``fn``'s gradients with respect to ``inputs`` against central finite differences.

    ``fn`` returns a Tensor or a (nested) tuple/list/dict of Tensors.  It is called with as many
    leading inputs as it has positional parameters (a Module: its ``forward``, and only the inputs
    before its own first parameter; all inputs if it takes ``*args``); the rest, typically module
    parameters, reach it through a closure:
    ``gradcheck(lambda x: model(x).sum(), [x, *model.parameters()])`` or
    ``gradcheck(model, [x, *model.parameters()])``.  Inputs are checked in
    float64 copies and restored (data, dtype, requires_grad, grad) afterwards.  ``fast_mode``
    compares one random directional derivative per input instead of every element.

    Returns True on success; on failure raises ``GradcheckError`` whose message is a table of
    the worst entries and names the first op whose backward is wrong.  With
    ``raise_exception=False`` returns the ``GradcheckReport`` either way.  Warns (UserWarning)
    when an input is not float64 and when an input sits on a kink (relu at 0, max ties, ...).
    ``fn`` runs many times; the library's random generator is rewound before each run so that
    dropout draws the same mask, and left as it was before the check.
    """
    if not eps > 0:
        raise ValueError(f"gradcheck: eps must be > 0, got {eps}")
    if not (atol >= 0 and rtol >= 0):
        raise ValueError(f"gradcheck: atol and rtol must be >= 0, got atol={atol}, rtol={rtol}")
    tensors = _checked_inputs(inputs)
    names = _input_names(tensors)
    low_precision = [f"'{name}' ({t.dtype})" for t, name in zip(tensors, names, strict=True)
                     if t.dtype != np.float64]
    if low_precision:
        warnings.warn(f"gradcheck: input {', '.join(low_precision)} is not float64; checking in float64 "
                      "copies (the inputs are restored afterwards)", UserWarning, stacklevel=2)
    settings = (f"{'fast' if fast_mode else 'slow'} mode, float64, eps={eps:g}, atol={atol:g}, "
                f"rtol={rtol:g}")
    with _float64_leaves(tensors), _rewinding_library_rng() as rng_state, enable_grad():
        objective = _Objective(fn, tensors, rng_state)
        report = _check(objective, tensors, names, eps, atol, rtol, fast_mode, settings)
        report.settings = f"{objective.describe()}; {settings}"
    for message in report.kink_warnings:
        warnings.warn(f"gradcheck: {message}", UserWarning, stacklevel=2)
    if report.passed:
        return True if raise_exception else report
    if raise_exception:
        raise GradcheckError(report)
    return report


def _checked_inputs(inputs: Tensor | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(inputs, Tensor):
        return [inputs]
    try:
        tensors = list(inputs)
    except TypeError:
        raise TypeError(f"gradcheck: inputs must be a Tensor or a sequence of Tensors, "
                        f"got {type(inputs).__name__}") from None
    if not tensors:
        raise ValueError("gradcheck: no inputs given; pass the tensors to check gradients for")
    seen: dict[int, int] = {}
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"gradcheck: input[{i}] is a {type(t).__name__}, expected a Tensor")
        label = f"input[{i}]" + (f" '{t.name}'" if t.name else "")
        if t.dtype.kind != "f":
            raise TypeError(f"gradcheck: {label} has dtype {t.dtype}; only floating-point tensors have "
                            "gradients (let fn close over integer tensors instead of passing them)")
        if not t.is_leaf:
            raise ValueError(f"gradcheck: {label} was made by op '{t._node.op}', not a leaf; pass the "
                             "leaf tensors it is computed from (or .detach() it)")
        if id(t) in seen:
            raise ValueError(f"gradcheck: {label} is the same tensor as input[{seen[id(t)]}]; pass it once")
        seen[id(t)] = i
    return tensors


def _input_names(tensors: Sequence[Tensor]) -> list[str]:
    """``tensor.name`` or ``input[i]``; repeated names (two layers' 'weight') get their position."""
    names = [t.name or f"input[{i}]" for i, t in enumerate(tensors)]
    return [name if names.count(name) == 1 else f"{name} (input[{i}])" for i, name in enumerate(names)]


@contextmanager
def _float64_leaves(tensors: Sequence[Tensor]) -> Iterator[None]:
    """Swap float64 copies into the tensors themselves, so closures see them too; restore after."""
    saved = [(t._data, t.requires_grad, t.grad) for t in tensors]
    try:
        for t in tensors:
            t._replace_data(t._data.astype(np.float64))
            t.requires_grad_(True)
            t.grad = None
        yield
    finally:
        for t, (data, requires_grad, grad) in zip(tensors, saved, strict=True):
            t._replace_data(data)
            t.requires_grad_(requires_grad)
            t.grad = grad


@contextmanager
def _rewinding_library_rng() -> Iterator[dict]:
    """The library generator's state, put back on exit: gradcheck's runs of fn consume nothing."""
    rng_state = creation.generator().bit_generator.state
    try:
        yield rng_state
    finally:
        creation.generator().bit_generator.state = rng_state


# ---------------------------------------------------------------------------------------------
# The scalar being differentiated


def _float_tensors(result: Any) -> list[Tensor]:
    """fn's floating-point output tensors, depth first through tuples, lists and dict values."""
    if isinstance(result, Tensor):
        return [result] if result.dtype.kind == "f" else []
    if isinstance(result, dict):
        result = list(result.values())
    if isinstance(result, (tuple, list)):
        return [t for item in result for t in _float_tensors(item)]
    return []


def _describe(result: Any) -> str:
    return f"a {result.dtype} Tensor" if isinstance(result, Tensor) else f"a {type(result).__name__}"


def _leading_arguments(fn: Callable[..., Any], inputs: Sequence[Tensor]) -> Sequence[Tensor]:
    """The inputs fn takes positionally: all, or as many as fn has positional parameters. A module
    takes the inputs before its own first parameter: in ``[x, h, *rnn.parameters()]`` x and h, never
    its weights as an optional argument (an RNN's hx and lengths)."""
    module = isinstance(fn, Module)
    try:
        parameters = inspect.signature(fn.forward if module else fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): pass everything
        return inputs
    count = len(inputs) if any(p.kind is p.VAR_POSITIONAL for p in parameters) else sum(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
    if module:
        own = {id(param) for param in fn.parameters()}
        count = min(count, next((i for i, t in enumerate(inputs) if id(t) in own), len(inputs)))
    return inputs[:count]


class _Objective:
    """L = sum over fn's float outputs o of <w_o, o>, with w_o ~ N(0, 1) fixed at the first run.

    Random weights rather than a plain sum, so that every output element counts with its own
    factor and wrong gradients cannot cancel; a single scalar output is taken as it is (w = 1),
    so the table shows the derivatives a user expects.  Each run rewinds the library's generator, so a fn
    with dropout draws the same mask every time and stays a function of its inputs.
    """

    def __init__(self, fn: Callable[..., Any], inputs: Sequence[Tensor], library_rng_state: dict) -> None:
        self.fn = fn
        self.arguments = _leading_arguments(fn, inputs)
        self.library_rng_state = library_rng_state
        self.rng = np.random.default_rng(_SEED)   # weights and directions; not the user's stream
        self.weights: list[np.ndarray] | None = None

    def run(self, tap: Tap | None = None) -> list[Tensor]:
        """fn's float outputs, with ``tap`` seeing every op fn makes (and nothing after)."""
        creation.generator().bit_generator.state = self.library_rng_state
        outer_tap = state.tap
        state.tap = tap
        try:
            result = self.fn(*self.arguments)
        finally:
            state.tap = outer_tap
        outputs = _float_tensors(result)
        if not outputs:
            raise ValueError(f"gradcheck: fn returned {_describe(result)}; expected a floating-point Tensor "
                             "or a (nested) tuple/list/dict holding at least one")
        shapes = [o.shape for o in outputs]
        if self.weights is None:
            for k, output in enumerate(outputs):  # (finite differences of nan are nan: no backward's fault)
                if not np.isfinite(output._data).all():
                    raise ValueError(f"gradcheck: fn's output {k} (shape {output.shape}) is not finite at "
                                     "these inputs, so finite differences cannot check it; "
                                     "ts.detect_anomaly() names the first op that made a nan or inf")
            scalar = len(shapes) == 1 and outputs[0].size == 1
            self.weights = [np.ones(shape) if scalar else np.asarray(self.rng.standard_normal(shape))
                            for shape in shapes]
        elif shapes != [w.shape for w in self.weights]:
            raise RuntimeError(f"gradcheck: fn returned outputs of shapes {shapes} on a re-run, "
                               f"{[w.shape for w in self.weights]} the first time; fn must be deterministic")
        return outputs

    def describe(self) -> str:
        """What is differentiated, for the report's header."""
        if len(self.weights) == 1 and self.weights[0].size == 1:
            return "L = fn's scalar output"
        return "L = sum over fn's outputs of <w, output>, w fixed random weights"

    def value(self, tap: Tap | None = None) -> float:
        with no_grad():
            outputs = self.run(tap)
        return float(sum(np.vdot(w, o._data) for w, o in zip(self.weights, outputs, strict=True)))

    def graph(self, tap: Tap | None = None) -> Tensor:
        outputs = self.run(tap)
        loss = None
        for weight, output in zip(self.weights, outputs, strict=True):
            term = (output * Tensor.constant(weight)).sum()
            loss = term if loss is None else loss + term
        if not loss.requires_grad:
            raise ValueError(f"gradcheck: none of fn's outputs (shapes {[o.shape for o in outputs]}) "
                             "requires grad: they do not depend on the inputs, or were made under no_grad "
                             "or from detach()")
        return loss


def _backward(loss: Tensor, keep: set[int] | None = None, retain_graph: bool = False
              ) -> tuple[list[Node], dict[int, np.ndarray]]:
    """Backward from ``loss``: (its graph in topological order, the gradient reaching each node,
    for the node ids in ``keep`` or all).  Every tensor's ``.grad`` is left as it was, so the check
    leaves no trace on parameters that fn uses but that are not being checked."""
    order = topological_order(loss._node)
    holders = [t for t in (node.tensor() for node in order if node.tensor is not None) if t is not None]
    saved = [t.grad for t in holders]
    grads: dict[int, np.ndarray] = {}

    def capture(node: Node, grad: np.ndarray) -> None:
        if keep is None or id(node) in keep:
            grads[id(node)] = grad

    try:
        with observe_backward(capture):
            loss.backward(retain_graph=retain_graph)
    finally:
        for t, grad in zip(holders, saved, strict=True):
            t.grad = grad
    return order, grads


# ---------------------------------------------------------------------------------------------
# Comparing gradients of the inputs


def _disagree(analytic: float, numeric: float, atol: float, rtol: float) -> bool:
    return not abs(analytic - numeric) <= atol + rtol * abs(numeric)  # written so that nan disagrees


def _compare(name: str, index: tuple[int, ...] | None, where: str, analytic: float, numeric: float,
             atol: float, rtol: float) -> GradcheckRow:
    abs_error = abs(analytic - numeric)
    rel_error = abs_error / abs(numeric) if numeric != 0 else (0.0 if abs_error == 0 else math.inf)
    return GradcheckRow(name, index, where, analytic, numeric, abs_error, rel_error,
                        _disagree(analytic, numeric, atol, rtol))


@contextmanager
def _moved(tensor: Tensor, delta: np.ndarray) -> Iterator[None]:
    """The input tensor holds ``data + delta`` inside."""
    base = tensor._data
    tensor._replace_data(base + delta)
    try:
        yield
    finally:
        tensor._replace_data(base)


def _probe(objective: _Objective, tensor: Tensor, delta: np.ndarray, eps: float,
           base_value: float) -> tuple[float, tuple[float, float] | None]:
    """Central difference of L along ``delta`` (of norm eps), and the one-sided derivatives
    (right, left) when they disagree by much more than smoothness allows: a kink."""
    with _moved(tensor, delta):
        above = objective.value()
    with _moved(tensor, -delta):
        below = objective.value()
    right, left = (above - base_value) / eps, (base_value - below) / eps
    kinked = abs(right - left) > max(1e-3, 10 * eps) * (1 + abs(right) + abs(left))
    return (above - below) / (2 * eps), ((right, left) if kinked else None)


def _unit_direction(rng: np.random.Generator, shape: tuple) -> np.ndarray | None:
    direction = np.asarray(rng.standard_normal(shape))
    norm = np.linalg.norm(direction)
    return direction / norm if norm > 0 else None


_KINK_CAUSES = ("relu at 0, max ties, abs at 0 and the like have no derivative there, so finite "
                "differences cannot check it; move the input off the kink")


def _input_rows(objective: _Objective, tensor: Tensor, name: str, grad: np.ndarray, eps: float,
                atol: float, rtol: float, fast_mode: bool, base_value: float
                ) -> tuple[list[GradcheckRow], str | None]:
    """The compared entries for one input, and a kink warning for it (or None)."""
    where = str(tensor._node.prov) if tensor._node.prov is not None else ""
    base = tensor._data
    if fast_mode:
        direction = _unit_direction(objective.rng, base.shape)
        if direction is None:
            return [], None
        numeric, kink = _probe(objective, tensor, eps * direction, eps, base_value)
        row = _compare(name, None, where, float(np.vdot(grad, direction)), numeric, atol, rtol)
        warning = None if kink is None else (
            f"input '{name}' sits on a kink along a random direction (one-sided derivatives "
            f"{kink[0]:.6g} vs {kink[1]:.6g}): {_KINK_CAUSES}")
        return [row], warning
    rows, kinks = [], []
    for flat in range(base.size):
        index = tuple(int(i) for i in np.unravel_index(flat, base.shape))
        delta = np.zeros_like(base)
        delta[index] = eps
        numeric, kink = _probe(objective, tensor, delta, eps, base_value)
        rows.append(_compare(name, index, where, float(grad[index]), numeric, atol, rtol))
        if kink is not None:
            kinks.append(f"{index} (one-sided derivatives {kink[0]:.6g} vs {kink[1]:.6g})")
    if not kinks:
        return rows, None
    more = f" and {len(kinks) - 3} more" if len(kinks) > 3 else ""
    return rows, f"input '{name}' sits on a kink at {', '.join(kinks[:3])}{more}: {_KINK_CAUSES}"


def _check(objective: _Objective, tensors: Sequence[Tensor], names: Sequence[str], eps: float,
           atol: float, rtol: float, fast_mode: bool, settings: str) -> GradcheckReport:
    loss = objective.graph()
    _, grads = _backward(loss, keep={id(t._node) for t in tensors})
    base_value = objective.value()
    rows: list[GradcheckRow] = []
    kink_warnings: list[str] = []
    per_tensor: list[tuple[str, float, float, bool]] = []
    for tensor, name in zip(tensors, names, strict=True):
        grad = grads.get(id(tensor._node))
        grad = np.zeros(tensor.shape) if grad is None else grad  # not reached: fn ignores this input
        input_rows, kink = _input_rows(objective, tensor, name, grad, eps, atol, rtol, fast_mode, base_value)
        rows += input_rows
        if kink is not None:
            kink_warnings.append(kink)
        per_tensor.append((name, max((r.abs_error for r in input_rows), default=0.0),
                           max((r.rel_error for r in input_rows), default=0.0),
                           not any(r.failed for r in input_rows)))
    worst = sorted(rows, key=lambda r: (not r.failed, -_sortable(r.abs_error)))
    passed = all(ok for *_, ok in per_tensor)
    culprit, note = None, ""
    if not passed:
        worst_by_name = {}
        for row in worst:
            worst_by_name.setdefault(row.name, row)
        culprit, note = _localise(objective, tensors, names, worst_by_name, eps, atol, rtol)
    return GradcheckReport(passed, worst[:MAX_ROWS], per_tensor, culprit, kink_warnings, note, settings,
                           len(rows))


def _sortable(error: float) -> float:
    return math.inf if math.isnan(error) else error


# ---------------------------------------------------------------------------------------------
# Localisation: which op's backward is wrong


class _ReplayDiverged(Exception):
    """fn made a different op at some position on a replay: creation indices mean nothing then."""


def _recorded_graph(objective: _Objective) -> tuple[Tensor, dict[int, tuple[int, str]], list[Node]]:
    """Build fn's graph once more and learn, for each node, which op call made it: node id ->
    (creation index, op name), the index being what the tap counts on a replay. Also returns the
    nodes, for the caller to hold while it uses their ids: a node fn drops (an unused final state)
    would be freed, and its id taken by a node made later."""
    ops: list[str] = []
    made_by: dict[int, tuple[int, str]] = {}
    nodes: list[Node] = []

    def record(out: np.ndarray, op: str, node: Node | None) -> np.ndarray:
        if node is not None:
            made_by[id(node)] = (len(ops), op)
            nodes.append(node)
        ops.append(op)
        return out

    loss = objective.graph(record)
    return loss, made_by, nodes


class _ReplayTap:
    """On a replay of fn: adds ``shift`` to the output of op call ``shift_at`` (if given), keeps
    the outputs of the calls in ``keep``, and checks that known calls make the same ops again."""

    def __init__(self, expected_ops: dict[int, str], shift_at: int | None = None,
                 shift: np.ndarray | None = None, keep: frozenset[int] = frozenset()) -> None:
        self.expected_ops, self.shift_at, self.shift, self.keep = expected_ops, shift_at, shift, keep
        self.calls = 0
        self.kept: dict[int, np.ndarray] = {}

    def __call__(self, out: np.ndarray, op: str, node: Node | None) -> np.ndarray:
        k = self.calls
        self.calls += 1
        expected = self.expected_ops.get(k)
        if expected is not None and expected != op:
            raise _ReplayDiverged(f"op call {k} made '{expected}' the first time and '{op}' on a replay")
        if k == self.shift_at:
            out = (out + self.shift).astype(out.dtype, copy=False)
        if k in self.keep:
            self.kept[k] = out
        return out


class _Replayer:
    """Finite differences of L, and of chosen intermediates, along a direction of any node."""

    def __init__(self, objective: _Objective, made_by: dict[int, tuple[int, str]],
                 input_by_node: dict[int, Tensor], eps: float) -> None:
        self.objective, self.made_by, self.input_by_node, self.eps = objective, made_by, input_by_node, eps
        self.expected_ops = dict(made_by.values())

    def position(self, node: Node) -> int | None:
        entry = self.made_by.get(id(node))
        return None if entry is None else entry[0]

    def rates(self, target: Node, direction: np.ndarray, keep: frozenset[int] = frozenset()
              ) -> tuple[float, dict[int, np.ndarray]]:
        """(dL along ``direction`` of ``target``'s output, d(output of call k) for each k in keep)."""
        values, kept = [], []
        for sign in (1.0, -1.0):
            shift = sign * self.eps * direction
            if target.is_leaf:
                tap = _ReplayTap(self.expected_ops, keep=keep)
                with _moved(self.input_by_node[id(target)], shift):
                    values.append(self.objective.value(tap))
            else:
                tap = _ReplayTap(self.expected_ops, self.position(target), shift, keep)
                values.append(self.objective.value(tap))
            kept.append(tap.kept)
        two_eps = 2 * self.eps
        return (values[0] - values[1]) / two_eps, {k: (kept[0][k] - kept[1][k]) / two_eps for k in keep}


def _dense(grad: Any, shape: tuple) -> np.ndarray:
    return grad.dense() if isinstance(grad, LazyGrad) else unbroadcast(np.asarray(grad), shape)


def _wrong_consumers(replayer: _Replayer, node: Node, users: Sequence[Node], atol: float,
                     rtol: float) -> list[Node]:
    """Of the ops consuming ``node``, those whose own backward fails a local check; all of them if
    none does.  Nudging ``node`` along u moves every op's inputs and output by rates the replay
    measures; an op's backward is right iff <v, d out> = sum_p <backward(v)_p, d input_p> for a
    random v.  Needs the graph kept (``retain_graph``) so that the backward closures still exist."""
    direction = _unit_direction(replayer.objective.rng, node.shape)
    involved = {replayer.position(n) for user in users for n in (user, *user.parents) if n is not None}
    _, rates = replayer.rates(node, direction, frozenset(involved - {None}))

    def rate_of(n: Node) -> np.ndarray | None:  # None: an input that did not move
        if n is node:
            return direction
        position = replayer.position(n)
        return None if position is None else rates[position]

    wrong = []
    for user in users:
        v = np.asarray(replayer.objective.rng.standard_normal(user.shape))
        through_backward = sum(float(np.vdot(_dense(grad, parent.shape), rate_of(parent)))
                               for parent, grad in zip(user.parents, user.backward(v), strict=True)
                               if parent is not None and grad is not None and rate_of(parent) is not None)
        through_forward = float(np.vdot(v, rate_of(user)))
        if _disagree(through_backward, through_forward, atol, rtol):
            wrong.append(user)
    return wrong or list(users)


def _localise(objective: _Objective, tensors: Sequence[Tensor], names: Sequence[str],
              worst_by_name: dict[str, GradcheckRow], eps: float, atol: float, rtol: float
              ) -> tuple[Culprit | None, str]:
    """Walk from the output towards the failing inputs; the first tensor whose gradient is wrong
    while every op consuming it got a right one names those consumers.  Returns (culprit, note)."""
    loss, made_by, _recorded_nodes = _recorded_graph(objective)  # held: their ids key made_by
    order, grads = _backward(loss, retain_graph=True)
    input_names = {id(t._node): name for t, name in zip(tensors, names, strict=True)}
    replayer = _Replayer(objective, made_by, {id(t._node): t for t in tensors}, eps)
    failing = {key for key, name in input_names.items() if worst_by_name[name].failed}
    consumers: dict[int, list[Node]] = {}
    downstream = set(failing)     # nodes that depend on a failing input
    for node in reversed(order):  # parents before children
        for parent in dict.fromkeys(p for p in node.parents if p is not None):
            consumers.setdefault(id(parent), []).append(node)
            if id(parent) in downstream:
                downstream.add(id(node))
    right: dict[int, bool] = {}   # node id -> its gradient agrees with finite differences
    checked, capped = 0, False
    try:
        for node in order:        # children before parents: from the output back
            key = id(node)
            if key not in downstream:
                continue
            if node.is_leaf:
                row = worst_by_name[input_names[key]]
                analytic, numeric = row.analytic, row.numeric
            elif key not in made_by:  # gradcheck's own reduction of fn's outputs to L
                right[key] = True
                continue
            elif checked == MAX_LOCALISED_OPS:
                capped = True
                continue
            else:
                checked += 1
                direction = _unit_direction(objective.rng, node.shape)
                if direction is None:
                    continue
                numeric, _ = replayer.rates(node, direction)
                analytic = float(np.vdot(grads[key], direction)) if key in grads else 0.0
            right[key] = not _disagree(analytic, numeric, atol, rtol)
            users = consumers.get(key, [])
            if right[key] or not users or not all(right.get(id(user)) is True for user in users):
                continue
            users = [user for user in users if id(user) in made_by]
            if not users:
                return None, ("could not localise: the gradient of fn's output itself disagrees with finite "
                              "differences (is the output computed in low precision?)")
            if len(users) > 1:
                users = _wrong_consumers(replayer, node, users, atol, rtol)
            suspects = tuple(SuspectOp(u.op, u.name, u.shape, u.prov) for u in users)
            return Culprit(suspects, _receiver(node, input_names), analytic, numeric), ""
    except _ReplayDiverged as diverged:
        return None, f"could not localise: fn does not replay deterministically ({diverged})"
    if capped:
        return None, (f"could not localise: checked the {MAX_LOCALISED_OPS} ops nearest the output and "
                      "all their gradients agree; the wrong backward is further from the output")
    return None, ("could not localise: every intermediate gradient agrees with finite differences "
                  "(a kink or a non-deterministic fn can cause this)")


def _receiver(node: Node, input_names: dict[int, str]) -> str:
    if node.is_leaf:
        return f"input '{input_names[id(node)]}'"
    name = f" '{node.name}'" if node.name else ""
    return f"the output of '{node.op}'{name}{_at(node.prov)} (shape {node.shape})"
