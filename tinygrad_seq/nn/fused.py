"""Fused recurrent layers: one layer direction's whole sequence as ONE graph node whose forward and
BPTT are written in numpy, the layers' ``fused=True`` option.

Why: the composed layer records 4 (RNN) to 14 (LSTM) small ops per time step, and on small shapes
their Python bookkeeping, not the arithmetic, is the cost. A sequence node does what a hand-written
BPTT does (``benchmarks/numpy_bptt.py``): arrays preallocated for the sequence, one matmul per step
forward and one back, and W_hh's gradient as ONE product over all steps. The composed layers stay the
reference and the default; tests/test_fused.py checks these equal them to 1e-12 in float64 and
gradchecks them.

The unrolled picture survives: the node carries an ``Unrolled`` record from which ``viz`` draws one
box per time step (op ``rnn_cell`` / ``lstm_cell`` / ``gru_cell``) and ``diagnostics`` read each
step's dL/dh_t.

Conventions:

- ``x_proj`` (T * B, G * H) is the layer's input projection of every step (``nn.rnn._project``);
  rows t*B:(t+1)*B are step t. ``w_hh`` is weight_hh itself, (G * H, H).
- The node's value is every step's state, (T, B, S * H): h_t, or for an LSTM [h_t, c_t] (S = 2).
- Each cell class below holds its forward step next to its backward step, and the arrays of the
  whole sequence that its backward reads; ``sequence`` runs the time loop for all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import autograd, provenance
from ..ops.elementwise import logistic
from ..tensor import Tensor


class ElmanSteps:
    """h_t = act(x_proj_t + h_{t-1} W_hh^T), act tanh or relu (both biases are in x_proj)."""

    op, sequence_op, state_count, folds_hidden_bias = "rnn_cell", "rnn_sequence", 1, True

    def __init__(self, nonlinearity: str) -> None:
        self.tanh = nonlinearity == "tanh"  # else relu; the derivative reads the output either way

    def forward(self, t: int, x_t: np.ndarray, h: np.ndarray, w_hh_t: np.ndarray, b_hh: np.ndarray | None,
                out: np.ndarray) -> None:
        pre = x_t + h @ w_hh_t
        if self.tanh:
            np.tanh(pre, out=out)
        else:
            np.maximum(pre, 0, out=out)

    def backward(self, t: int, d_out: np.ndarray, h: np.ndarray, out: np.ndarray, w_hh: np.ndarray,
                 d_x_t: np.ndarray, d_hidden_t: np.ndarray) -> np.ndarray:
        np.multiply(d_out, 1 - out * out if self.tanh else out > 0, out=d_x_t)
        return d_x_t @ w_hh


class LSTMSteps:
    """Gates x_proj_t + h_{t-1} W_hh^T in blocks i, f, g, o (sigmoid, sigmoid, tanh, sigmoid);
    c_t = f c_{t-1} + i g, h_t = o tanh(c_t). The state is [h, c] (B, 2H)."""

    op, sequence_op, state_count, folds_hidden_bias = "lstm_cell", "lstm_sequence", 2, True

    def __init__(self, steps: int, batch: int, hidden: int, dtype: np.dtype) -> None:
        self.hidden = hidden
        self.act = np.empty((steps, batch, 4 * hidden), dtype)  # i, f, g, o after their nonlinearity
        self.tanh_c = np.empty((steps, batch, hidden), dtype)

    def forward(self, t: int, x_t: np.ndarray, hc: np.ndarray, w_hh_t: np.ndarray, b_hh: np.ndarray | None,
                out: np.ndarray) -> None:
        size = self.hidden
        gates = x_t + hc[:, :size] @ w_hh_t
        act = self.act[t]
        act[:] = logistic(gates)  # i, f, o; the g block is replaced by its tanh
        np.tanh(gates[:, 2 * size:3 * size], out=act[:, 2 * size:3 * size])
        i, f, g, o = (act[:, k * size:(k + 1) * size] for k in range(4))
        c = out[:, size:]
        np.add(f * hc[:, size:], i * g, out=c)
        np.multiply(o, np.tanh(c, out=self.tanh_c[t]), out=out[:, :size])

    def backward(self, t: int, d_hc: np.ndarray, hc: np.ndarray, out: np.ndarray, w_hh: np.ndarray,
                 d_x_t: np.ndarray, d_hidden_t: np.ndarray) -> np.ndarray:
        size = self.hidden
        i, f, g, o = (self.act[t, :, k * size:(k + 1) * size] for k in range(4))
        tanh_c = self.tanh_c[t]
        d_h, d_c = d_hc[:, :size], d_hc[:, size:]
        d_c += d_h * o * (1 - tanh_c * tanh_c)  # in place: d_hc keeps dL/dc_t through h_t too, for pictures
        d_x_t[:, :size] = d_c * g * (1 - i) * i
        d_x_t[:, size:2 * size] = d_c * hc[:, size:] * (1 - f) * f
        d_x_t[:, 2 * size:3 * size] = d_c * i * (1 - g * g)
        d_x_t[:, 3 * size:] = d_h * tanh_c * (1 - o) * o
        return np.concatenate([d_x_t @ w_hh, d_c * f], axis=1)


class GRUSteps:
    """With hp = h_{t-1} W_hh^T + b_hh in blocks r, z, n (x_proj holds b_ih only):
    r, z = sigmoid(x_proj_t + hp) (first two blocks), n = tanh(x_n + r * hp_n), h_t = n + z (h_{t-1} - n).
    b_hh cannot fold into x_proj (r scales its n block), so the gradients of x_proj and of hp differ
    in the n block: ``d_x_t`` and ``d_hidden_t``."""

    op, sequence_op, state_count, folds_hidden_bias = "gru_cell", "gru_sequence", 1, False

    def __init__(self, steps: int, batch: int, hidden: int, dtype: np.dtype) -> None:
        self.hidden = hidden
        self.act = np.empty((steps, batch, 3 * hidden), dtype)  # r, z, n
        self.hp_n = np.empty((steps, batch, hidden), dtype)  # h W_hn^T + b_hn, which r scales

    def forward(self, t: int, x_t: np.ndarray, h: np.ndarray, w_hh_t: np.ndarray, b_hh: np.ndarray | None,
                out: np.ndarray) -> None:
        size = self.hidden
        hp = h @ w_hh_t
        if b_hh is not None:
            hp += b_hh
        act = self.act[t]
        act[:, :2 * size] = logistic(x_t[:, :2 * size] + hp[:, :2 * size])
        r, z = act[:, :size], act[:, size:2 * size]
        hp_n = self.hp_n[t]
        hp_n[:] = hp[:, 2 * size:]
        n = np.tanh(x_t[:, 2 * size:] + r * hp_n, out=act[:, 2 * size:])
        np.add(n, z * (h - n), out=out)

    def backward(self, t: int, d_out: np.ndarray, h: np.ndarray, out: np.ndarray, w_hh: np.ndarray,
                 d_x_t: np.ndarray, d_hidden_t: np.ndarray) -> np.ndarray:
        size = self.hidden
        r, z, n = (self.act[t, :, k * size:(k + 1) * size] for k in range(3))
        d_n_pre = d_out * (1 - z) * (1 - n * n)
        d_x_t[:, :size] = d_n_pre * self.hp_n[t] * (1 - r) * r
        d_x_t[:, size:2 * size] = d_out * (h - n) * (1 - z) * z
        d_x_t[:, 2 * size:] = d_n_pre
        d_hidden_t[:, :2 * size] = d_x_t[:, :2 * size]
        d_hidden_t[:, 2 * size:] = d_n_pre * r
        return d_out * z + d_hidden_t @ w_hh


Steps = ElmanSteps | LSTMSteps | GRUSteps


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
    # Kept by backward only while someone observes the walk (diagnostics, viz.record_grad_norms):
    # dL/d(state_t) (T, B, S*H), including the gradient through time, as the composed layer's h_t
    # gets it; and dL/d(input_t) (T, B, I), None if the input needs no gradient.
    state_grads: np.ndarray | None = field(default=None, repr=False)
    input_grads: np.ndarray | None = field(default=None, repr=False)

    def step_provenance(self, t: int) -> provenance.Provenance:
        """Where step t was made, as the composed layer records it."""
        return self.scope.at(step=t) if self.own_time else self.scope


def sequence(cell: Steps, layer_input: Tensor, weights: tuple[Tensor | None, ...],
             initial: tuple[Tensor, ...], reverse: bool, state_name: str, valid: np.ndarray | None = None,
             partial: frozenset = frozenset(), own_time: bool = True) -> Tensor:
    """Every step's state, (T, B, S*H), as one node: the recurrence ``cell`` over ``layer_input``
    (T * B, I) with ``weights`` (weight_ih, weight_hh, bias_ih, bias_hh; biases None if off) from
    ``initial`` ((h0,) or (h0, c0), each (B, H)). ``valid`` (T, B, 1) bool: at the ``partial`` steps a
    sequence whose flag is False keeps its state, as the composed layer's ``where`` does (variable
    lengths). ``own_time``: step t is drawn at time t (else at the caller's step, ``nn.rnn._own_time``)."""
    w_ih, w_hh, b_ih, b_hh = weights
    batch, hidden = initial[0].shape
    inputs = layer_input._data
    steps = inputs.shape[0] // batch
    # the input projection of every step, as the composed layer's ``nn.rnn._project`` computes it
    x = inputs @ w_ih._data.T
    if b_ih is not None:
        x += b_ih._data + b_hh._data if cell.folds_hidden_bias else b_ih._data
    x = x.reshape(steps, batch, -1)
    step_bias = None if b_hh is None or cell.folds_hidden_bias else b_hh._data
    weight = w_hh._data
    w_hh_t = weight.T
    # The states in order of time, with the initial one first (last when reversed): chain[t + after]
    # is step t's state and chain[t + 1 - after] the one it starts from, so each step reads and
    # writes in place and the states every step started from are one view.
    after = 0 if reverse else 1
    chain = np.empty((steps + 1, batch, len(initial) * hidden), x.dtype)
    for k, tensor in enumerate(initial):
        chain[steps if reverse else 0, :, k * hidden:(k + 1) * hidden] = tensor._data
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        cell.forward(t, x[t], chain[t + 1 - after], w_hh_t, step_bias, chain[t + after])
        if t in partial:  # the sequences that are over (or not started) keep their state
            np.copyto(chain[t + after], chain[t + 1 - after], where=~valid[t])
    states = chain[after:after + steps]
    unrolled = Unrolled(cell.op, state_name, steps, reverse, provenance.ROOT, own_time)

    def backward(g: np.ndarray) -> tuple:
        # d_chain[t + after] becomes dL/d(state_t): each step adds what it passes to the state before it
        d_chain = np.empty_like(chain)
        d_chain[after:after + steps] = g
        d_chain[steps if reverse else 0] = 0
        d_x = np.empty_like(x)  # dL/d(x_proj_t)
        d_hidden = d_x if cell.folds_hidden_bias else np.empty_like(x)  # dL/d(h_{t-1} W_hh^T + b_hh)
        for t in reversed(order):
            d_state = d_chain[t + after]
            if t in partial:  # a sequence that kept its state passes the gradient through unchanged
                d_chain[t + 1 - after] += np.where(valid[t], 0, d_state)
                d_state = np.where(valid[t], d_state, 0)
            d_chain[t + 1 - after] += cell.backward(t, d_state, chain[t + 1 - after], chain[t + after],
                                                    weight, d_x[t], d_hidden[t])
            if t in partial:  # what the cell left in d_state for the valid rows (an LSTM's full dL/dc_t)
                np.copyto(d_chain[t + after], d_state, where=valid[t])
        starts = chain[1 - after:1 - after + steps]
        grads = _input_grads(d_x, d_hidden, inputs, starts[..., :hidden], layer_input.requires_grad, weights)
        if autograd.observers:
            unrolled.state_grads = d_chain[after:after + steps]
            unrolled.input_grads = None if grads[0] is None else grads[0].reshape(steps, batch, -1)
        d_first = d_chain[steps if reverse else 0]
        return (*grads, *(d_first[:, k * hidden:(k + 1) * hidden] for k in range(len(initial))))

    out = Tensor.from_op(states, cell.sequence_op, (layer_input, *weights, *initial), backward)
    if out._node is not None:
        unrolled.scope = out._node.prov or provenance.ROOT
        out._node.unrolled = unrolled
    return out.named(state_name)


def _input_grads(d_x: np.ndarray, d_hidden: np.ndarray, inputs: np.ndarray, h_starts: np.ndarray,
                 want_input: bool, weights: tuple[Tensor | None, ...]) -> tuple:
    """The gradients of the layer input (if ``want_input``) and of weight_ih, weight_hh, bias_ih,
    bias_hh (None where not wanted), each ONE product or sum over all steps, as in a hand-written
    BPTT; ``h_starts`` (T, B, H) holds the h each step started from."""
    w_ih, w_hh, b_ih, b_hh = weights
    rows = inputs.shape[0]
    d_x, d_hidden = d_x.reshape(rows, -1), d_hidden.reshape(rows, -1)
    d_w_hh = d_hidden.T @ h_starts.reshape(rows, -1) if w_hh.requires_grad else None
    d_b_ih = d_b_hh = None
    if b_ih is not None:
        d_b_ih = d_x.sum(axis=0)
        d_b_hh = d_b_ih if d_hidden is d_x else d_hidden.sum(axis=0)
    return (d_x @ w_ih._data if want_input else None,
            d_x.T @ inputs if w_ih.requires_grad else None, d_w_hh, d_b_ih, d_b_hh)
