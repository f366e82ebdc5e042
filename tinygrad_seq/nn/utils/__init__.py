"""Helpers around the layers, at PyTorch's module paths (``nn.utils.rnn.pad_sequence``)."""

from . import rnn
from .clip_grad import GradNormReport, clip_grad_norm_, clip_grad_value_, grad_norm_report

__all__ = ["GradNormReport", "clip_grad_norm_", "clip_grad_value_", "grad_norm_report", "rnn"]
