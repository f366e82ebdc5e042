"""tinygrad_seq: a small numpy autograd framework for seeing and trusting gradients through time."""

from . import diagnostics, nn, ops, optim, viz
from .anomaly import AnomalyError, detect_anomaly
from .autograd import enable_grad, is_grad_enabled, no_grad
from .checkpoint import load, save
from .creation import arange, full, manual_seed, ones, ones_like, rand, randn, tensor, zeros, zeros_like
from .custom_op import custom_op
from .gradcheck import GradcheckError, GradcheckReport, gradcheck
from .ops import *  # noqa: F403 - the functional API: ts.tanh, ts.cat, ...
from .provenance import Provenance, scope
from .tensor import Tensor

float32, float64 = "float32", "float64"

__version__ = "0.1.0"
