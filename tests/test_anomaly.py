"""ts.detect_anomaly(): the first non-finite forward value or gradient raises, saying where it came from."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

import tinygrad_seq as ts
from tinygrad_seq.autograd import IndexGrad, state

# the ops below make nan / inf on purpose; numpy's RuntimeWarnings about it are expected
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def test_forward_nan_names_op_shape_provenance_and_source_line():
    x = ts.tensor([-1.0, 2.0], requires_grad=True)
    with ts.detect_anomaly(), ts.scope("enc", step=3):
        with pytest.raises(ts.AnomalyError) as caught:
            x.log()
    message = str(caught.value)
    assert "forward of 'log'" in message
    assert "(2,)" in message
    assert "t=3" in message and "[enc]" in message
    assert "1 nan, 0 inf of 2" in message
    assert "test_anomaly.py" in message and "x.log()" in message


def test_forward_anomaly_in_a_module_names_the_module():
    class Encoder(ts.nn.Module):
        def forward(self, x):
            return (x - 5.0).sqrt()

    x = ts.tensor([1.0], requires_grad=True)
    with ts.detect_anomaly(), pytest.raises(ts.AnomalyError, match="'sqrt' in Encoder"):
        Encoder()(x)


def test_backward_non_finite_gradient_names_the_op_whose_backward_made_it():
    x = ts.tensor([0.0, 4.0], requires_grad=True, name="x")
    with ts.detect_anomaly():
        with ts.scope("dec", step=1):
            y = x.sqrt()                  # forward is finite: sqrt(0) = 0
        loss = (y * 2.0).sum()
        with pytest.raises(ts.AnomalyError) as caught:
            loss.backward()                # d sqrt / dx at 0 is inf
    message = str(caught.value)
    assert message.startswith("backward of 'sqrt'")
    assert "t=1" in message and "[dec]" in message
    assert "0 nan, 1 inf of 2" in message
    assert "y = x.sqrt()" in message       # the line that created the op
    assert x.grad is None                  # stopped before the gradient reached the leaf


def test_outside_the_context_nothing_is_checked():
    x = ts.tensor([-1.0], requires_grad=True)
    y = x.log()
    assert math.isnan(y.item())
    z = ts.tensor([0.0], requires_grad=True)
    z.sqrt().sum().backward()
    assert np.isinf(z.grad.data).all()


def test_nodes_record_their_source_line_only_in_anomaly_mode():
    x = ts.tensor([1.0, 2.0], requires_grad=True)
    plain = x.exp()
    assert plain.grad_fn.source is None
    with ts.detect_anomaly():
        watched = x.exp()
    assert "test_anomaly.py" in watched.grad_fn.source
    assert watched.grad_fn.source.endswith("watched = x.exp()")


def test_mode_is_restored_after_an_error():
    assert state.anomaly is False
    with pytest.raises(ts.AnomalyError), ts.detect_anomaly():
        ts.tensor([-1.0], requires_grad=True).log()
    assert state.anomaly is False
    with ts.detect_anomaly():
        with ts.detect_anomaly():
            pass
        assert state.anomaly is True
    assert state.anomaly is False


def test_finite_computations_pass_untouched():
    x = ts.tensor([0.5, 1.5], requires_grad=True)
    with ts.detect_anomaly():
        (x.log() * x.sqrt()).sum().backward()
    np.testing.assert_allclose(x.grad.data, np.log([0.5, 1.5]) / (2 * np.sqrt([0.5, 1.5]))
                               + np.sqrt([0.5, 1.5]) / np.array([0.5, 1.5]), rtol=1e-6)


def test_a_slice_gradient_is_checked_without_making_it_sequence_sized(monkeypatch: pytest.MonkeyPatch):
    """The check reads an IndexGrad's values; expanding it would cost a sequence-sized array per step."""
    expanded = []
    dense = IndexGrad.dense
    monkeypatch.setattr(IndexGrad, "dense", lambda grad: expanded.append(grad) or dense(grad))
    counts = []
    for anomaly in (False, True):
        x = ts.randn(6, 2, requires_grad=True)
        with ts.detect_anomaly() if anomaly else contextlib.nullcontext():
            sum((x[t] * t).sum() for t in range(6)).backward()  # six slices: six IndexGrads into x
        np.testing.assert_array_equal(x.grad.data, np.arange(6.0)[:, None] * np.ones(2))
        counts.append(len(expanded))
    assert counts[1] == 2 * counts[0]  # the engine's own expansions only, none added by the check


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's own overflow warning, on the way
def test_gradients_that_overflow_when_added_are_caught_where_they_meet() -> None:
    """Each backward returns 1e308, finite; the two uses of b add up to inf at b, not in tanh's backward."""
    a = ts.tensor(np.array([0.5]), requires_grad=True)
    c = ts.tensor(np.array([1e308]))
    with ts.detect_anomaly():
        b = a.tanh()
        loss = (b * c).sum() + (b * c).sum()
        with pytest.raises(ts.AnomalyError, match=r"the gradient reaching 'tanh' .* is not finite \(0 nan, "
                                                  r"1 inf of 1\), though each gradient added into it was"):
            loss.backward()
    leaf = ts.tensor(np.array([1e-300]), requires_grad=True)
    with ts.detect_anomaly(), pytest.raises(ts.AnomalyError, match="the gradient reaching 'leaf'"):
        ((leaf * c).sum() + (leaf * c).sum()).backward()  # a leaf's .grad would be inf, silently


def test_a_non_finite_input_is_named_as_such_not_blamed_on_the_op() -> None:
    weight = ts.nn.Parameter(np.array([np.inf, 1.0], np.float32))
    with ts.detect_anomaly():
        with pytest.raises(ts.AnomalyError, match=r"forward of 'permute' .* received non-finite values in "
                                                  r"its input 0 \(shape \(2,\), 0 nan, 1 inf of 2\): they "
                                                  r"were there before the op"):
            weight.T * 2
        with pytest.raises(ts.AnomalyError, match=r"forward of 'mul' .* its input 1 .*1 nan"):
            ts.tensor([1.0]) * math.nan
        with pytest.raises(ts.AnomalyError, match="forward of 'exp' .* produced non-finite values"):
            ts.tensor([1000.0]).exp()  # finite in, inf out: the op's own
