"""An independent gradient oracle for the tests: float64 finite differences.

Deliberately separate from ``tinygrad_seq.gradcheck`` so the library's checker and its tests
cannot share a bug.  The analytic side uses nothing but ``backward(gradient=...)``: a random
projection of each output is fed in as its gradient, so no library op (``*``, ``sum``) takes
part in forming the scalar that is differentiated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import tinygrad_seq as ts


def numeric_gradient(f: Callable[..., float], arrays: Sequence[np.ndarray],
                     step: float = 1e-5) -> list[np.ndarray]:
    """d f / d arrays[i] for each i by the 4th-order central difference
    (f(x-2h) - 8f(x-h) + 8f(x+h) - f(x+2h)) / 12h, evaluated in float64.

    Its error is ~h^4 f^(5) plus ~1e-16 |f| / h of rounding, i.e. ~1e-11 relative here, which
    leaves room for tight tolerances.  Inputs must stay 2h away from kinks (relu, abs, max).
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    grads = []
    for array in arrays:
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            original = array[index]
            values = []
            for offset in (-2 * step, -step, step, 2 * step):
                array[index] = original + offset
                values.append(f(*arrays))
            array[index] = original
            grad[index] = (values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * step)
        grads.append(grad)
    return grads


def _outputs(result: Any) -> list[ts.Tensor]:
    return list(result) if isinstance(result, (list, tuple)) else [result]


def assert_grads_match(fn: Callable[..., Any], arrays: Sequence[np.ndarray], *, rtol: float = 1e-6,
                       atol: float = 1e-8, seed: int = 0) -> list[ts.Tensor]:
    """Check the ``.grad`` that backward gives each input of ``fn`` against finite differences.

    ``fn`` takes one float64 Tensor per array and returns a Tensor or a sequence of Tensors.
    Each output is contracted with a fixed random projection P (the scalar is sum <out, P>),
    so every element of every output influences the checked gradient.  Returns the outputs of
    the differentiated call, for further assertions on forward values.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    inputs = [ts.Tensor(a, requires_grad=True) for a in arrays]
    outputs = _outputs(fn(*inputs))
    projection_rng = np.random.default_rng(seed)
    projections = [projection_rng.standard_normal(out.shape) for out in outputs]

    for out, projection in zip(outputs, projections, strict=True):
        assert out.dtype == np.float64, f"float64 inputs gave a {out.dtype} output"
        out.backward(gradient=projection, retain_graph=True)  # several outputs accumulate into .grad

    def projected(*perturbed: np.ndarray) -> float:
        with ts.no_grad():
            outs = _outputs(fn(*[ts.Tensor(a) for a in perturbed]))
        return float(sum(np.sum(out.data * p) for out, p in zip(outs, projections, strict=True)))

    expected = numeric_gradient(projected, arrays)
    for i, (tensor, numeric) in enumerate(zip(inputs, expected, strict=True)):
        if tensor.grad is None:  # no path from this input: the true gradient is exactly zero
            analytic = np.zeros_like(numeric)
        else:
            analytic = tensor.grad.data
            assert analytic.dtype == np.float64 and analytic.shape == numeric.shape, (
                f"input {i}: grad has {analytic.dtype} {analytic.shape}, expected float64 {numeric.shape}")
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i} (shape {numeric.shape})")
    return outputs
