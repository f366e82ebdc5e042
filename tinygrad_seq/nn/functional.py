"""PyTorch's ``torch.nn.functional`` names, re-exported from where each is defined."""

from .layers import dropout, embedding, linear  # noqa: F401
from .losses import binary_cross_entropy_with_logits, cross_entropy, mse_loss, nll_loss  # noqa: F401
