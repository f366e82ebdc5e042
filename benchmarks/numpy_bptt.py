"""Hand-written numpy forward + BPTT for one-layer, unidirectional RNN(tanh), LSTM and GRU.

The baseline ``bench_rnn.py`` holds the library against: what an expert writes by hand when
speed matters. PyTorch's parameter layout (weight_ih (G*H, I), weight_hh (G*H, H), bias_ih and
bias_hh (G*H,), gates stacked in row blocks: LSTM i, f, g, o; GRU r, z, n), input (T, B, I),
h0 = 0 (and c0 = 0), loss = sum(out * G) for a fixed array G, so dL/dout = G.

How it stays fast: the input projection of every step is one matmul before the loop; each step
does one matmul for all gates; the backward loop only carries the state gradient back and stores
the pre-activation gradients, and the weight gradients are then ONE product over all steps
(dW_hh = sum_t dgates_t^T h_{t-1} as a (G*H, T*B) @ (T*B, H) matmul). All per-step results go
into arrays preallocated for the whole sequence.

Every function returns ``(loss, grads)``; ``grads`` maps "weight_ih", "weight_hh", "bias_ih",
"bias_hh" and (if ``input_grad``) "input" to arrays of the shapes of those arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Grads = dict[str, np.ndarray]


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """Logistic function via tanh: one ufunc pass, and no overflow warning for large |a|."""
    return 0.5 * np.tanh(0.5 * a) + 0.5


def _check(x: np.ndarray, out_grad: np.ndarray, weight_ih: np.ndarray, weight_hh: np.ndarray,
           gates: int, owner: str) -> tuple[int, int, int]:
    """(T, B, H) after checking that the shapes fit a ``gates``-block layer."""
    if x.ndim != 3:
        raise ValueError(f"{owner}: expected input of shape (T, B, I), got {x.shape}")
    steps, batch, features = x.shape
    hidden = weight_hh.shape[1]
    if weight_ih.shape != (gates * hidden, features) or weight_hh.shape != (gates * hidden, hidden):
        raise ValueError(f"{owner}: expected weight_ih ({gates}*H, {features}) and weight_hh ({gates}*H, H), "
                         f"got {weight_ih.shape} and {weight_hh.shape}")
    if out_grad.shape != (steps, batch, hidden):
        raise ValueError(f"{owner}: expected G of the output's shape {(steps, batch, hidden)}, "
                         f"got {out_grad.shape}")
    return steps, batch, hidden


def _project(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x W^T + b for every step at once: one (T*B, I) @ (I, G*H) matmul, back to (T, B, G*H)."""
    steps, batch, features = x.shape
    return (x.reshape(steps * batch, features) @ weight.T + bias).reshape(steps, batch, -1)


def _parameter_grads(x: np.ndarray, h_prev: np.ndarray, d_input_pre: np.ndarray, d_hidden_pre: np.ndarray,
                     weight_ih: np.ndarray, input_grad: bool) -> Grads:
    """The weight, bias (and input) gradients as one product over all steps each.

    ``d_input_pre`` / ``d_hidden_pre`` (T, B, G*H) are dL/d(x W_ih^T + b_ih) and
    dL/d(h W_hh^T + b_hh) per step (the same array for RNN and LSTM); ``h_prev`` (T, B, H)
    holds h_{t-1}."""
    steps, batch, features = x.shape
    rows = steps * batch
    d_in = d_input_pre.reshape(rows, -1)
    d_hid = d_hidden_pre.reshape(rows, -1)
    grads = {
        "weight_ih": d_in.T @ x.reshape(rows, features),
        "weight_hh": d_hid.T @ h_prev.reshape(rows, -1),
        "bias_ih": d_in.sum(axis=0),
        "bias_hh": d_in.sum(axis=0) if d_hidden_pre is d_input_pre else d_hid.sum(axis=0),
    }
    if input_grad:
        grads["input"] = (d_in @ weight_ih).reshape(x.shape)
    return grads


def rnn_bptt(x: np.ndarray, out_grad: np.ndarray, weight_ih: np.ndarray, weight_hh: np.ndarray,
             bias_ih: np.ndarray, bias_hh: np.ndarray, input_grad: bool = True) -> tuple[float, Grads]:
    """Elman RNN, h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh): loss and gradients."""
    steps, batch, hidden = _check(x, out_grad, weight_ih, weight_hh, 1, "rnn_bptt")
    pre = _project(x, weight_ih, bias_ih + bias_hh)  # (T, B, H): both biases fold into the projection
    h = np.zeros((steps + 1, batch, hidden), x.dtype)  # h[t + 1] is h_t; h[0] = h0 = 0
    w_hh_t = weight_hh.T
    for t in range(steps):
        np.tanh(pre[t] + h[t] @ w_hh_t, out=h[t + 1])
    out = h[1:]
    loss = float(np.vdot(out, out_grad))

    d_pre = np.empty_like(pre)
    d_h = np.zeros((batch, hidden), x.dtype)  # dL/dh_t from step t+1
    for t in range(steps - 1, -1, -1):
        d_h += out_grad[t]
        np.multiply(d_h, 1 - out[t] * out[t], out=d_pre[t])
        d_h = d_pre[t] @ weight_hh
    return loss, _parameter_grads(x, h[:-1], d_pre, d_pre, weight_ih, input_grad)


def lstm_bptt(x: np.ndarray, out_grad: np.ndarray, weight_ih: np.ndarray, weight_hh: np.ndarray,
              bias_ih: np.ndarray, bias_hh: np.ndarray, input_grad: bool = True) -> tuple[float, Grads]:
    """LSTM (gates i, f, g, o; c_t = f c_{t-1} + i g, h_t = o tanh(c_t)): loss and gradients."""
    steps, batch, hidden = _check(x, out_grad, weight_ih, weight_hh, 4, "lstm_bptt")
    gi, gf, gg, go = (slice(k * hidden, (k + 1) * hidden) for k in range(4))
    pre = _project(x, weight_ih, bias_ih + bias_hh)  # (T, B, 4H)
    act = np.empty_like(pre)  # activated gates i, f, g, o per step
    h = np.zeros((steps + 1, batch, hidden), x.dtype)  # h[t + 1] is h_t
    c = np.zeros((steps + 1, batch, hidden), x.dtype)
    tanh_c = np.empty((steps, batch, hidden), x.dtype)
    w_hh_t = weight_hh.T
    for t in range(steps):
        a = pre[t] + h[t] @ w_hh_t
        act_t = act[t]
        act_t[:] = _sigmoid(a)  # i, f, o; g's block is overwritten by its tanh
        np.tanh(a[:, gg], out=act_t[:, gg])
        np.add(act_t[:, gf] * c[t], act_t[:, gi] * act_t[:, gg], out=c[t + 1])
        np.tanh(c[t + 1], out=tanh_c[t])
        np.multiply(act_t[:, go], tanh_c[t], out=h[t + 1])
    loss = float(np.vdot(h[1:], out_grad))

    d_pre = np.empty_like(pre)
    d_h = np.zeros((batch, hidden), x.dtype)
    d_c = np.zeros((batch, hidden), x.dtype)  # dL/dc_t through c_{t+1}
    for t in range(steps - 1, -1, -1):
        i, f, g, o = act[t, :, gi], act[t, :, gf], act[t, :, gg], act[t, :, go]
        d_h += out_grad[t]
        d_c += d_h * o * (1 - tanh_c[t] * tanh_c[t])
        d_t = d_pre[t]
        d_t[:, gi] = d_c * g * i * (1 - i)
        d_t[:, gf] = d_c * c[t] * f * (1 - f)
        d_t[:, gg] = d_c * i * (1 - g * g)
        d_t[:, go] = d_h * tanh_c[t] * o * (1 - o)
        d_c *= f
        d_h = d_t @ weight_hh
    return loss, _parameter_grads(x, h[:-1], d_pre, d_pre, weight_ih, input_grad)


def gru_bptt(x: np.ndarray, out_grad: np.ndarray, weight_ih: np.ndarray, weight_hh: np.ndarray,
             bias_ih: np.ndarray, bias_hh: np.ndarray, input_grad: bool = True) -> tuple[float, Grads]:
    """GRU (gates r, z, n; n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)), h' = (1 - z) n + z h):
    loss and gradients. b_hh cannot fold into the input projection (r scales its n block), so the
    input-side and hidden-side pre-activation gradients differ in the n block."""
    steps, batch, hidden = _check(x, out_grad, weight_ih, weight_hh, 3, "gru_bptt")
    gr, gz, gn = (slice(k * hidden, (k + 1) * hidden) for k in range(3))
    rz = slice(0, 2 * hidden)  # r and z share one sigmoid
    x_pre = _project(x, weight_ih, bias_ih)  # (T, B, 3H)
    act = np.empty_like(x_pre)  # r, z, n per step
    hn_pre = np.empty((steps, batch, hidden), x.dtype)  # h W_hn^T + b_hn, which r scales
    h = np.zeros((steps + 1, batch, hidden), x.dtype)
    w_hh_t = weight_hh.T
    for t in range(steps):
        h_pre = h[t] @ w_hh_t + bias_hh
        act_t = act[t]
        act_t[:, rz] = _sigmoid(x_pre[t, :, rz] + h_pre[:, rz])
        hn_pre[t] = h_pre[:, gn]
        np.tanh(x_pre[t, :, gn] + act_t[:, gr] * hn_pre[t], out=act_t[:, gn])
        n = act_t[:, gn]
        np.add(n, act_t[:, gz] * (h[t] - n), out=h[t + 1])
    loss = float(np.vdot(h[1:], out_grad))

    d_x_pre = np.empty_like(x_pre)
    d_h_pre = np.empty_like(x_pre)
    d_h = np.zeros((batch, hidden), x.dtype)
    for t in range(steps - 1, -1, -1):
        r, z, n = act[t, :, gr], act[t, :, gz], act[t, :, gn]
        d_h += out_grad[t]
        d_n_pre = d_h * (1 - z) * (1 - n * n)
        d_r_pre = d_n_pre * hn_pre[t] * r * (1 - r)
        d_z_pre = d_h * (h[t] - n) * z * (1 - z)
        for d in (d_x_pre[t], d_h_pre[t]):
            d[:, gr], d[:, gz] = d_r_pre, d_z_pre
        d_x_pre[t, :, gn] = d_n_pre
        d_h_pre[t, :, gn] = d_n_pre * r
        d_h = d_h * z + d_h_pre[t] @ weight_hh
    return loss, _parameter_grads(x, h[:-1], d_x_pre, d_h_pre, weight_ih, input_grad)


BPTT: dict[str, Callable[..., tuple[float, Grads]]] = {"rnn": rnn_bptt, "lstm": lstm_bptt, "gru": gru_bptt}
"""The reference for each cell, keyed like bench_rnn's ``--cells``."""
