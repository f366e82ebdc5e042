"""Gradient flow through time as numbers: ||dL/dh_t|| per step, and the spectra behind it.

Backpropagation through time multiplies the gradient by one Jacobian d s_t / d s_{t-1} per step
(s is the recurrent state: h, or (h, c) for an LSTM). When those Jacobians shrink vectors the
gradient reaching early steps vanishes; when they stretch them it explodes. ``gradient_flow``
measures the result (||dL/dh_t|| for every t); ``jacobian_spectrum`` measures the cause (the
singular values and spectral radius of each step's Jacobian and of W_hh). With matplotlib
installed (``pip install 'tinygrad_seq[plot]'``) both plot to an image.

Nothing here disturbs training: the extra backward passes keep the graph (``retain_graph``) and
every ``.grad`` they touch is put back. They do run the user's tensor hooks.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import creation, provenance
from .autograd import Node, enable_grad, no_grad, observe_backward, run_backward, topological_order
from .checks import is_integer
from .files import atomic_write, check_folder
from .nn.module import Module
from .nn.rnn import GRU, GRU_GATES, LSTM, LSTM_GATES, RNN, GRUCell, LSTMCell, RNNCell
from .provenance import Provenance
from .tensor import Tensor

# ---------------------------------------------------------------------------------------------
# Gradients at chosen nodes, without side effects


@contextmanager
def _grads_restored(tensors: Sequence[Tensor]) -> Iterator[None]:
    """Put every listed tensor's ``.grad`` back as it was when the block exits."""
    saved = [tensor.grad for tensor in tensors]
    try:
        yield
    finally:
        for tensor, grad in zip(tensors, saved, strict=True):
            tensor.grad = grad


def _check_loss(loss: Any, owner: str) -> None:
    if not isinstance(loss, Tensor):
        raise TypeError(f"{owner}: loss must be a Tensor, got {type(loss).__name__}")
    if loss._node is None:
        raise ValueError(f"{owner}: loss does not require grad, so no gradient flows from it")
    if loss.size != 1:
        raise ValueError(f"{owner}: loss must be a scalar (one element), got shape {loss.shape}")


def observed_backward(loss: Tensor, observe: Callable[[Node, np.ndarray], None], owner: str) -> None:
    """Call ``observe(node, dL/d(node))`` for every node an extra backward from ``loss`` reaches;
    the backward keeps the graph and leaves every ``.grad`` as it was, so callers can look at
    gradients without disturbing training (``owner`` names the caller in errors)."""
    _check_loss(loss, owner)
    graph = topological_order(loss._node)
    if any(node.released for node in graph):
        raise RuntimeError(f"{owner}: the graph of loss was freed by an earlier backward(); call "
                           f"{owner} before loss.backward(), or pass retain_graph=True to that backward")
    holders = [t for t in (node.tensor() for node in graph if node.tensor is not None) if t is not None]
    with _grads_restored(holders), observe_backward(observe):
        run_backward(loss._node, np.ones(loss.shape, loss.dtype), retain_graph=True)


def _gradients_at(loss: Tensor, nodes: Sequence[Node], owner: str) -> list[np.ndarray | None]:
    """dL/d(node) for each node (None where backward does not reach it), from one extra backward."""
    wanted = {id(node): index for index, node in enumerate(nodes)}
    captured: list[np.ndarray | None] = [None] * len(nodes)

    def capture(node: Node, grad: np.ndarray) -> None:
        index = wanted.get(id(node))
        if index is not None:
            captured[index] = grad

    observed_backward(loss, capture, owner)
    return captured


def _step_norms(grad: np.ndarray | None, shape: tuple, directions: int, time_axis: int | None) -> np.ndarray:
    """Norms of a gradient per direction (halves of the last dim) and, if ``time_axis``, per step."""
    if grad is None:  # backward never reached it: the gradient is zero
        grad = np.zeros(shape)
    parts = np.split(np.asarray(grad, dtype=np.float64), directions, axis=-1)
    if time_axis is None:
        return np.array([np.linalg.norm(part) for part in parts])
    moved = [np.moveaxis(part, time_axis, 0).reshape(part.shape[time_axis], -1) for part in parts]
    return np.stack([np.linalg.norm(part, axis=1) for part in moved])


StepState = tuple[Node, int | None]
"""One time step's state: (a node holding h_t, None), or (a fused layer's sequence node, t)."""


def _norms_through_time(loss: Tensor, directions: list[list[StepState | None]],
                        owner: str) -> list[np.ndarray]:
    """||dL/dh_t|| per step of each layer direction, from one extra backward: of a state node, the
    norm of its gradient; of a fused layer's step, the norm its sequence node's backward keeps while
    observed (``nn.fused.Unrolled.h_norms``: the same numbers as the composed layer's h_t)."""
    nodes = list({id(state[0]): state[0] for states in directions for state in states if state}.values())
    grads = dict(zip(map(id, nodes), _gradients_at(loss, nodes, owner), strict=True))
    norms = []
    for states in directions:
        row = []
        for state in states:
            if state is None:  # a step whose state the loss does not use
                row.append(0.0)
                continue
            node, t = state
            grad = grads[id(node)]
            if t is None:
                row.append(_step_norms(grad, node.shape, 1, None)[0])
            else:  # a fused step: the norm its sequence node kept (0 if backward never reached it)
                row.append(0.0 if grad is None else node.unrolled.h_norms[t])
        norms.append(np.array(row))
    return norms


_REARRANGING_OPS = frozenset({"transpose", "where", "cat", "squeeze", "getitem"})


def _recurrence_of(prov: Provenance) -> tuple:
    return prov.module, prov.call, prov.layer, prov.direction


def _direction_steps(node: Node) -> tuple[tuple, list[StepState]] | None:
    """((module, call, layer, direction), its per-step states in time order) if ``node`` ends one
    direction of a recurrent layer's run: the ``stack`` of its states (each input carrying its
    step), or a fused layer's sequence node."""
    prov = node.prov
    if prov is None or prov.layer is None or prov.step is not None:
        return None
    group = _recurrence_of(prov)
    if node.unrolled is not None:
        return group, [(node, t) for t in range(node.unrolled.steps)]
    if node.op != "stack":
        return None
    if not all(p is not None and p.prov is not None and p.prov.step is not None
               and _recurrence_of(p.prov) == group for p in node.parents):
        return None
    return group, [(_cell_state(p), None) for p in sorted(node.parents, key=lambda p: p.prov.step)]


def _cell_state(node: Node) -> Node:
    """The state a composed step's cell made, behind ``node``: at a masked step (variable lengths) the
    layer's state is ``where(valid, cell's, kept)``, which carries the finished sequences' states and
    their gradient through the padding; the cell's own has the gradient of the sequences running at
    the step only, as packed sequences count it (a fused layer's ``Unrolled.h_norms`` does the same)."""
    if node.op == "where" and node.parents[0] is not None and node.parents[0].prov is node.prov:
        return node.parents[0]
    return node


def _layer_states(nodes: list[Node]) -> dict[tuple, list[StepState | None]]:
    """Each recurrent layer direction's per-step states in time order, by (module, call, layer,
    direction): what a layer names ``h`` at each step (``_cell_state``), and each step of a fused
    layer's sequence node. Found whichever output the loss uses; a
    step whose h the loss does not use (an LSTM's last h, when the loss reads only c_n) is None, so
    that the steps keep their places (the steps the run made are those its ops record)."""
    found: dict[tuple, dict[int, StepState]] = {}
    steps: dict[tuple, set[int]] = {}
    for node in reversed(nodes):  # oldest first
        prov = node.prov
        if prov is not None and prov.layer is not None and prov.step is not None:
            steps.setdefault(_recurrence_of(prov), set()).add(prov.step)
        if node.unrolled is not None:
            places = [(node.unrolled.step_provenance(t), t) for t in range(node.unrolled.steps)]
        elif node.name == "h":
            places = [(prov, None)]
        else:
            continue
        for place, t in places:
            if place is not None and place.layer is not None and place.step is not None:
                found.setdefault(_recurrence_of(place), {})[place.step] = (_cell_state(node), t)
                steps.setdefault(_recurrence_of(place), set()).add(place.step)
    return {group: [found.get(group, {}).get(t) for t in sorted(group_steps)]
            for group, group_steps in steps.items()}


def _drops_steps(node: Node) -> bool:
    """A layer's slice that keeps fewer time steps than its input has: a fused layer's final state
    (h_n is its sequence node's last step, time-major like everything inside a layer), not output."""
    return node.op == "getitem" and node.shape[:1] != node.parents[0].shape[:1]


def _layer_output_steps(node: Node) -> list[tuple[tuple, list[StepState]]] | None:
    """The per-direction step states behind a recurrent layer's ``output``, forward first, or None
    if ``node`` is anything else. The output is made from the last layer's direction stacks by
    rearranging ops only (concatenating directions, masking padding, transposing), all recorded
    with the layer's module path and no time step; anything else means it is not a layer output."""
    module = node.prov.module if node.prov is not None else None
    if module is None:
        return None
    found, pending, seen = {}, [node], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        steps = _direction_steps(current)
        if steps is not None:
            found[steps[0]] = steps[1]
            continue
        prov = current.prov
        if (current.op not in _REARRANGING_OPS or prov is None or prov.module != module
                or prov.step is not None or _drops_steps(current)):
            return None
        pending.extend(parent for parent in current.parents if parent is not None)
    return sorted(found.items(), key=lambda item: item[0][3] or 0) or None


def gradient_flow(loss: Tensor, hidden_states: Tensor | Sequence[Tensor], *, directions: int = 1,
                  time_dim: int = 0) -> np.ndarray:
    """||dL/dh_t|| for every step t: shape (T,), or (directions, T) when ``directions`` > 1.

    ``hidden_states`` is either a list of per-step states (what a cell loop produces: then the
    norm is of the *total* gradient reaching h_t, through the recurrence and any direct use), or
    one stacked tensor with time along ``time_dim``. An RNN / LSTM / GRU layer's ``output`` is
    resolved, through provenance, to the per-step states of its last layer, so its norms are of
    the total gradient reaching each h_t too (in time order; ``time_dim`` is not needed). Any
    other stacked tensor is a copy made after the loop:
    its norms are of the direct dL/d state_t only. For bidirectional states the last dim is split
    into ``directions`` equal parts (forward first, as layers concatenate them).

    Call it before ``loss.backward()`` (it needs the graph). States backward does not reach get
    norm 0. Runs one extra backward; every ``.grad`` is left as it was.
    """
    owner = "gradient_flow"
    if not is_integer(directions) or directions < 1:
        raise ValueError(f"{owner}: directions must be a positive int, got {directions!r}")
    stacked = isinstance(hidden_states, Tensor)
    states = [hidden_states] if stacked else list(hidden_states)
    if not states:
        raise ValueError(f"{owner}: hidden_states is empty")
    for index, state in enumerate(states):
        where = "hidden_states" if stacked else f"hidden_states[{index}]"
        if not isinstance(state, Tensor):
            raise TypeError(f"{owner}: {where} must be a Tensor, got {type(state).__name__}")
        if state._node is None:
            raise ValueError(f"{owner}: {where} does not require grad, so it is not in the graph of loss")
        if state.ndim == 0 or state.shape[-1] % directions:
            raise ValueError(f"{owner}: {where} has shape {state.shape}; its last dim must split into "
                             f"{directions} equal direction parts")
    if stacked:
        time_axis = time_dim + hidden_states.ndim if time_dim < 0 else time_dim
        if not 0 <= time_axis < hidden_states.ndim - 1:
            raise ValueError(f"{owner}: time_dim {time_dim} is out of range for stacked states of shape "
                             f"{hidden_states.shape} (the last dim holds the features)")
    layer_steps = _layer_output_steps(hidden_states._node) if stacked else None
    if layer_steps is not None:
        if len(layer_steps) != directions:
            raise ValueError(f"{owner}: hidden_states is the output of a recurrent layer with "
                             f"{len(layer_steps)} direction(s); pass directions={len(layer_steps)}")
        norms = np.array(_norms_through_time(loss, [steps for _, steps in layer_steps], owner))
        return norms[0] if directions == 1 else norms
    grads = _gradients_at(loss, [state._node for state in states], owner)
    if stacked:
        norms = _step_norms(grads[0], hidden_states.shape, directions, time_axis)
    else:
        norms = np.stack([_step_norms(g, s.shape, directions, None) for g, s in zip(grads, states,
                                                                                    strict=True)], axis=1)
    return norms[0] if directions == 1 else norms


def layer_gradient_flow(loss: Tensor) -> dict[tuple[str | None, int, int], np.ndarray]:
    """||dL/dh_t|| through time inside every recurrent layer (RNN, LSTM, GRU) that ``loss`` uses.

    Keys are (module path, layer, direction); values have one norm per time step, in time order
    (t = 0 .. T-1, also for the reverse direction). A layer run more than once (called twice, or
    two layers with the same path) gets one key per run: "path #1", "path #2", ... in call order.
    The states are found from provenance, whether the loss uses the layer's output or only its
    final state: each step's state is named ``h`` and recorded with its layer, direction, run
    (``call``) and time step; a fused layer direction is one node that keeps each step's norm while
    observed. Same side-effect rules as gradient_flow.
    """
    owner = "layer_gradient_flow"
    _check_loss(loss, owner)
    groups = _layer_states(topological_order(loss._node))
    if not groups:
        raise ValueError(f"{owner}: loss does not depend on any recurrent layer (RNN, LSTM, GRU) output")
    names = provenance.run_names((module, call) for module, call, _, _ in groups)
    keyed = [((names[module, call], layer, direction or 0), states)
             for (module, call, layer, direction), states in groups.items()]
    ordered = sorted(keyed, key=lambda item: (str(item[0][0]), item[0][1], item[0][2]))
    norms = _norms_through_time(loss, [states for _, states in ordered], owner)
    return {name: values for (name, _), values in zip(ordered, norms, strict=True)}


# ---------------------------------------------------------------------------------------------
# Jacobian spectra


_CELL_OF_LAYER = {RNN: RNNCell, LSTM: LSTMCell, GRU: GRUCell}
_WEIGHT_BLOCKS = {RNNCell: ("hh",), LSTMCell: LSTM_GATES, GRUCell: GRU_GATES}


@dataclass(frozen=True)
class JacobianSpectrum:
    """The eigenvalue story of one recurrence, as numbers.

    singular_values: (T, S), descending, of J_t = d s_t / d s_{t-1} at each step t in time order,
        where s is the state (h, or h and c concatenated for an LSTM: S = state_count * H).
    spectral_radius: (T,), max |eigenvalue| of J_t.
    weight_singular_values / weight_spectral_radius: of W_hh's H x H block per gate ("hh" for an
        Elman RNN, i f g o for an LSTM, r z n for a GRU).
    """

    singular_values: np.ndarray
    spectral_radius: np.ndarray
    weight_singular_values: dict[str, np.ndarray]
    weight_spectral_radius: dict[str, float]
    state_names: tuple[str, ...]


def _array(value: Any) -> np.ndarray:
    return np.asarray(value.data if isinstance(value, Tensor) else value)


def _time_major(x: np.ndarray, batch_first: bool) -> np.ndarray:
    if x.ndim == 2:
        return x[:, None, :]
    return x.swapaxes(0, 1) if batch_first else x


def _recurrence(module: Module, inputs: Any, state: Any, layer: int, direction: int,
                owner: str) -> tuple[Module, np.ndarray, tuple[np.ndarray, ...] | None]:
    """(a cell computing one step, its inputs (T, B, I) in processing order, its initial state)."""
    x = _array(inputs)
    states = None if state is None else tuple(
        _array(part) for part in (state if isinstance(state, (tuple, list)) else (state,)))
    if states is not None and x.ndim in (2, 3):
        _check_state(module, x, states, owner)
    if type(module) in _WEIGHT_BLOCKS:
        if layer != 0 or direction != 0:
            raise ValueError(f"{owner}: a cell has one layer and direction, got layer={layer}, "
                             f"direction={direction}")
        if x.ndim not in (2, 3) or x.shape[-1] != module.input_size:
            raise ValueError(f"{owner}: expected inputs of shape (T, B, {module.input_size}) or "
                             f"(T, {module.input_size}) for {type(module).__name__}, got {x.shape}")
        states = None if states is None else tuple(s[None] if s.ndim == 1 else s for s in states)
        return module, _time_major(x, False), states
    if type(module) not in _CELL_OF_LAYER:
        raise TypeError(f"{owner}: expected an RNN / LSTM / GRU layer or cell, got {type(module).__name__}")
    directions = 2 if module.bidirectional else 1
    if not (0 <= layer < module.num_layers and 0 <= direction < directions):
        raise ValueError(f"{owner}: {type(module).__name__} has {module.num_layers} layer(s) and "
                         f"{directions} direction(s), got layer={layer}, direction={direction}")
    if x.ndim not in (2, 3) or x.shape[-1] != module.input_size:
        raise ValueError(f"{owner}: expected inputs of shape (T, B, {module.input_size}) (batch-first if "
                         f"the layer is) or (T, {module.input_size}), got {x.shape}")
    if layer:
        # The layers below, run by a shallow copy of the module that stops after them (in eval
        # mode: no dropout); it shares the parameters, and the original is not touched.
        below = copy.copy(module)
        object.__setattr__(below, "num_layers", layer)
        object.__setattr__(below, "training", False)
        below_state = None if states is None else tuple(Tensor(s[:layer * directions]) for s in states)
        with no_grad():
            output, _ = below(Tensor(x), None if below_state is None
                              else below_state if len(below_state) == 2 else below_state[0])
        x = output.data
    kind = _CELL_OF_LAYER[type(module)]
    extra = {"nonlinearity": module.nonlinearity} if kind is RNNCell else {}
    generator = creation.generator()
    rng_state = generator.bit_generator.state
    try:
        cell = kind(x.shape[-1], module.hidden_size, bias=module.bias, **extra)
    finally:  # the cell's own initial weights are replaced below: leave the user's random stream alone
        generator.bit_generator.state = rng_state
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):  # share the layer's, not copies
        cell.register_parameter(name, getattr(module, name + suffix, None))
    sequence = _time_major(x, module.batch_first)
    if states is not None:
        slot = layer * directions + direction
        states = tuple(s[slot][None] if s.ndim == 2 else s[slot] for s in states)
    return cell, (sequence[::-1] if direction else sequence), states


def _check_state(module: Module, x: np.ndarray, states: tuple[np.ndarray, ...], owner: str) -> None:
    """The initial state as ``module`` itself takes it (its ``_state_shape`` and count), for inputs
    ``x``: (h, c) for an LSTM, h for the others."""
    if type(module) not in _WEIGHT_BLOCKS and type(module) not in _CELL_OF_LAYER:
        return  # (not a recurrent module: _recurrence says so)
    name, count = type(module).__name__, module._state_count
    if len(states) != count:
        raise ValueError(f"{owner}: {name}'s state is {'a pair (h, c)' if count == 2 else 'one tensor h'}, "
                         f"got {len(states)} tensor(s)")
    batch = None if x.ndim == 2 else x.shape[0 if getattr(module, "batch_first", False) else 1]
    expected = module._state_shape(batch)
    for part in states:
        if part.shape != expected:
            raise ValueError(f"{owner}: expected a state of shape {expected} for {name} and inputs of shape "
                             f"{x.shape}, got {part.shape}")


def jacobian_spectrum(module: Module, inputs: Any, state: Any = None, *, layer: int = 0, direction: int = 0,
                      batch_index: int = 0) -> JacobianSpectrum:
    """Singular values and spectral radius of d s_t / d s_{t-1} along a trajectory, and of W_hh.

    module: an RNNCell / LSTMCell / GRUCell, or an RNN / LSTM / GRU layer with the ``layer`` and
        ``direction`` to study (higher layers see the outputs of the layers below, without dropout).
    inputs: the input sequence, (T, B, I) or (T, I) (a layer's ``batch_first`` applies).
    state: the initial state in the module's own format (zeros if omitted).

    Each step's Jacobian comes from one backward pass on batch element ``batch_index``, repeated
    S times with a one-hot output gradient per row. The module's ``.grad`` fields are left as
    they were; results of later steps use the module's dtype (use float64 for exact comparisons).
    """
    owner = "jacobian_spectrum"
    cell, sequence, states = _recurrence(module, inputs, state, layer, direction, owner)
    if not is_integer(batch_index) or not 0 <= batch_index < sequence.shape[1]:
        raise IndexError(f"{owner}: batch_index {batch_index} is out of range for a batch of "
                         f"{sequence.shape[1]}")
    hidden, count = cell.hidden_size, 2 if isinstance(cell, LSTMCell) else 1
    size = count * hidden
    dtype = cell.weight_hh.dtype
    if states is None:
        current = [np.zeros(hidden, dtype)] * count
    else:
        current = [np.asarray(s, dtype)[batch_index] for s in states]
    rows = np.eye(size, dtype=dtype).reshape(size, count, hidden)  # row i: d(s_t[i]) / d s_{t-1}
    jacobians = []
    with _grads_restored(list(cell.parameters())), enable_grad():
        for x_t in sequence:
            x = Tensor(np.repeat(x_t[batch_index:batch_index + 1], size, axis=0), dtype=dtype)
            previous = [Tensor(np.repeat(part[None], size, axis=0), requires_grad=True) for part in current]
            new = cell(x, tuple(previous) if count == 2 else previous[0])
            new = new if count == 2 else (new,)
            seeded = sum((part * Tensor(rows[:, k]) for k, part in enumerate(new)), Tensor(0.0, dtype=dtype))
            seeded.sum().backward()
            jacobians.append(np.concatenate([p.grad.data for p in previous], axis=1))
            current = [part.data[0] for part in new]
    if direction:  # processed from the last step back: report in time order
        jacobians.reverse()
    stacked = np.stack(jacobians).astype(np.float64)
    blocks = _WEIGHT_BLOCKS[type(cell)]
    w_hh = np.asarray(cell.weight_hh.data, dtype=np.float64)
    weights = {name: w_hh[k * hidden:(k + 1) * hidden] for k, name in enumerate(blocks)}
    return JacobianSpectrum(
        singular_values=np.linalg.svd(stacked, compute_uv=False),
        spectral_radius=np.abs(np.linalg.eigvals(stacked)).max(axis=1),
        weight_singular_values={name: np.linalg.svd(w, compute_uv=False) for name, w in weights.items()},
        weight_spectral_radius={name: float(np.abs(np.linalg.eigvals(w)).max())
                                for name, w in weights.items()},
        state_names=("h", "c") if count == 2 else ("h",),
    )


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib is optional: imported only here)


def _figure(owner: str, panels: int) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot: the user's backend is left alone)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(f"{owner} needs matplotlib, an optional extra: pip install 'tinygrad_seq[plot]' "
                          "(or pip install matplotlib)") from err
    figure = Figure(figsize=(6 * panels, 4), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _flow_series(norms: Any) -> dict[str, np.ndarray]:
    if isinstance(norms, Mapping):
        series = {}
        for key, values in norms.items():
            if isinstance(key, tuple) and len(key) == 3:
                module, layer, direction = key
                key = f"{module or ''} layer {layer} {'reverse' if direction else 'forward'}".strip()
            series[str(key)] = np.asarray(values, dtype=np.float64)
        return series
    array = np.asarray(norms, dtype=np.float64)
    if array.ndim == 1:
        return {"||dL/dh_t||": array}
    if array.ndim == 2:
        return {("forward" if d == 0 else "reverse" if array.shape[0] == 2 else f"part {d}"): row
                for d, row in enumerate(array)}
    raise ValueError(f"plot_gradient_flow: expected norms of shape (T,) or (directions, T), or a dict of "
                     f"them, got shape {array.shape}")


def plot_gradient_flow(norms: Any, path: str | Path) -> Any:
    """Plot ||dL/dh_t|| against t on a log scale to ``path`` (format from the suffix, e.g. .png).

    ``norms``: what ``gradient_flow`` or ``layer_gradient_flow`` returned. Returns the Figure.
    Zero norms (steps backward never reached) are left out of the log-scale curve.
    """
    figure = _figure("plot_gradient_flow", 1)
    axes = figure.add_subplot()
    for label, values in _flow_series(norms).items():
        axes.plot(np.arange(len(values)), np.where(values > 0, values, np.nan), marker=".", label=label)
    axes.set(yscale="log", xlabel="time step t", ylabel="||dL/dh_t||", title="gradient flow through time")
    axes.legend()
    _save_figure(figure, path, "plot_gradient_flow")
    return figure


def plot_jacobian_spectrum(spectrum: JacobianSpectrum, path: str | Path) -> Any:
    """Plot the per-step Jacobian singular values and spectral radius, and W_hh's singular values
    per gate, to ``path``; 1 is marked (above it gradients grow, below it they shrink)."""
    if not isinstance(spectrum, JacobianSpectrum):
        raise TypeError(f"plot_jacobian_spectrum: expected a JacobianSpectrum, got {type(spectrum).__name__}")
    figure = _figure("plot_jacobian_spectrum", 2)
    steps_axes, weight_axes = figure.subplots(1, 2)
    steps = np.arange(len(spectrum.spectral_radius))
    steps_axes.plot(steps, spectrum.singular_values, color="#9aa7b5", linewidth=0.8)
    steps_axes.plot(steps, spectrum.singular_values[:, 0], color="#1f5fa8", label="largest singular value")
    steps_axes.plot(steps, spectrum.spectral_radius, color="#c0392b", linestyle="--", label="spectral radius")
    steps_axes.axhline(1.0, color="black", linewidth=0.8)
    steps_axes.set(yscale="log", xlabel="time step t", title="d s_t / d s_{t-1}")
    steps_axes.legend()
    for position, (name, values) in enumerate(spectrum.weight_singular_values.items()):
        weight_axes.scatter(np.full(len(values), position), values, marker="_", s=300)
        weight_axes.scatter([position], [spectrum.weight_spectral_radius[name]], marker="x", color="#c0392b")
    names = list(spectrum.weight_singular_values)
    weight_axes.set_xticks(range(len(names)), names)
    weight_axes.axhline(1.0, color="black", linewidth=0.8)
    weight_axes.set(xlabel="gate block of W_hh", title="W_hh singular values (x: spectral radius)")
    _save_figure(figure, path, "plot_jacobian_spectrum")
    return figure


def _save_figure(figure: Any, path: str | Path, op: str) -> None:
    """``figure.savefig(path)``, written whole or not at all (``files.atomic_write``); the format from
    the suffix, as matplotlib infers it (without one: png, and ``.png`` is added to the name)."""
    path = Path(path)
    if not path.suffix:  # as matplotlib names such a file
        path = path.with_name(path.name + ".png")
    check_folder(path, op)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix.lstrip(".").lower())
    atomic_write(path, buffer.getvalue())
