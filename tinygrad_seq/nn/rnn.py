"""Recurrent cells (RNNCell, LSTMCell, GRUCell) and layers (RNN, LSTM, GRU), PyTorch-compatible.

Parameter names, shapes, registration order, gate order and initialisation are PyTorch's, so a
PyTorch state_dict converted to numpy loads and gives the same numbers. Everything is composed
from Tensor ops, with no hand-written backward: BPTT is the engine walking the unrolled graph.
The layers' ``fused=True`` runs each layer direction as one node with a hand-written BPTT instead
(``nn.fused``): the same numbers, one node instead of 2-12 per step, as fast as hand-written numpy.

Speed: on small shapes the per-step Python work is the cost, so a layer projects the inputs of
all time steps with one ``addmm`` (x W_ih^T + bias) per layer and direction before its loop, then
per step does one ``addmm`` for all gates (x_t's rows of the projection + h W_hh^T), one sigmoid over
the full gate block, and slices.

Provenance: every op records its layer, direction (0 forward, 1 reverse) and time step; the ops
that make one gate's value also record the gate (a name from ``LSTM_GATES`` / ``GRU_GATES``).
Full-width ops (the pre-activation sum, the shared sigmoid) and the state updates carry the step
but no gate. Each step's new state is named ``h`` (and ``c``), so pictures label it h_t, c_t; a
fused LSTM's state [h_t, c_t] (one tensor per step in its pictures) is named ``FUSED_LSTM_STATE``.

Variable lengths: ``lengths=`` gives PyTorch's packed-sequence results on a padded batch. Each
step updates the state only where ``t < length`` (``where``), so the forward direction freezes a
sequence's state after its last step and the reverse direction starts at its last valid element.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .. import autograd, provenance
from ..ops.elementwise import addcmul, mul, relu, tanh, where
from ..ops.linalg import addmm
from ..ops.shape import cat, catted, getitem, stacked
from ..tensor import Tensor
from . import fused, init
from .layers import check_probability, check_size, dropout
from .module import Module, Parameter
from .utils.rnn import check_lengths, length_mask

LSTM_GATES = ("i", "f", "g", "o")
"""LSTM gate order: rows [k*H:(k+1)*H] of weight_ih / weight_hh / the biases belong to gate k
(input, forget, cell candidate, output), as in PyTorch."""

GRU_GATES = ("r", "z", "n")
"""GRU gate order: reset, update, new (candidate), as in PyTorch."""

FUSED_LSTM_STATE = "[h, c]"
"""The name of a fused LSTM's state per step: h_t in the first half of its last dim, c_t in the
second (pictures label its step-to-step edges with it)."""

NONLINEARITIES = {"tanh": tanh, "relu": relu}
"""The activations an Elman RNN accepts (``nonlinearity=``)."""

State = tuple[Tensor, ...]  # (h,) for RNN and GRU, (h, c) for LSTM


# -- one time step, shared by the cells and the layers (mixed into both) -------------------------


def _project(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """x W_ih^T + b_ih, plus b_hh when it can be added before the recurrence (RNN, LSTM)."""
    if b_ih is None:
        return x @ w_ih.T
    return addmm(b_ih if b_hh is None else b_ih + b_hh, x, w_ih.T)


class _ElmanMath:
    """What RNN and RNNCell share: one gate block, state (h,), both biases folded into x_proj.

    Each ``_step`` makes the new state from x_proj's ``rows`` (the step's input projection; all of
    x_proj if None), the state and W_hh^T, and writes its h into ``into`` if given
    (``_RNNBase._run_direction``)."""

    _gate_count, _state_count, _folds_hidden_bias = 1, fused.ElmanSteps.state_count, True
    nonlinearity: str

    def _step(self, x_proj: Tensor, rows: slice | None, state: State, w_hh_t: Tensor, b_hh: Tensor | None,
              here: provenance.Provenance, into: np.ndarray | None = None) -> State:
        return (NONLINEARITIES[self.nonlinearity](addmm(x_proj, state[0], w_hh_t, rows=rows),
                                                  into=into).named("h"),)

    def _fused_steps(self, steps: int, batch: int, dtype: np.dtype) -> fused.Steps:
        return fused.ElmanSteps(self.nonlinearity)


class _LSTMMath:
    """What LSTM and LSTMCell share: four gate blocks, state (h, c), both biases folded."""

    _gate_count, _state_count, _folds_hidden_bias = 4, fused.LSTMSteps.state_count, True

    def _step(self, x_proj: Tensor, rows: slice | None, state: State, w_hh_t: Tensor, b_hh: Tensor | None,
              here: provenance.Provenance, into: np.ndarray | None = None) -> State:
        h, c = state
        size = h.shape[-1]
        gates = addmm(x_proj, h, w_hh_t, rows=rows)
        squashed = gates.sigmoid()  # i, f, o: one op over the block beats three (g's quarter goes unused)
        provenance.current = here.at(gate="i")
        i = squashed.narrow(1, 0, size)
        provenance.current = here.at(gate="f")
        f = squashed.narrow(1, size, size)
        provenance.current = here.at(gate="g")
        g = gates.narrow(1, 2 * size, size).tanh()
        provenance.current = here.at(gate="o")
        o = squashed.narrow(1, 3 * size, size)
        provenance.current = here
        c = addcmul(f * c, i, g).named("c")  # f * c + i * g
        return mul(o, c.tanh(), into=into).named("h"), c  # h = o * tanh(c)

    def _fused_steps(self, steps: int, batch: int, dtype: np.dtype) -> fused.Steps:
        return fused.LSTMSteps(steps, batch, self.hidden_size, dtype)


class _GRUMath:
    """What GRU and GRUCell share: three gate blocks, state (h,), b_hh added per step (r scales
    W_hn h + b_hn, so b_hn cannot be folded into the input projection)."""

    _gate_count, _state_count, _folds_hidden_bias = 3, fused.GRUSteps.state_count, False

    def _step(self, x_proj: Tensor, rows: slice | None, state: State, w_hh_t: Tensor, b_hh: Tensor | None,
              here: provenance.Provenance, into: np.ndarray | None = None) -> State:
        (h,) = state
        size = h.shape[-1]
        if rows is not None:  # a slice node here: x_proj feeds two ops, so no one op can read its rows
            x_proj = x_proj[rows]
        h_proj = h @ w_hh_t if b_hh is None else addmm(b_hh, h, w_hh_t)
        squashed = (x_proj + h_proj).sigmoid()  # r, z (n's third goes unused)
        provenance.current = here.at(gate="r")
        r = squashed.narrow(1, 0, size)
        provenance.current = here.at(gate="z")
        z = squashed.narrow(1, size, size)
        provenance.current = here.at(gate="n")
        x_n, h_n = x_proj.narrow(1, 2 * size, size), h_proj.narrow(1, 2 * size, size)
        n = addcmul(x_n, r, h_n).tanh()  # x_n + r * h_n
        provenance.current = here
        return (addcmul(n, z, h - n, into=into).named("h"),)  # h = n + z * (h - n)

    def _fused_steps(self, steps: int, batch: int, dtype: np.dtype) -> fused.Steps:
        return fused.GRUSteps(steps, batch, self.hidden_size, dtype)


# -- argument checks shared by cells and layers ----------------------------------------------------


def _check_dtype(tensor: Tensor, name: str, dtype: np.dtype, owner: str) -> None:
    """As PyTorch: a recurrent module computes in its parameters' dtype and never silently
    promotes a float32 model to float64 (or truncates float64 data to float32)."""
    if tensor.dtype != dtype:
        raise TypeError(f"{owner} expected {name} of dtype {dtype} (its parameters' dtype), got "
                        f"{tensor.dtype}; convert one: {name}.to({dtype}) or module.to({tensor.dtype})")


def _check_input(input: Any, ranks: tuple[int, int], input_size: int, dtype: np.dtype, owner: str) -> Tensor:
    """``input`` must be a Tensor of rank ranks[0] (unbatched) or ranks[1] (batched) ending in
    ``input_size`` features, in the module's ``dtype``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{owner} expected a Tensor input, got {type(input).__name__}")
    _check_dtype(input, "input", dtype, owner)
    if input.ndim not in ranks:
        raise ValueError(f"{owner} expected input of {ranks[0]} dims (unbatched) or {ranks[1]} dims "
                         f"(batched), got shape {input.shape}")
    if input.shape[-1] != input_size:
        raise ValueError(f"{owner} expected input of size {input_size} in the last dimension, "
                         f"got {input.shape[-1]}")
    return input


def _parameter_dtype(module: Module, owner: str) -> np.dtype:
    """The one dtype of a layer's parameters, in which it computes. As in PyTorch, a mix (one
    given a float64 array through ``.data``, say) is refused: both paths write the states into
    buffers of one dtype."""
    params = iter(module._parameters.items())
    _, first = next(params)
    dtype = first._data.dtype
    for name, param in params:
        # `is` first: numpy's builtin dtypes are singletons, and `!=` costs several times as much
        if param._data.dtype is not dtype and param._data.dtype != dtype:
            raise TypeError(f"{owner}: parameter {name} is {param.dtype} but weight_ih_l0 is {dtype}; "
                            "a recurrent layer computes in one dtype: convert them, e.g. "
                            f"module.to({dtype})")
    return dtype


def _unpack_state(hx: Any, count: int, names: tuple[str, str], expected: tuple, layout: str, dtype: np.dtype,
                  owner: str) -> State | None:
    """The initial state as a tuple of ``count`` tensors of shape ``expected`` (None if not given);
    LSTMs take a pair (h, c), the others one tensor. ``layout`` explains ``expected`` in errors."""
    if hx is None:
        return None
    if count == 2:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"{owner} expected the state as a pair ({names[0]}, {names[1]}), "
                            f"got {type(hx).__name__}")
        state = tuple(hx)
    else:
        state = (hx,)
    for name, tensor in zip(names[:count], state, strict=True):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{owner} expected {name} to be a Tensor, got {type(tensor).__name__}")
        if tensor.shape != expected:
            raise ValueError(f"{owner} expected {name} of shape {expected} {layout}, got {tensor.shape}")
        _check_dtype(tensor, name, dtype, owner)
    return state


def _own_time(caller: provenance.Provenance, steps: int) -> bool:
    """Whether a layer's run numbers its own time steps (and is one ``call``): not when it takes a
    single step inside the caller's ``scope(step=t)`` (a decoder stepping a layer token by token),
    where the caller's t is the time step and the caller's calls are one recurrence."""
    return caller.step is None or steps > 1


def _zeros(shape: tuple, like: Tensor) -> Tensor:
    """Zeros in ``like``'s dtype (inputs and states are checked to be in the parameters' dtype)."""
    return Tensor.constant(np.zeros(shape, like.dtype))


def _uniform_parameter(shape: tuple, bound: float) -> Parameter:
    return init.uniform_(Parameter(np.empty(shape, np.float32)), -bound, bound)


# -- cells ------------------------------------------------------------------------------------------


class _CellBase(Module):
    """One time step: weight_ih (G*H, I), weight_hh (G*H, H), bias_ih and bias_hh (G*H,), all
    initialised U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch (G gate blocks of H rows each)."""

    _gate_count: int
    _state_count: int
    _folds_hidden_bias: bool

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        owner = type(self).__name__
        self.input_size = check_size(input_size, "input_size", owner, minimum=1)
        self.hidden_size = check_size(hidden_size, "hidden_size", owner, minimum=1)
        self.bias = bool(bias)
        rows, bound = self._gate_count * self.hidden_size, 1.0 / math.sqrt(self.hidden_size)
        self.weight_ih = _uniform_parameter((rows, self.input_size), bound)
        self.weight_hh = _uniform_parameter((rows, self.hidden_size), bound)
        for name in ("bias_ih", "bias_hh"):
            self.register_parameter(name, _uniform_parameter((rows,), bound) if bias else None)

    def _state_shape(self, batch: int | None) -> tuple[int, ...]:
        """The shape of each tensor of the state this cell takes, for a batch (None: unbatched)."""
        return (self.hidden_size,) if batch is None else (batch, self.hidden_size)

    def forward(self, input: Tensor, hx: Any = None) -> Any:
        owner = type(self).__name__
        x = _check_input(input, (1, 2), self.input_size, self.weight_ih.dtype, owner)
        unbatched = x.ndim == 1
        if unbatched:
            x = x.unsqueeze(0)
        expected = self._state_shape(None if unbatched else x.shape[0])
        state = _unpack_state(hx, self._state_count, ("hx", "cx"), expected,
                              "(hidden_size,) for unbatched input" if unbatched else "(batch, hidden_size)",
                              self.weight_ih.dtype, owner)
        if state is None:
            state = (_zeros((x.shape[0], self.hidden_size), x),) * self._state_count
        elif unbatched:
            state = tuple(s.unsqueeze(0) for s in state)
        fold = self._folds_hidden_bias
        x_proj = _project(x, self.weight_ih, self.bias_ih, self.bias_hh if fold else None)
        state = self._step(x_proj, None, state, self.weight_hh.T, None if fold else self.bias_hh,
                           provenance.current or provenance.ROOT)
        if unbatched:
            state = tuple(s.squeeze(0) for s in state)
        return state if self._state_count == 2 else state[0]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_ElmanMath, _CellBase):
    """Elman cell: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act = tanh or relu.

    ``cell(x, h=None) -> h'``; x is (B, input_size) or unbatched (input_size,), h (B, H) or (H,)
    (zeros if omitted).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh") -> None:
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNNCell: unknown nonlinearity {nonlinearity!r}; expected 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        activation = "" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity}"
        return super().extra_repr() + activation


class LSTMCell(_LSTMMath, _CellBase):
    """LSTM cell, gates in ``LSTM_GATES`` order (i, f, g, o):

        i  = sigmoid(x W_ii^T + b_ii + h W_hi^T + b_hi)
        f  = sigmoid(x W_if^T + b_if + h W_hf^T + b_hf)
        g  = tanh(x W_ig^T + b_ig + h W_hg^T + b_hg)
        o  = sigmoid(x W_io^T + b_io + h W_ho^T + b_ho)
        c' = f * c + i * g
        h' = o * tanh(c')

    ``cell(x, (h, c)=None) -> (h', c')``; shapes as RNNCell's.
    """


class GRUCell(_GRUMath, _CellBase):
    """GRU cell, gates in ``GRU_GATES`` order (r, z, n):

        r  = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
        z  = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
        n  = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
        h' = (1 - z) * n + z * h

    ``cell(x, h=None) -> h'``; shapes as RNNCell's.
    """


# -- layers -----------------------------------------------------------------------------------------


class _RNNBase(Module):
    """A stack of ``num_layers`` recurrent layers, each optionally bidirectional.

    Parameters per layer k and direction, registered in PyTorch's order: weight_ih_l{k},
    weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}, then the same with suffix ``_reverse``.
    Layer 0 reads ``input_size`` features, later layers the ``num_directions * hidden_size``
    outputs of the layer below (with ``dropout`` applied between layers while training).

    ``forward(input, hx=None, lengths=None)``: input (T, B, input_size), (B, T, input_size) with
    ``batch_first``, or unbatched (T, input_size). The state is (num_layers * num_directions, B, H),
    never batch-first ((layers * directions, H) when unbatched); zeros if omitted. Returns
    ``output`` (T, B, num_directions * H) (batch-first if asked) and the final state. ``lengths``
    (one per sequence, any order, 1..T) makes the result equal PyTorch's
    pack_padded_sequence(enforce_sorted=False) -> layer -> pad_packed_sequence(total_length=T):
    outputs past a sequence's length are zero and its final state comes from its own last step.

    ``fused=True`` runs each layer direction as one graph node with a hand-written forward and
    BPTT (``nn.fused``): the same results (to rounding), at about the speed of hand-written numpy
    (README, Performance). Pictures still draw one box per time step and gradient-flow diagnostics
    still see every h_t; the default, composed graph is the reference, and its picture shows every
    gate op.
    """

    _gate_count: int
    _state_count: int
    _folds_hidden_bias: bool

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 fused: bool = False) -> None:
        super().__init__()
        owner = type(self).__name__
        self.input_size = check_size(input_size, "input_size", owner, minimum=1)
        self.hidden_size = check_size(hidden_size, "hidden_size", owner, minimum=1)
        self.num_layers = check_size(num_layers, "num_layers", owner, minimum=1)
        check_probability(dropout, owner)
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{owner}: dropout option adds dropout after all but last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got dropout={dropout} "
                          f"and num_layers={num_layers}", UserWarning, stacklevel=2)
        self.bias, self.batch_first = bool(bias), bool(batch_first)
        self.dropout, self.bidirectional = float(dropout), bool(bidirectional)
        self.fused = bool(fused)
        self._directions = 2 if bidirectional else 1
        rows, bound = self._gate_count * self.hidden_size, 1.0 / math.sqrt(self.hidden_size)
        self._weight_names = {}
        for layer in range(self.num_layers):
            features = self.input_size if layer == 0 else self._directions * self.hidden_size
            for direction in range(self._directions):
                names = [f"{kind}_l{layer}{'_reverse' if direction else ''}"
                         for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                shapes = [(rows, features), (rows, self.hidden_size), (rows,), (rows,)]
                count = 4 if bias else 2
                for name, shape in zip(names[:count], shapes[:count], strict=True):
                    setattr(self, name, _uniform_parameter(shape, bound))
                self._weight_names[layer, direction] = names

    def _weights(self, layer: int, direction: int) -> tuple[Tensor | None, ...]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of one layer and direction (biases None if off)."""
        return tuple(getattr(self, name, None) for name in self._weight_names[layer, direction])

    def _state_shape(self, batch: int | None) -> tuple[int, ...]:
        """The shape of each tensor of the state (h0, c0) this layer takes, for a batch (None:
        unbatched): one slot per layer and direction, never batch-first."""
        slots = self.num_layers * self._directions
        return (slots, self.hidden_size) if batch is None else (slots, batch, self.hidden_size)

    def forward(self, input: Tensor, hx: Any = None, lengths: Any = None) -> tuple[Tensor, Any]:
        owner = type(self).__name__
        dtype = _parameter_dtype(self, owner)
        x = _check_input(input, (2, 3), self.input_size, dtype, owner)
        unbatched = x.ndim == 2
        if unbatched:
            if lengths is not None:
                raise ValueError(f"{owner}: lengths need batched (3-D) input, got unbatched input of "
                                 f"shape {x.shape}")
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError(f"{owner} expected a sequence of at least one time step, got input of shape "
                             f"{input.shape}")
        expected = self._state_shape(None if unbatched else batch)
        if unbatched:
            layout = "(num_layers * num_directions, hidden_size)"
        else:
            layout = ("(num_layers * num_directions, batch, hidden_size)"
                      + (", not batch-first even with batch_first=True" if self.batch_first else ""))
        state = _unpack_state(hx, self._state_count, ("h0", "c0"), expected, layout, dtype, owner)
        if state is not None and unbatched:
            state = tuple(s.unsqueeze(1) for s in state)

        run_steps, valid, partial = steps, None, frozenset()
        if lengths is not None:
            lengths = check_lengths(lengths, batch, steps, owner)
            run_steps = int(lengths.max())  # later steps are padding for every sequence
            if run_steps < steps:
                x = x[:run_steps]
            partial = frozenset(range(int(lengths.min()), run_steps))
            if partial:
                valid = length_mask(lengths, run_steps).data[:, :, None]  # (T, B, 1)
                x = where(valid, x, 0.0)  # padding values (even nan) never enter the arithmetic

        outer = provenance.current  # scope(call=...)'s work, without its generic field handling
        caller = outer or provenance.ROOT
        own_time = _own_time(caller, run_steps)
        if own_time:
            provenance.current = caller.at(call=next(provenance.calls))
        try:
            output, finals = self._run_layers(x, state, run_steps, batch, valid, partial, own_time)
        finally:
            provenance.current = outer
        if partial:
            output = where(valid, output, 0.0)
        if run_steps < steps:
            output = cat([output, _zeros((steps - run_steps,) + output.shape[1:], output)])
        final_state = tuple(parts[0] if len(parts) == 1 else cat(list(parts))
                            for parts in zip(*finals, strict=True))
        if unbatched:
            output = output.squeeze(1)
            final_state = tuple(s.squeeze(1) for s in final_state)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, (final_state if self._state_count == 2 else final_state[0])

    def _run_layers(self, x: Tensor, state: State | None, steps: int, batch: int, valid: np.ndarray | None,
                    partial: frozenset, own_time: bool) -> tuple[Tensor, list[State]]:
        """All layers on time-major x (T, B, I): the last layer's output and each slot's final state
        (each tensor (1, B, H), so that the slots join into h_n with one ``cat``)."""
        layer_input = self._layer_input(x)
        run = provenance.current
        zeros = None
        finals: list[State] = []
        size = self.hidden_size
        for layer in range(self.num_layers):
            # The layer's output (T, B, directions * H): composed directions write their steps' states
            # into their part of it (``_run_direction``), so that joining them copies nothing either.
            joined = None if self.fused else np.empty((steps, batch, self._directions * size), x.dtype)
            outputs, parts = [], []
            for direction in range(self._directions):
                slot = layer * self._directions + direction
                if state is not None:
                    initial = tuple(s[slot] for s in state)
                elif self.fused:  # a sequence node starts from zeros without them as inputs
                    initial = None
                else:
                    if zeros is None:
                        zeros = _zeros((batch, size), x)
                    initial = (zeros,) * self._state_count
                rows = joined
                if joined is not None and self._directions == 2:
                    rows = joined[..., direction * size:(direction + 1) * size]
                parts.append(rows)
                provenance.current = run.at(layer=layer, direction=direction)
                output, final = self._run_direction(layer_input, initial, layer, direction, steps, batch,
                                                    valid, partial, own_time, rows)
                provenance.current = run  # (on an error, forward restores the caller's)
                outputs.append(output)
                finals.append(final)
            if len(outputs) == 1:
                output = outputs[0]
            elif all(out._data is part for out, part in zip(outputs, parts, strict=True)):
                output = catted(outputs, joined, 2)
            else:  # fused directions, or a tap (gradcheck's) replaced a direction's output
                output = cat(outputs, dim=2)
            if layer + 1 < self.num_layers:
                output = dropout(output, self.dropout, self.training)
                layer_input = self._layer_input(output)
        return output, finals

    def _layer_input(self, x: Tensor) -> Tensor:
        """A layer's input (T, B, features) as its directions take it: the composed steps read rows
        t*B:(t+1)*B of one (T * B, features) projection; a fused sequence takes x as it is."""
        return x if self.fused else x.reshape(x.shape[0] * x.shape[1], x.shape[2])

    def _run_direction(self, layer_input: Tensor, state: State | None, layer: int, direction: int, steps: int,
                       batch: int, valid: np.ndarray | None, partial: frozenset, own_time: bool,
                       rows: np.ndarray | None) -> tuple[Tensor, State]:
        """One layer in one direction: outputs (T, B, H) and the final state ((1, B, H) each).
        ``layer_input`` is ``_layer_input``'s, so one addmm projects every step. Steps record their t,
        unless this is one step of the caller's time loop (``_own_time``). The composed steps write
        the outputs into ``rows`` (T, B, H), their part of the layer's output. ``state`` is None
        (zeros) only for a fused layer (``_run_layers``)."""
        if self.fused:
            return self._run_fused(layer_input, state, layer, direction, steps, batch, valid, partial,
                                   own_time)
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, direction)
        fold = self._folds_hidden_bias
        x_proj = _project(layer_input, w_ih, b_ih, b_hh if fold else None)
        b_step = None if fold else b_hh
        w_hh_t = w_hh.T
        scope = provenance.current
        outputs: list[Tensor | None] = [None] * steps
        # Each step writes its h into its row (``into``), so that stacking them copies nothing,
        # except the last step, whose h is its own array: a final state carried on (as across TBPTT
        # windows) then does not keep the whole output alive. A masked step's h is made by ``where``,
        # and while a tap (gradcheck's) may replace what an op made after the op saved it for
        # backward, no step writes into its row; those h are copied in afterwards.
        last = 0 if direction else steps - 1
        write = autograd.state.tap is None
        handed: list[np.ndarray | None] = [None] * steps  # the row each step was handed, if any
        for t in fused.time_order(steps, bool(direction)):
            here = provenance.current = scope.at(step=t if own_time else None)
            into = handed[t] = rows[t] if write and t != last and t not in partial else None
            step_rows = slice(t * batch, (t + 1) * batch)
            new_state = self._step(x_proj, step_rows, state, w_hh_t, b_step, here, into)
            if t in partial:  # some sequences are over (forward) or not yet started (reverse) at t
                new_state = tuple(where(valid[t], new, old).named(new.name)
                                  for new, old in zip(new_state, state, strict=True))
            state = new_state
            outputs[t] = state[0]
        provenance.current = scope
        for t, h in enumerate(outputs):
            if h._data is not handed[t]:
                rows[t] = h._data
        return stacked(outputs, rows), tuple(s.unsqueeze(0) for s in state)

    def _run_fused(self, layer_input: Tensor, state: State | None, layer: int, direction: int, steps: int,
                   batch: int, valid: np.ndarray | None, partial: frozenset,
                   own_time: bool) -> tuple[Tensor, State]:
        """``_run_direction`` as one sequence node (``nn.fused``): outputs (T, B, H) and the final
        state, sliced out of the node's every-step states (h, or an LSTM's [h, c]): one op each.
        ``state`` None: the sequence node starts from zeros it writes itself."""
        cell = self._fused_steps(steps, batch, layer_input.dtype)
        name = FUSED_LSTM_STATE if self._state_count == 2 else "h"
        states = fused.sequence(cell, layer_input, self._weights(layer, direction), state, bool(direction),
                                name, valid, partial, own_time)
        # copies: a final state carried on (as across TBPTT windows) must not keep the whole sequence's
        # buffer alive, as a view would (a slice, not a list index: fancy indexing costs twice as much)
        last = slice(0, 1) if direction else slice(steps - 1, steps)
        if self._state_count == 1:
            return states, (getitem(states, last, copy=True),)
        size = self.hidden_size
        return states[..., :size], (getitem(states, (last, slice(None), slice(size)), copy=True),
                                    getitem(states, (last, slice(None), slice(size, None)), copy=True))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.fused:
            s += ", fused=True"
        return s


class RNN(_ElmanMath, _RNNBase):
    """Elman RNN layers: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu.

    ``rnn(input, h0=None, lengths=None) -> (output, h_n)``; see ``_RNNBase`` for shapes.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, fused: bool = False) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r}; expected 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         fused)
        self.nonlinearity = nonlinearity


class LSTM(_LSTMMath, _RNNBase):
    """LSTM layers; each step is LSTMCell's equations (gates ``LSTM_GATES``: i, f, g, o).

    ``lstm(input, (h0, c0)=None, lengths=None) -> (output, (h_n, c_n))``; see ``_RNNBase``.
    """


class GRU(_GRUMath, _RNNBase):
    """GRU layers; each step is GRUCell's equations (gates ``GRU_GATES``: r, z, n).

    ``gru(input, h0=None, lengths=None) -> (output, h_n)``; see ``_RNNBase``.
    """
