"""Parameter initialisers with PyTorch's names, drawing from the one seedable generator
(``ts.manual_seed`` makes every model's initial weights reproducible).

They replace the parameter's array (arrays inside tensors are never mutated) and keep its dtype.
"""

from __future__ import annotations

from ..creation import generator
from ..tensor import Tensor


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill ``tensor`` with draws from U(a, b); returns it."""
    tensor._replace_data(generator().uniform(a, b, tensor.shape).astype(tensor.dtype))
    return tensor


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill ``tensor`` with draws from N(mean, std^2); returns it."""
    tensor._replace_data(generator().normal(mean, std, tensor.shape).astype(tensor.dtype))
    return tensor
