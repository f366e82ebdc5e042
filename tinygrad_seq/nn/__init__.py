"""Neural-network building blocks with PyTorch's names, shapes and call signatures."""

from .module import Module, Parameter, StateDictError

__all__ = ["Module", "Parameter", "StateDictError"]
