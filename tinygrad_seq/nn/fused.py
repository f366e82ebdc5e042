"""Fused recurrent cells: one time step of RNN / LSTM / GRU as ONE graph node with a hand-written
backward, the layers' ``fused=True`` option.

The composed step (``nn.rnn``) records ~14 small ops per LSTM step, and on small shapes their
Python bookkeeping, not the arithmetic, is the cost. A fused cell does the same arithmetic in
numpy and records one node per step (op ``rnn_cell`` / ``lstm_cell`` / ``gru_cell``, with the
step's provenance), so the unrolled picture keeps one box per step. The composed layers stay the
reference and the default; tests/test_fused.py checks these cells equal them to 1e-12 in float64
and gradchecks them.

Conventions shared by the three cells:

- ``x_proj`` is the layer's input projection of every step, (T * B, G * H) (``nn.rnn._project``),
  and ``rows`` selects this step's B rows. The cell reads them directly and returns their gradient
  as an ``IndexGrad``, which the engine adds into one buffer: no slicing node per step.
- ``w_hh`` is weight_hh itself, (G * H, H); each step computes ``h @ w_hh.T``.
- The LSTM state is packed as one tensor ``[h, c]`` of shape (B, 2H), so one node makes both.
- W_hh's gradient is a ``ProductGrad`` (d_gates^T h_prev, unevaluated): the engine makes the
  T steps' products one large product, as a hand-written BPTT does.
- Backward saves only what the formulas below read, and computes a gradient only for the inputs
  that require one.
"""

from __future__ import annotations

import numpy as np

from ..autograd import IndexGrad, ProductGrad
from ..ops.elementwise import logistic
from ..tensor import Tensor


def rnn_cell(x_proj: Tensor, rows: slice, h: Tensor, w_hh: Tensor, nonlinearity: str) -> Tensor:
    """Elman step: h' = act(x_proj[rows] + h W_hh^T), act "tanh" or "relu" (biases are in x_proj)."""
    h_prev, weight = h._data, w_hh._data
    pre = x_proj._data[rows] + h_prev @ weight.T
    out = np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0)
    want_h, want_w = h.requires_grad, w_hh.requires_grad
    shape, dtype = x_proj._data.shape, x_proj._data.dtype

    def backward(g: np.ndarray) -> tuple:
        d_pre = g * (1 - out * out) if nonlinearity == "tanh" else g * (out > 0)
        return (IndexGrad(rows, d_pre, shape, dtype, False),
                d_pre @ weight if want_h else None,
                ProductGrad(d_pre, h_prev) if want_w else None)

    return Tensor.from_op(out, "rnn_cell", (x_proj, h, w_hh), backward)


def lstm_cell(x_proj: Tensor, rows: slice, hc: Tensor, w_hh: Tensor) -> Tensor:
    """LSTM step on the packed state ``hc = [h, c]``: returns ``[h', c']`` (B, 2H), where
    gates = x_proj[rows] + h W_hh^T in blocks i, f, g, o; c' = f c + i g; h' = o tanh(c')."""
    state, weight = hc._data, w_hh._data
    size = weight.shape[1]
    h_prev, c_prev = state[:, :size], state[:, size:]
    gates = x_proj._data[rows] + h_prev @ weight.T
    act = logistic(gates)  # i, f, o; the g block is replaced by its tanh
    act[:, 2 * size:3 * size] = np.tanh(gates[:, 2 * size:3 * size])
    i, f, g, o = (act[:, k * size:(k + 1) * size] for k in range(4))
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    out = np.concatenate([o * tanh_c, c], axis=1)
    want_state, want_w = hc.requires_grad, w_hh.requires_grad
    shape, dtype = x_proj._data.shape, x_proj._data.dtype

    def backward(grad: np.ndarray) -> tuple:
        d_h, d_c = grad[:, :size], grad[:, size:]
        d_c = d_c + d_h * o * (1 - tanh_c * tanh_c)
        d_gates = np.concatenate([d_c * g * (1 - i) * i, d_c * c_prev * (1 - f) * f,
                                  d_c * i * (1 - g * g), d_h * tanh_c * (1 - o) * o], axis=1)
        d_state = np.concatenate([d_gates @ weight, d_c * f], axis=1) if want_state else None
        return (IndexGrad(rows, d_gates, shape, dtype, False), d_state,
                ProductGrad(d_gates, h_prev) if want_w else None)

    return Tensor.from_op(out, "lstm_cell", (x_proj, hc, w_hh), backward)


def gru_cell(x_proj: Tensor, rows: slice, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """GRU step: with hp = h W_hh^T + b_hh in blocks r, z, n and x_proj holding b_ih only,
    r, z = sigmoid(x_proj[rows] + hp) (first two blocks), n = tanh(x_n + r * hp_n),
    h' = n + z (h - n)."""
    h_prev, weight = h._data, w_hh._data
    size = weight.shape[1]
    h_proj = h_prev @ weight.T
    if b_hh is not None:
        h_proj = h_proj + b_hh._data
    x_rows = x_proj._data[rows]
    rz = logistic(x_rows[:, :2 * size] + h_proj[:, :2 * size])
    r, z = rz[:, :size], rz[:, size:]
    h_proj_n = h_proj[:, 2 * size:]
    n = np.tanh(x_rows[:, 2 * size:] + r * h_proj_n)
    h_minus_n = h_prev - n
    out = n + z * h_minus_n
    want_h, want_w = h.requires_grad, w_hh.requires_grad
    want_b = b_hh is not None and b_hh.requires_grad
    shape, dtype = x_proj._data.shape, x_proj._data.dtype

    def backward(g: np.ndarray) -> tuple:
        d_n_pre = g * (1 - z) * (1 - n * n)
        d_rz_pre = np.concatenate([d_n_pre * h_proj_n * (1 - r) * r,
                                   g * h_minus_n * (1 - z) * z], axis=1)
        d_h_proj = np.concatenate([d_rz_pre, d_n_pre * r], axis=1)
        d_h = g * z + d_h_proj @ weight if want_h else None
        # b_hh's gradient, d_h_proj summed over the batch, as ones^T d_h_proj: one product over all steps
        d_b = ProductGrad(np.ones((len(g), 1), dtype), d_h_proj) if want_b else None
        return (IndexGrad(rows, np.concatenate([d_rz_pre, d_n_pre], axis=1), shape, dtype, False),
                d_h, ProductGrad(d_h_proj, h_prev) if want_w else None, d_b)

    return Tensor.from_op(out, "gru_cell", (x_proj, h, w_hh, b_hh), backward)
