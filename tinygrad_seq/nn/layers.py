"""Linear, Embedding, Dropout and Sequential, with PyTorch's parameter layouts, initialisation and
reprs, plus the functional forms (``linear``, ``embedding``, ``dropout``) the modules call.

Randomness (initial weights, dropout masks) comes from ``ts.creation.generator()``, so
``ts.manual_seed`` reproduces a run.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..autograd import IndexGrad
from ..checks import integer, is_integer
from ..creation import generator
from ..ops.elementwise import data_of
from ..ops.linalg import addmm
from ..tensor import Tensor
from . import init
from .module import Module, Parameter

# -- functional forms ------------------------------------------------------------------------


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias``, with weight laid out (out_features, in_features) as in PyTorch."""
    if np.ndim(data_of(input)) == 0 or input.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input of shape {tuple(np.shape(data_of(input)))} does not match weight "
                         f"{weight.shape}: expected {weight.shape[-1]} features in the last dimension")
    for name, tensor in (("input", input), ("bias", bias)):  # as PyTorch: never a silent float64 model
        # (integer features are allowed, beyond PyTorch: they compute in the weight's dtype, as matmul's)
        if tensor is not None and tensor.dtype.kind == "f" and tensor.dtype != weight.dtype:
            raise TypeError(f"linear: {name} is {tensor.dtype} but weight is {weight.dtype}; convert one: "
                            f"{name}.to({weight.dtype}) or module.to({tensor.dtype})")
    if bias is not None and input.ndim == 2:
        return addmm(bias, input, weight.T)  # one op, as PyTorch's F.linear records for a batch
    out = input @ weight.T
    return out if bias is None else out + bias


def check_probability(p: float, op: str) -> None:
    """Dropout probabilities live in [0, 1]; anything else is a caller's mistake worth naming."""
    if not isinstance(p, (int, float, np.floating)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p!r}")


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Inverted dropout: zero each element with probability ``p`` and scale survivors by 1/(1-p),
    so the expected value is unchanged and evaluation needs no rescaling. Identity unless training."""
    check_probability(p, "dropout")
    if not training or p == 0:
        return input
    if p == 1:  # every element dropped; 1/(1-p) would divide by zero
        return input * np.zeros(input.shape, input.dtype)
    keep = generator().random(input.shape) >= p
    return input * (keep / (1.0 - p)).astype(input.dtype)


def padding_row(padding_idx: Any, num_embeddings: int, op: str) -> int | None:
    """``padding_idx`` as the row it names (negative ones count from the end, as in PyTorch)."""
    if padding_idx is None:
        return None
    padding_idx = integer(padding_idx, op, "padding_idx")
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"{op}: padding_idx {padding_idx} must be within "
                         f"[-{num_embeddings}, {num_embeddings}) for {num_embeddings} embeddings")
    return int(padding_idx) % num_embeddings


def embedding(input: Any, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of ``weight`` picked by the integer array ``input``: output shape ``input.shape + (dim,)``.

    The gradient of each row is the sum over the positions that picked it; positions holding
    ``padding_idx`` contribute nothing, so the padding row never trains (PyTorch's rule).
    """
    indices = np.asarray(data_of(input))
    num_embeddings = weight.shape[0]
    if indices.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= num_embeddings):
        bad = np.unique(indices[(indices < 0) | (indices >= num_embeddings)])
        raise IndexError(f"embedding: indices {bad.tolist()} are out of range for a table of "
                         f"{num_embeddings} rows (weight {weight.shape})")
    table = weight._data
    shape, dtype = table.shape, table.dtype
    padding_idx = padding_row(padding_idx, num_embeddings, "embedding")
    padding = None if padding_idx is None else (indices == padding_idx)[..., None]

    def backward(g: np.ndarray) -> tuple:
        if padding is not None:
            g = np.where(padding, 0, g)
        return (IndexGrad(indices, g, shape, dtype, True),)

    return Tensor.from_op(table[indices], "embedding", (weight,), backward)


# -- modules ---------------------------------------------------------------------------------


def check_size(value: Any, what: str, owner: str, minimum: int = 0) -> int:
    """A layer dimension: an integer >= ``minimum`` (not a bool, not a float), as a Python int."""
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{owner}: {what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Linear(Module):
    """y = x W^T + b. weight (out_features, in_features) and bias (out_features,) both start
    U(-1/sqrt(in_features), 1/sqrt(in_features)): PyTorch's default (kaiming-uniform, a=sqrt(5))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = check_size(in_features, "in_features", "Linear")
        self.out_features = check_size(out_features, "out_features", "Linear")
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = init.uniform_(Parameter(np.empty((out_features, in_features), np.float32)),
                                    -bound, bound)
        if bias:
            self.bias = init.uniform_(Parameter(np.empty(out_features, np.float32)), -bound, bound)
        else:
            self.register_parameter("bias", None)

    def forward(self, input: Tensor) -> Tensor:
        return linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table of ``num_embeddings`` vectors of size ``embedding_dim``, initialised N(0, 1).

    With ``padding_idx`` that row starts at zero and receives no gradient, so padding tokens map
    to a fixed zero vector (negative indices count from the end, as in PyTorch).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None) -> None:
        super().__init__()
        num_embeddings = check_size(num_embeddings, "num_embeddings", "Embedding")
        embedding_dim = check_size(embedding_dim, "embedding_dim", "Embedding")
        padding_idx = padding_row(padding_idx, num_embeddings, "Embedding")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        self.weight = init.normal_(Parameter(np.empty((num_embeddings, embedding_dim), np.float32)))
        if padding_idx is not None:
            table = self.weight.data.copy()
            table[padding_idx] = 0.0
            self.weight._replace_data(table)

    def forward(self, input: Any) -> Tensor:
        return embedding(input, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        padding = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"


class Dropout(Module):
    """Inverted dropout with probability ``p`` while training; the identity in eval mode."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        check_probability(p, "Dropout")
        self.p = float(p)

    def forward(self, input: Tensor) -> Tensor:
        return dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Sequential(Module):
    """Modules applied in order. Children are named "0", "1", ... (or by the keys of an
    OrderedDict); indexing with an int gives a child, with a slice a Sequential of children
    that keep their names."""

    def __init__(self, *modules: Module | OrderedDict[str, Module]) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            named = list(modules[0].items())
        else:
            named = [(str(i), module) for i, module in enumerate(modules)]
        for name, module in named:
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: child {name!r} is a {type(module).__name__}, not a Module")
            self.add_module(name, module)

    def forward(self, input: Any) -> Any:
        for module in self._modules.values():
            input = module(input)
        return input

    def append(self, module: Module) -> Sequential:
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: expected a Module, got {type(module).__name__}")
        self.add_module(str(len(self)), module)
        return self

    def __getitem__(self, index: int | slice) -> Module:
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        if not -len(items) <= index < len(items):
            raise IndexError(f"Sequential: index {index} is out of range for {len(items)} modules")
        return items[index][1]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())
