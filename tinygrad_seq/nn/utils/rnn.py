"""Variable-length batches: pad a list of sequences into one tensor, and check / mask lengths.

Instead of PyTorch's PackedSequence, the recurrent layers take the padded batch plus a
``lengths`` argument and give the results PyTorch gets by packing, running and unpacking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...ops.shape import cat, stack
from ...tensor import Tensor


def pad_sequence(sequences: Sequence[Any], batch_first: bool = False, padding_value: float = 0.0) -> Tensor:
    """Stack sequences of shapes (L_i, *) into (T, B, *) (or (B, T, *) with ``batch_first``),
    T = max L_i, filling the tail of shorter ones with ``padding_value``. Gradients flow back to
    each sequence; the padding is constant."""
    tensors = [s if isinstance(s, Tensor) else Tensor(s) for s in sequences]
    if not tensors:
        raise ValueError("pad_sequence: expected a non-empty list of sequences")
    trailing = {t.shape[1:] for t in tensors if t.ndim >= 1}
    if any(t.ndim == 0 for t in tensors) or len(trailing) != 1:
        raise ValueError("pad_sequence: every sequence needs a time dimension first and the same trailing "
                         f"shape, got shapes {[t.shape for t in tensors]}")
    steps = max(len(t) for t in tensors)
    padded = [t if len(t) == steps else
              cat([t, Tensor.constant(np.full((steps - len(t),) + t.shape[1:], padding_value, t.dtype))])
              for t in tensors]
    return stack(padded, dim=0 if batch_first else 1)


def check_lengths(lengths: Any, batch_size: int, total_length: int, op: str) -> np.ndarray:
    """``lengths`` as an int64 array after checking that there is one per sequence of the batch
    and each lies in 1..total_length; ``op`` names the caller in the error."""
    values = np.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)
    if values.dtype.kind not in "iu":
        raise TypeError(f"{op}: lengths must be integers, got dtype {values.dtype}")
    if values.ndim != 1 or len(values) != batch_size:
        raise ValueError(f"{op}: expected one length per sequence of the batch ({batch_size}), "
                         f"got lengths of shape {values.shape}")
    bad = (values < 1) | (values > total_length)
    if bad.any():
        raise ValueError(f"{op}: lengths must be between 1 and the sequence length {total_length}, got "
                         f"{values[bad].tolist()} at batch positions {np.flatnonzero(bad).tolist()}")
    return values.astype(np.int64)


def length_mask(lengths: Any, total_length: int | None = None, batch_first: bool = False) -> Tensor:
    """Boolean (T, B) tensor ((B, T) with ``batch_first``), True where step t < length: the
    valid positions of a padded batch, e.g. to mask a per-step loss."""
    values = np.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)
    steps = int(values.max(initial=0)) if total_length is None else total_length
    mask = np.arange(steps)[:, None] < values[None, :]
    return Tensor.constant(mask.T.copy() if batch_first else mask)
