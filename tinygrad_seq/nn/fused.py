"""Fused recurrent layers: one layer direction's whole sequence as ONE graph node whose forward and
BPTT are written in numpy, the layers' ``fused=True`` option.

Why: the composed layer records 2 (RNN) to 12 (GRU) small ops per time step, and on small shapes
their Python bookkeeping, not the arithmetic, is the cost. A sequence node does what a hand-written
BPTT does (``benchmarks/numpy_bptt.py``): one matmul projects every step's input, arrays are
preallocated for the sequence, each step does one matmul forward and one back, and each weight's
gradient is ONE product over all steps. The composed layers stay the reference and the default;
tests/test_fused.py checks these equal them to 1e-12 in float64 and gradchecks them.

One more thing makes the backward loop short: what does not depend on the gradient flowing back
through time, the derivatives of the gates' nonlinearities and the factors they multiply, is
computed for all steps at once before the loop (``prepare``, a few array ops over the whole
sequence), so each step is left with a handful of multiplies and its matmul.

The unrolled picture survives: the node carries an ``Unrolled`` record from which ``viz`` draws one
box per time step (op ``rnn_cell`` / ``lstm_cell`` / ``gru_cell``), and on which backward leaves each
step's gradient norms while observed (``viz.record_grad_norms``, ``diagnostics``).

Each cell class below holds its step's forward, what its backward prepares for all steps, and its
step's backward, with the arrays of the whole sequence these read; ``sequence`` runs the time loops
for all three, and calls ``prepare`` once: it overwrites arrays the forward no longer needs (the
input projection ``x_proj``), so that the prepared factors cost no memory.

Step arguments: ``x_t`` the step's input projection (B, G*H), ``before`` the state it starts from
and ``out`` where its state goes, (B, S*H) with S = 2 for an LSTM's [h, c]; backward gets ``d_out``
= dL/d(state_t), writes dL/d(x_t) and dL/d(h W_hh^T + b_hh) (``d_x_t``, ``d_hidden_t``; the same
array unless b_hh is added per step) and returns dL/d(before) through the step.

Products of two matrices are the ``ndarray.dot`` method, not ``@``: the same BLAS call and bits for
half of numpy's per-call cost (``ops.linalg._product``), which at tiny sizes is most of a step's
matmul; with ``out=`` an Elman step makes its pre-activation where its state goes. An LSTM step's
product goes into the h half of its state gradient, a strided slice, which ``.dot``'s ``out=``
refuses: there it is ``np.matmul(out=)``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np

from .. import autograd, provenance
from ..ops.elementwise import logistic_into
from ..tensor import Tensor


def _blocks(array: np.ndarray, count: int) -> tuple[np.ndarray, ...]:
    """The ``count`` equal blocks of ``array``'s last axis, as views (the array itself if one)."""
    if count == 1:  # an Elman or GRU state: no slicing
        return (array,)
    size = array.shape[-1] // count
    return tuple(array[..., k * size:(k + 1) * size] for k in range(count))


class ElmanSteps:
    """h_t = act(x_t + h_{t-1} W_hh^T), act tanh or relu (both biases are in x_t)."""

    op, sequence_op, folds_hidden_bias, has_sigmoid, state_count = "rnn_cell", "rnn_sequence", True, False, 1

    def __init__(self, nonlinearity: str) -> None:
        self.tanh = nonlinearity == "tanh"  # else relu

    def forward(self, t: int, x_t: np.ndarray, before: np.ndarray, w_hh_t: np.ndarray,
                b_hh: np.ndarray | None, out: np.ndarray) -> None:
        before.dot(w_hh_t, out=out)  # the pre-activation, made where the state goes
        out += x_t
        if self.tanh:
            np.tanh(out, out=out)
        else:
            np.maximum(out, 0, out=out)

    def prepare(self, span: slice, x_proj: np.ndarray, befores: np.ndarray, states: np.ndarray) -> None:
        """act'(pre) for the steps in ``span``, from their output (at a finished sequence's padded
        steps the state is a copy of the one before: wrong there, but those rows get no gradient)."""
        self.slope = x_proj
        slope, out = x_proj[span], states[span]
        if self.tanh:
            np.multiply(out, out, out=slope)
            np.subtract(1, slope, out=slope)
        else:
            np.less_equal(out, 0, out=slope)  # 1 where out > 0, and at nan, as the composed relu
            np.subtract(1, slope, out=slope)

    def backward(self, t: int, d_out: np.ndarray, w_hh: np.ndarray, d_x_t: np.ndarray,
                 d_hidden_t: np.ndarray) -> np.ndarray:
        np.multiply(d_out, self.slope[t], out=d_x_t)
        return d_x_t.dot(w_hh)


class LSTMSteps:
    """Gates x_t + h_{t-1} W_hh^T in blocks i, f, g, o (sigmoid, sigmoid, tanh, sigmoid);
    c_t = f c_{t-1} + i g, h_t = o tanh(c_t). The state is [h, c] (B, 2H)."""

    op, sequence_op, folds_hidden_bias, has_sigmoid, state_count = "lstm_cell", "lstm_sequence", True, True, 2

    def __init__(self, steps: int, batch: int, hidden: int, dtype: np.dtype) -> None:
        self.hidden = hidden
        self.act = np.empty((steps, batch, 4 * hidden), dtype)  # i, f, g, o after their nonlinearity
        # each gate's block for all steps, as views: i[t] costs half of act[t][:, :hidden], per use
        self.i, self.f, self.g, self.o = _blocks(self.act, 4)
        self.tanh_c = np.empty((steps, batch, hidden), dtype)

    def forward(self, t: int, x_t: np.ndarray, before: np.ndarray, w_hh_t: np.ndarray,
                b_hh: np.ndarray | None, out: np.ndarray) -> None:
        size = self.hidden
        gates = before[:, :size].dot(w_hh_t)
        gates += x_t
        logistic_into(self.act[t], gates)  # i, f, o; the g block is replaced by its tanh
        i, f, g, o = self.i[t], self.f[t], self.g[t], self.o[t]
        np.tanh(gates[:, 2 * size:3 * size], out=g)
        c = out[:, size:]
        np.multiply(f, before[:, size:], out=c)
        c += i * g
        np.multiply(o, np.tanh(c, out=self.tanh_c[t]), out=out[:, :size])

    def prepare(self, span: slice, x_proj: np.ndarray, befores: np.ndarray, states: np.ndarray) -> None:
        """For the steps in ``span``: ``dgates_ifg`` = [g i', c_{t-1} f', i g'] and ``dgates_o`` =
        tanh(c) o', by which dL/dc_t (i, f, g) and dL/dh_t (o) become the gates' gradient, and
        o tanh'(c_t), which takes dL/dh_t to c_t. They overwrite x_proj and tanh_c: afterwards
        ``tanh_c`` no longer holds tanh(c)."""
        size, tanh_c = self.hidden, self.tanh_c[span]
        i, f, g, o = (gate[span] for gate in (self.i, self.f, self.g, self.o))
        # (T, B, gate, H): a view, as ``sequence``'s x_proj is C-contiguous, so that backward reads
        # what this writes, also when it runs again after retain_graph
        blocks = x_proj.reshape(*x_proj.shape[:2], 4, size)
        self.dgates_ifg, self.dgates_o, self.o_tanh_slope = blocks[:, :, :3], blocks[:, :, 3], self.tanh_c
        for k, (factor, gate) in enumerate(((g, i), (befores[span, :, size:], f), (i, None), (tanh_c, o))):
            block = blocks[span, :, k]
            if gate is None:  # g = tanh: g' = 1 - g^2
                np.multiply(g, g, out=block)
                np.subtract(1, block, out=block)
            else:  # a sigmoid: s' = s (1 - s)
                np.subtract(1, gate, out=block)
                block *= gate
            block *= factor
        np.multiply(tanh_c, tanh_c, out=tanh_c)
        np.subtract(1, tanh_c, out=tanh_c)
        tanh_c *= o

    def backward(self, t: int, d_out: np.ndarray, w_hh: np.ndarray, d_x_t: np.ndarray,
                 d_hidden_t: np.ndarray) -> np.ndarray:
        size = self.hidden
        d_h, d_c = d_out[:, :size], d_out[:, size:]
        d_c += d_h * self.o_tanh_slope[t]  # in place: d_out keeps dL/dc_t through h_t too, for pictures
        d_gates = d_x_t.reshape(len(d_out), 4, size)
        np.multiply(self.dgates_ifg[t], d_c[:, None], out=d_gates[:, :3])  # i, f, g: by dL/dc_t
        np.multiply(self.dgates_o[t], d_h, out=d_gates[:, 3])  # o: by dL/dh_t
        d_before = np.empty_like(d_out)
        np.matmul(d_x_t, w_hh, out=d_before[:, :size])
        np.multiply(d_c, self.f[t], out=d_before[:, size:])
        return d_before


class GRUSteps:
    """With hp = h_{t-1} W_hh^T + b_hh in blocks r, z, n (x_t holds b_ih only):
    r, z = sigmoid(x_t + hp) (first two blocks), n = tanh(x_n + r * hp_n), h_t = n + z (h_{t-1} - n).
    b_hh cannot fold into x_t (r scales its n block), so the gradients of x_t and of hp differ in the
    n block: ``d_x_t`` and ``d_hidden_t``."""

    op, sequence_op, folds_hidden_bias, has_sigmoid, state_count = "gru_cell", "gru_sequence", False, True, 1

    def __init__(self, steps: int, batch: int, hidden: int, dtype: np.dtype) -> None:
        self.hidden = hidden
        self.act = np.empty((steps, batch, 3 * hidden), dtype)  # r, z, n
        self.rz, self.n = self.act[..., :2 * hidden], self.act[..., 2 * hidden:]  # views, as in LSTMSteps
        self.r, self.z = _blocks(self.rz, 2)
        self.hp_n = np.empty((steps, batch, hidden), dtype)  # h W_hn^T + b_hn, which r scales

    def forward(self, t: int, x_t: np.ndarray, before: np.ndarray, w_hh_t: np.ndarray,
                b_hh: np.ndarray | None, out: np.ndarray) -> None:
        size, hp_n, n = self.hidden, self.hp_n[t], self.n[t]
        hp = before.dot(w_hh_t)
        if b_hh is not None:
            hp += b_hh
        rz = hp[:, :2 * size]
        rz += x_t[:, :2 * size]
        logistic_into(self.rz[t], rz)
        hp_n[:] = hp[:, 2 * size:]
        np.multiply(self.r[t], hp_n, out=n)
        n += x_t[:, 2 * size:]
        np.tanh(n, out=n)
        np.subtract(before, n, out=out)
        out *= self.z[t]
        out += n

    def prepare(self, span: slice, x_proj: np.ndarray, befores: np.ndarray, states: np.ndarray) -> None:
        """For the steps in ``span``, over x_proj: [hp_n r', (h_{t-1} - n) z', (1 - z) n'], the
        factors by which dL/dn_pre (r), dL/dh_t (z) and dL/dh_t (n) become the gates' gradient."""
        r, z, n = self.r[span], self.z[span], self.n[span]
        self.factors = _blocks(x_proj, 3)
        d_r, d_z, d_n = (factor[span] for factor in self.factors)
        np.subtract(1, r, out=d_r)
        d_r *= r
        d_r *= self.hp_n[span]
        np.subtract(1, z, out=d_z)
        d_z *= z
        d_z *= befores[span] - n
        np.multiply(n, n, out=d_n)
        np.subtract(1, d_n, out=d_n)
        d_n *= 1 - z

    def backward(self, t: int, d_out: np.ndarray, w_hh: np.ndarray, d_x_t: np.ndarray,
                 d_hidden_t: np.ndarray) -> np.ndarray:
        size, (factor_r, factor_z, factor_n) = self.hidden, self.factors
        d_n_pre = d_x_t[:, 2 * size:]
        np.multiply(d_out, factor_n[t], out=d_n_pre)
        np.multiply(d_n_pre, factor_r[t], out=d_x_t[:, :size])
        np.multiply(d_out, factor_z[t], out=d_x_t[:, size:2 * size])
        d_hidden_t[:, :2 * size] = d_x_t[:, :2 * size]
        np.multiply(d_n_pre, self.r[t], out=d_hidden_t[:, 2 * size:])
        d_before = d_hidden_t.dot(w_hh)
        d_before += d_out * self.z[t]
        return d_before


Steps = ElmanSteps | LSTMSteps | GRUSteps

CHUNK_ROWS = 256
"""Backward goes through the steps in chunks of about this many rows (steps x batch): it prepares a
chunk's factors, runs its steps and adds its products to the weight gradients while the chunk's
arrays are still in cache. Measured: as fast as one pass per stage on small shapes, 5-10% faster on
large ones, and the gate gradients need a buffer for one chunk, not for the whole sequence."""


def time_order(steps: int, reverse: bool) -> range:
    """The order in which a recurrence makes its steps: t = 0 .. T-1, or T-1 .. 0 when reversed."""
    return range(steps - 1, -1, -1) if reverse else range(steps)


@dataclass
class Unrolled:
    """What a sequence node did step by step, for the pictures and diagnostics that show time steps
    (the node itself is one object in the graph). Set on ``Node.unrolled``."""

    cell_op: str  # the op one step box is drawn as
    state_name: str  # the step's state: "h", or an LSTM's "[h, c]"
    steps: int
    reverse: bool  # the recurrence runs from t = T-1 down to 0
    scope: provenance.Provenance  # the node's: module, call, layer, direction
    own_time: bool  # step t is at time t (else at the caller's step: ``nn.rnn._own_time``)
    # Norms per step, set by backward only while someone observes the walk (diagnostics,
    # viz.record_grad_norms), as the composed layer's nodes would get them: ||dL/d(state_t)|| with
    # the gradient through time (an LSTM's dL/dc_t includes its path through h_t), ||dL/dh_t|| (the
    # h part, of the sequences running at t: a finished one's carried state is not its h_t), and
    # ||dL/d(input_t)|| (None if the input needs no gradient). (T,) each: a picture needs no more,
    # and the graph keeps nothing sequence-sized.
    state_norms: np.ndarray | None = field(default=None, repr=False)
    h_norms: np.ndarray | None = field(default=None, repr=False)
    input_norms: np.ndarray | None = field(default=None, repr=False)

    @property
    def order(self) -> range:
        """The steps in the order the forward made them."""
        return time_order(self.steps, self.reverse)

    def step_provenance(self, t: int) -> provenance.Provenance:
        """Where step t was made, as the composed layer records it."""
        return self.scope.at(step=t) if self.own_time else self.scope


def sequence(cell: Steps, layer_input: Tensor, weights: tuple[Tensor | None, ...],
             initial: tuple[Tensor, ...] | None, reverse: bool, state_name: str,
             valid: np.ndarray | None = None, partial: frozenset = frozenset(),
             own_time: bool = True) -> Tensor:
    """Every step's state, (T, B, S*H), as one node: the recurrence ``cell`` over ``layer_input``
    (T, B, I) with ``weights`` (weight_ih, weight_hh, bias_ih, bias_hh; biases None if off) from
    ``initial`` ((h0,) or (h0, c0), each (B, H); None: zeros, made here rather than as the node's
    inputs). ``valid`` (T, B, 1) bool: at the ``partial`` steps a sequence whose flag is False keeps
    its state, as the composed layer's ``where`` does (variable lengths). ``own_time``: step t is drawn
    at time t (else at the caller's step, ``nn.rnn._own_time``)."""
    w_ih, w_hh, b_ih, b_hh = weights
    batch, hidden = layer_input.shape[1], w_hh.shape[1]
    steps = len(layer_input)
    # row t*B + b: step t, sequence b
    inputs = layer_input._data.reshape(steps * batch, layer_input._data.shape[2])
    w_ih_data, weight = w_ih._data, w_hh._data
    # the input projection of every step, as the composed layer's ``nn.rnn._project`` computes it
    x_proj = inputs.dot(w_ih_data.T)
    if b_ih is not None:
        x_proj += b_ih._data + b_hh._data if cell.folds_hidden_bias else b_ih._data
    x_proj = x_proj.reshape(steps, batch, x_proj.shape[1])  # (no -1: batch may be 0)
    step_bias = None if b_hh is None or cell.folds_hidden_bias else b_hh._data
    # The states in order of time, with the initial one first (last when reversed): chain[t + after]
    # is step t's state and chain[t + 1 - after] the one it starts from, so each step reads and
    # writes in place and the states every step started from are one view.
    after = 0 if reverse else 1
    chain = np.empty((steps + 1, batch, cell.state_count * hidden), x_proj.dtype)
    start = chain[steps if reverse else 0]
    if initial is None:
        start[...] = 0
    else:
        for block, tensor in zip(_blocks(start, cell.state_count), initial, strict=True):
            block[...] = tensor._data
    order = time_order(steps, reverse)
    w_hh_t = weight.T
    # a sigmoid's exp(-a) overflows for a << 0, giving the right 0 (see ops.elementwise.logistic_into);
    # this also silences such a cell's adds overflowing (float16), whose inf the nonlinearities take to
    # +-1 or 0 as in the composed layer, which warns. An Elman cell has no exp, and warns as the
    # composed layer does (np.errstate costs about a tiny step's matmul: only where it is needed).
    with np.errstate(over="ignore") if cell.has_sigmoid else contextlib.nullcontext():
        for t in order:
            cell.forward(t, x_proj[t], chain[t + 1 - after], w_hh_t, step_bias, chain[t + after])
            if t in partial:  # the sequences that are over (or not started) keep their state
                np.copyto(chain[t + after], chain[t + 1 - after], where=~valid[t])
    chain.setflags(write=False)  # backward reads it; the output's .base must not write it
    states = chain[after:after + steps]
    starts = chain[1 - after:1 - after + steps]
    # what backward needs, as arrays, shapes and flags of now (an optimizer may replace a weight's
    # array later), and no tensor: the graph must not keep the user's tensors alive
    wanted = [tensor is not None and tensor.requires_grad for tensor in (layer_input, *weights)]
    input_shape, state_inputs = layer_input.shape, initial is not None
    unrolled = Unrolled(cell.op, state_name, steps, reverse, provenance.ROOT, own_time)
    prepared = False

    def backward(g: np.ndarray) -> tuple:
        nonlocal prepared
        chunk = min(steps, max(1, CHUNK_ROWS // max(batch, 1)))  # steps per chunk
        d_x = np.empty((chunk,) + x_proj.shape[1:], x_proj.dtype)  # dL/d(x_t), for one chunk's steps
        d_hidden = d_x if cell.folds_hidden_bias else np.empty_like(d_x)  # dL/d(h_{t-1} W_hh^T + b_hh)
        sums = _InputAndWeightGrads(inputs, w_ih_data, wanted, cell.folds_hidden_bias)
        kept = np.empty_like(states) if autograd.observers else None  # each dL/d(state_t), for norms
        d_before = np.zeros(chain.shape[1:], chain.dtype)  # dL/d(state_{t-1}) through step t (forward order)
        firsts = range(0, steps, chunk)
        for first in firsts if reverse else reversed(firsts):  # the chunks in backward's order
            span = slice(first, min(first + chunk, steps))
            if not prepared:  # once: it overwrites x_proj, and backward may run again (retain_graph)
                cell.prepare(span, x_proj, starts, states)
            for t in range(span.start, span.stop) if reverse else range(span.stop - 1, first - 1, -1):
                d_state = d_before + g[t]  # dL/d(state_t): through the step after, and directly
                d_cell = np.where(valid[t], d_state, 0) if t in partial else d_state
                d_before = cell.backward(t, d_cell, weight, d_x[t - first], d_hidden[t - first])
                if t in partial:  # a sequence that kept its state passes the gradient through unchanged
                    d_before += np.where(valid[t], 0, d_state)
                if kept is not None:  # with what the cell left in d_cell: an LSTM's full dL/dc_t; at a
                    # masked step the composed layer's state is a where after the cell, whose c has no h path
                    kept[t] = d_state if t in partial else d_cell
            count = span.stop - first
            sums.add(slice(first * batch, span.stop * batch), d_x[:count], d_hidden[:count],
                     starts[span, :, :hidden])
        prepared = True
        grads = sums.result(input_shape)
        if kept is not None:
            h_parts = kept[..., :hidden] if valid is None else np.where(valid, kept[..., :hidden], 0)
            unrolled.state_norms, unrolled.h_norms = _norms(kept), _norms(h_parts)
            unrolled.input_norms = None if grads[0] is None else _norms(grads[0])
        return (*grads, *(_blocks(d_before, cell.state_count) if state_inputs else ()))

    out = Tensor.from_op(states, cell.sequence_op, (layer_input, *weights, *(initial or ())), backward)
    if out._node is not None:
        unrolled.scope = out._node.prov or provenance.ROOT
        out._node.unrolled = unrolled
    return out.named(state_name)


def _norms(per_step: np.ndarray) -> np.ndarray:
    """The norm of each step's slice of a (T, ...) array, in float64."""
    rows = per_step.reshape(len(per_step), math.prod(per_step.shape[1:]))  # (no -1: a batch may be empty)
    return np.linalg.norm(rows.astype(np.float64), axis=1)


class _InputAndWeightGrads:
    """The gradients of the layer input and of weight_ih, weight_hh, bias_ih, bias_hh (None where
    ``wanted`` says no), each summed as a few large products over chunks of steps, made while a
    chunk's factors are still in cache (``CHUNK_ROWS``), as in a hand-written BPTT. With ``folded``
    biases (both added to the input projection) bias_hh's gradient is bias_ih's: summed once."""

    def __init__(self, inputs: np.ndarray, w_ih: np.ndarray, wanted: list[bool], folded: bool) -> None:
        self.inputs, self.w_ih = inputs, w_ih
        self.copies_b_ih = folded and wanted[3] and wanted[4]
        self.wanted = wanted[:4] + [wanted[4] and not self.copies_b_ih]
        self.input = np.empty_like(inputs) if wanted[0] else None
        self.sums: list[np.ndarray | None] = [None] * 4

    def add(self, rows: slice, d_x: np.ndarray, d_hidden: np.ndarray, h_starts: np.ndarray) -> None:
        """Add the chunk of steps whose rows of the (T * B)-row input are ``rows``: ``d_x`` and
        ``d_hidden`` (steps, B, G*H) are its pre-activation gradients, ``h_starts`` (steps, B, H)
        the h each of its steps started from."""
        _, want_w_ih, want_w_hh, want_b_ih, want_b_hh = self.wanted
        d_x, d_hidden = d_x.reshape(-1, d_x.shape[-1]), d_hidden.reshape(-1, d_hidden.shape[-1])
        if self.input is not None:
            d_x.dot(self.w_ih, out=self.input[rows])  # rows of a C-contiguous array, as .dot's out= needs
        parts = (d_x.T.dot(self.inputs[rows]) if want_w_ih else None,
                 d_hidden.T.dot(h_starts.reshape(len(d_hidden), h_starts.shape[-1])) if want_w_hh else None,
                 np.add.reduce(d_x) if want_b_ih else None,
                 np.add.reduce(d_hidden) if want_b_hh else None)
        for k, part in enumerate(parts):
            if part is not None:
                if self.sums[k] is None:
                    self.sums[k] = part
                else:
                    self.sums[k] += part

    def result(self, input_shape: tuple) -> tuple:
        sums = self.sums
        if self.copies_b_ih:
            sums[3] = sums[2].copy()
        return (None if self.input is None else self.input.reshape(input_shape), *sums)
