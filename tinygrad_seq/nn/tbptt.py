"""Truncated backpropagation through time, with d2l's sequential partitioning.

A long sequence is cut into B contiguous streams (``sequential_partition``), then walked in
windows of ``window`` steps (``truncated_bptt``). Window k+1 of every stream continues where
window k ended, so the final state of one window is the right initial state of the next; it
is passed on *detached* (``detach_state``), which keeps each backward ``window`` steps long::

    xs, ys = ts.nn.sequential_partition(tokens, batch_size=32)   # (T, 32) each
    state = None
    for xb, yb in ts.nn.truncated_bptt(xs, ys, window=35):
        out, state = lstm(embed(xb), ts.nn.detach_state(state))
        loss = loss_fn(head(out), yb)
        ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..checks import integer, is_integer
from ..tensor import Tensor


def detach_state(state: Any) -> Any:
    """``state`` with every Tensor detached, keeping its nesting: None, a Tensor, or tuples/lists
    of those (an LSTM's (h, c), a stack of layers' states, ...)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(part) for part in state)
    raise TypeError(f"detach_state: expected None, a Tensor, or tuples/lists of Tensors, "
                    f"got {type(state).__name__}")


def _as_tensor(value: Any) -> Tensor:
    return value if isinstance(value, Tensor) else Tensor(value)


def sequential_partition(sequence: Any, batch_size: int, offset: int = 0) -> tuple[Tensor, Tensor]:
    """Cut a long sequence (L, *) into ``batch_size`` contiguous streams, time-major:
    inputs (T, batch_size, *) and next-step targets of the same shape (stream b is
    ``sequence[offset + b*T : offset + (b+1)*T]``, its targets the same shifted by one).
    ``offset`` skips a prefix, e.g. a random one per epoch as in d2l; leftover steps are dropped."""
    data = _as_tensor(sequence)
    if data.ndim == 0 or not is_integer(batch_size) or batch_size < 1:
        raise ValueError(f"sequential_partition: need a sequence with a time dimension and a positive "
                         f"batch_size, got shape {data.shape} and batch_size={batch_size!r}")
    offset = integer(offset, "sequential_partition", "offset")
    if offset < 0:
        raise ValueError(f"sequential_partition: offset must be >= 0 (a prefix to skip), got {offset}")
    steps = (len(data) - offset - 1) // batch_size
    if steps < 1:
        raise ValueError(f"sequential_partition: a sequence of length {len(data)} with offset {offset} "
                         f"is too short for {batch_size} streams of at least one step plus a target")

    def streams(start: int) -> Tensor:
        block = data[start:start + steps * batch_size].reshape((batch_size, steps) + data.shape[1:])
        return block.transpose(0, 1)

    return streams(offset), streams(offset + 1)


def truncated_bptt(inputs: Any, targets: Any, window: int,
                   batch_first: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive windows ``(inputs[s:s+window], targets[s:s+window])`` along time (dim 0, or
    dim 1 with ``batch_first``); the last window may be shorter. Carry the model's state from
    one window to the next through ``detach_state``."""
    xs, ys = _as_tensor(inputs), _as_tensor(targets)
    dim = 1 if batch_first else 0
    if not is_integer(window) or window < 1:
        raise ValueError(f"truncated_bptt: window must be a positive integer, got {window!r}")
    if xs.ndim <= dim or ys.ndim <= dim or xs.shape[dim] != ys.shape[dim]:
        raise ValueError(f"truncated_bptt: inputs {xs.shape} and targets {ys.shape} must have the same "
                         f"number of time steps in dim {dim}")
    batch_dim = 1 - dim  # (the other of the first two)
    if xs.ndim > batch_dim and ys.ndim > batch_dim and xs.shape[batch_dim] != ys.shape[batch_dim]:
        raise ValueError(f"truncated_bptt: inputs {xs.shape} and targets {ys.shape} must have the same "
                         f"batch size in dim {batch_dim}")
    lead = (slice(None),) * dim
    windows = (lead + (slice(start, start + window),) for start in range(0, xs.shape[dim], window))
    return ((xs[index], ys[index]) for index in windows)  # checked above now, sliced lazily
