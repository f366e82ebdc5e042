"""ts.gradcheck: agreement, failure reports, localisation of a wrong backward, kinks, restoring inputs."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

import tinygrad_seq as ts

gradcheck_module = importlib.import_module("tinygrad_seq.gradcheck")  # ts.gradcheck is the function


@ts.custom_op
def bad_cube(x):
    """x**3 with a wrong backward: 2x^2 instead of 3x^2, so every gradient through it is 2/3 of the truth."""
    return x**3, lambda g: (2 * x**2 * g,)


@ts.custom_op
def bad_tanh(x):
    y = np.tanh(x)
    return y, lambda g: (g * (1 - y),)  # should be 1 - y**2


def f64(values, name=None, requires_grad=False):
    return ts.tensor(np.asarray(values, dtype=np.float64), name=name, requires_grad=requires_grad)


def composite(x, w, b):
    """Many ops, broadcasting (b over rows, x over a new axis), reductions and shape ops."""
    h = (x @ w + b).tanh()                              # (2, 3) @ (3, 4) + (4,)
    g = h.sigmoid() * h.exp() - (h * h + 1.0).log()
    s = g.softmax(dim=-1) + g.reshape(4, 2).T.sum(dim=1).unsqueeze(-1) / 3.0
    m = ts.maximum(s, 0.1 * s).mean(dim=0) + ts.cat([h[0], h[1, :2] ** 2])[:4]
    return (m.sqrt() * x[:, :1].sum()).sum() + ts.stack([h, g]).abs().max()


@pytest.fixture
def composite_inputs(rng):
    return (f64(rng.standard_normal((2, 3)), "x"), f64(rng.standard_normal((3, 4)) * 0.5, "w"),
            f64(rng.standard_normal(4) * 0.1 + 2.0, "b"))


def test_passes_on_a_composite_of_many_ops_and_returns_true(composite_inputs):
    assert ts.gradcheck(composite, composite_inputs) is True


def test_passing_report_is_truthy_and_summarises_every_input(composite_inputs):
    report = ts.gradcheck(composite, composite_inputs, raise_exception=False)
    assert isinstance(report, ts.GradcheckReport) and report
    assert report.culprit is None and report.kink_warnings == []
    assert [name for name, *_ in report.per_tensor] == ["x", "w", "b"]
    assert all(ok and max_abs < 1e-6 for _, max_abs, _, ok in report.per_tensor)
    assert report.entries == 6 + 12 + 4
    assert len(report.rows) == gradcheck_module.MAX_ROWS
    errors = [row.abs_error for row in report.rows]
    assert errors == sorted(errors, reverse=True)


def test_float32_input_warns_and_is_restored_bit_exact(rng):
    x = ts.tensor(rng.standard_normal(3).astype(np.float32), name="x")          # no grad, no .grad
    w = ts.tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True, name="w")
    previous_grad = ts.tensor(np.array([7.0, 8.0, 9.0], np.float32))
    w.grad = previous_grad
    x_before, w_before = x.data.copy(), w.data.copy()
    with pytest.warns(UserWarning, match=r"'x' \(float32\), 'w' \(float32\).*float64 copies"):
        assert ts.gradcheck(lambda x, w: (x * w).tanh().sum(), [x, w]) is True
    for tensor, before in ((x, x_before), (w, w_before)):
        assert tensor.dtype == np.float32
        assert tensor.data.tobytes() == before.tobytes()
        assert not tensor.data.flags.writeable
    assert x.requires_grad is False and x.grad is None
    assert w.requires_grad is True and w.is_leaf and w.grad is previous_grad
    assert w._node.dtype == np.float32


def test_float64_inputs_do_not_warn():
    x = f64([0.3, -0.2], "x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ts.gradcheck(lambda x: x.exp().sum(), [x])


def _with_wrong_op(x, w):
    h = (x @ w).tanh()
    with ts.scope("my block"):
        c = bad_cube(h)
    return (c * 0.5).sigmoid().sum() + h.sum()


def test_wrong_custom_op_is_caught_and_localised(rng):
    x, w = f64(rng.standard_normal((2, 3)), "x"), f64(rng.standard_normal((3, 2)), "w")
    with pytest.raises(ts.GradcheckError) as caught:
        ts.gradcheck(_with_wrong_op, [x, w])
    report = caught.value.report
    assert not report.passed
    culprit = report.culprit
    assert [s.op for s in culprit.suspects] == ["bad_cube"]
    assert culprit.suspects[0].prov.label == "my block" and culprit.suspects[0].shape == (2, 2)
    assert "'tanh'" in culprit.receiver                  # the gradient bad_cube sends to tanh's output
    message = str(caught.value)
    assert "first wrong backward: op 'bad_cube' at [my block]" in message
    assert "analytic (backward)" in message and "numeric (finite diff)" in message


def test_failure_report_without_raising_is_a_falsy_table():
    x = f64([0.5, -1.5, 2.0], "x")
    report = ts.gradcheck(lambda x: bad_cube(x).sum(), x, raise_exception=False)
    assert isinstance(report, ts.GradcheckReport) and not report
    text = str(report)
    for header in ("input", "index", "where", "analytic (backward)", "numeric (finite diff)",
                   "abs error", "rel error", "FAIL"):
        assert header in text
    assert "'x'" in text and report.per_tensor[0][0] == "x" and report.per_tensor[0][3] is False
    # L = <w, x^3>: backward gives 2 w x^2 where the truth is 3 w x^2, at every element
    assert {row.index for row in report.rows} == {(0,), (1,), (2,)}
    for row in report.rows:
        assert row.failed and row.name == "x"
        assert row.numeric == pytest.approx(1.5 * row.analytic, rel=1e-6)
        assert row.rel_error == pytest.approx(1 / 3, rel=1e-5)
    assert [row.abs_error for row in report.rows] == sorted((r.abs_error for r in report.rows), reverse=True)
    assert report.culprit.receiver == "input 'x'"           # bad_cube consumes the input directly


def test_fast_mode_catches_and_localises_the_same_wrong_op(rng):
    x, w = f64(rng.standard_normal((2, 3)), "x"), f64(rng.standard_normal((3, 2)), "w")
    report = ts.gradcheck(_with_wrong_op, [x, w], fast_mode=True, raise_exception=False)
    assert not report
    assert len(report.rows) == 2 and all(row.index is None and row.failed for row in report.rows)
    assert "random direction" in str(report) and "fast mode" in str(report)
    assert [s.op for s in report.culprit.suspects] == ["bad_cube"]


def test_fast_mode_passes_on_a_correct_function(composite_inputs):
    report = ts.gradcheck(composite, composite_inputs, fast_mode=True, raise_exception=False)
    assert report and report.entries == 3


@ts.custom_op
def bad_softmax(x):
    e = np.exp(x - x.max())
    y = e / e.sum()
    return y, lambda g: (y * (g - g.mean()),)  # right only for g = const, i.e. for a plain sum


def test_outputs_are_weighted_randomly_so_a_plain_sum_cannot_hide_a_bug():
    x = f64([0.2, -1.0, 0.5], "x")
    x_leaf = ts.tensor(x.data, requires_grad=True)
    bad_softmax(x_leaf).sum().backward()                    # d(sum softmax)/dx = 0, and so is this
    np.testing.assert_allclose(x_leaf.grad.data, 0.0, atol=1e-12)
    report = ts.gradcheck(bad_softmax, x, raise_exception=False)
    assert not report and [s.op for s in report.culprit.suspects] == ["bad_softmax"]


def test_only_the_affected_input_fails(rng):
    x, w = f64(rng.standard_normal(3), "x"), f64(rng.standard_normal(3), "w")
    report = ts.gradcheck(lambda x, w: (x.tanh() + bad_cube(w)).sum(), [x, w], raise_exception=False)
    assert [(name, ok) for name, _, _, ok in report.per_tensor] == [("x", True), ("w", False)]
    assert "FAILED" in str(report) and "input 'w'" in str(report)


def test_the_wrong_one_of_several_consumers_is_singled_out():
    x = f64([0.4, -0.7], "x")
    report = ts.gradcheck(lambda x: (bad_cube(x) * x.tanh() + x.exp()).sum(), x, raise_exception=False)
    assert [s.op for s in report.culprit.suspects] == ["bad_cube"]


def test_several_wrong_consumers_are_all_listed():
    x = f64([0.4, -0.7], "x")
    report = ts.gradcheck(lambda x: (bad_cube(x) * bad_tanh(x) + x.exp()).sum(), x, raise_exception=False)
    assert sorted(s.op for s in report.culprit.suspects) == ["bad_cube", "bad_tanh"]
    assert "one or more of the ops consuming the same tensor" in str(report.culprit)


class _Recurrent(ts.nn.Module):
    """h_t = bad_tanh(x_t W + h_{t-1} U), each step in its own provenance scope."""

    def __init__(self, rng, tanh=bad_tanh):
        super().__init__()
        self.weight_ih = ts.nn.Parameter(rng.standard_normal((2, 3)) * 0.5)
        self.weight_hh = ts.nn.Parameter(rng.standard_normal((3, 3)) * 0.5)
        self.tanh = tanh

    def forward(self, xs):
        h = ts.zeros(3, dtype=np.float64)
        for t in range(xs.shape[0]):
            with ts.scope(step=t):
                h = self.tanh(xs[t] @ self.weight_ih + h @ self.weight_hh)
        return h


def test_localisation_names_the_time_step_and_module_of_the_wrong_op(rng):
    model = _Recurrent(rng)
    xs = f64(rng.standard_normal((5, 2)), "xs")
    report = ts.gradcheck(lambda xs: model(xs), [xs, *model.parameters()], fast_mode=True,
                          raise_exception=False)
    (suspect,) = report.culprit.suspects
    assert suspect.op == "bad_tanh"
    assert suspect.prov.step == 4 and suspect.prov.module == "_Recurrent"  # the last step: nearest the output
    assert "_Recurrent t=4" in str(report)


def test_localisation_survives_nodes_that_fn_drops(rng):
    """fn may drop part of a layer's result (here h_n): those nodes are freed, and their ids must
    not be taken for the nodes that gradcheck makes afterwards (a crash or a wrong culprit)."""
    layer = ts.nn.GRU(2, 3, bidirectional=True, num_layers=2).double()
    x = f64(rng.standard_normal((3, 2, 2)), "x", requires_grad=True)
    report = ts.gradcheck(lambda x: layer(bad_cube(x))[0], [x], raise_exception=False)
    assert [suspect.op for suspect in report.culprit.suspects] == ["bad_cube"]


def test_module_parameters_closed_over_by_fn_are_checked(rng):
    model = _Recurrent(rng, tanh=ts.tanh)
    xs = f64(rng.standard_normal((4, 2)), "xs")
    bystander = ts.nn.Parameter(np.ones(3))     # used by fn but not checked: its .grad must survive
    bystander.grad = ts.tensor(np.full(3, 5.0))
    model.weight_hh.grad = ts.tensor(np.full((3, 3), 2.0))
    report = ts.gradcheck(lambda xs: (model(xs) * bystander).sum(), [xs, *model.parameters()],
                          raise_exception=False)
    assert report
    assert [name for name, *_ in report.per_tensor] == ["xs", "weight_ih", "weight_hh"]
    assert report.entries == 8 + 6 + 9
    np.testing.assert_array_equal(bystander.grad.data, np.full(3, 5.0))
    np.testing.assert_array_equal(model.weight_hh.grad.data, np.full((3, 3), 2.0))
    assert model.weight_ih.grad is None


def test_fn_gets_only_the_inputs_it_has_parameters_for(rng):
    model = _Recurrent(rng, tanh=ts.tanh)
    xs = f64(rng.standard_normal((3, 2)), "xs")
    assert ts.gradcheck(model, [xs, *model.parameters()]) is True          # a module: forward(xs)
    assert ts.gradcheck(lambda *args: model(args[0]) * args[1].sum(), [xs, model.weight_ih]) is True
    seen = []
    ts.gradcheck(lambda xs, w=None: seen.append(w) or model(xs), [xs, *model.parameters()])
    assert all(w is model.weight_ih for w in seen)  # a function's optional parameters are filled


def test_a_module_s_optional_forward_arguments_get_none_of_its_parameters():
    """gradcheck(rnn, [xs, *rnn.parameters()]) passed the weights as hx and lengths; a forward(x,
    scale=None) got its layer's weight as scale and gradcheck checked another function."""
    rnn = ts.nn.RNN(3, 4).double()
    xs = f64(np.random.default_rng(0).standard_normal((5, 2, 3)), "xs")
    assert ts.gradcheck(rnn, [xs, *rnn.parameters()]) is True  # (output, h_n): both checked

    class Scaled(ts.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = ts.nn.Linear(3, 3).double()

        def forward(self, x, scale=None):
            seen.append(scale)
            return self.lin(x) if scale is None else self.lin(x) * scale

    seen = []
    model = Scaled()
    assert ts.gradcheck(model, [f64(np.ones((2, 3)), "x"), *model.parameters()]) is True
    assert seen and all(scale is None for scale in seen)
    seen.clear()  # an input before the module's own parameters is its argument, and is checked
    scale = f64(np.full((2, 3), 2.0), "scale")
    report = ts.gradcheck(model, [f64(np.ones((2, 3)), "x"), scale, *model.parameters()],
                          raise_exception=False)
    assert report and all(s is scale for s in seen) and "scale" in [name for name, *_ in report.per_tensor]
    h0 = f64(np.random.default_rng(1).standard_normal((1, 2, 4)), "h0")
    used, original = [], rnn.forward
    rnn.forward = lambda input, hx=None, lengths=None: used.append(hx) or original(input, hx, lengths)
    assert ts.gradcheck(rnn, [xs, h0, *rnn.parameters()]) is True and all(h is h0 for h in used)


def test_wrong_op_in_a_module_forward_is_reported_against_the_parameter(rng):
    class Scaled(ts.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = ts.nn.Parameter(np.array([0.5, -1.0, 1.5]))

        def forward(self, x):
            return bad_cube(x * self.scale)

    model = Scaled()
    x = f64(rng.standard_normal(3), "x")
    with pytest.raises(ts.GradcheckError, match="'scale'") as caught:
        ts.gradcheck(lambda x: model(x).sum(), [x, *model.parameters()])
    (suspect,) = caught.value.report.culprit.suspects
    assert suspect.op == "bad_cube" and suspect.prov.module == "Scaled"
    assert "op 'bad_cube' at Scaled" in str(caught.value)


def test_unnamed_parameters_fall_back_to_their_position(rng):
    a = ts.tensor(rng.standard_normal(2))
    b = ts.tensor(rng.standard_normal(2))
    report = ts.gradcheck(lambda a, b: (a * b).sum(), [a, b], raise_exception=False)
    assert [name for name, *_ in report.per_tensor] == ["input[0]", "input[1]"]


def test_repeated_names_are_disambiguated_by_position():
    first, second = f64([1.0], "weight"), f64([2.0], "weight")
    report = ts.gradcheck(lambda a, b: a * b, [first, second], raise_exception=False)
    assert [name for name, *_ in report.per_tensor] == ["weight (input[0])", "weight (input[1])"]


def test_where_column_shows_the_inputs_provenance():
    with ts.scope("encoder", step=3):
        x = f64([0.1, 0.2], "x", requires_grad=True)
    report = ts.gradcheck(lambda x: bad_cube(x).sum(), x, raise_exception=False)
    assert {row.where for row in report.rows} == {"t=3 [encoder]"}
    assert "t=3 [encoder]" in str(report)


def test_multi_output_fn_checks_every_output():
    x = f64([0.3, -0.6, 0.9], "x")

    def lstm_like(x):
        return x.tanh(), (x.sigmoid() * 2, {"c": x.exp(), "index": x.argmax()})

    assert ts.gradcheck(lstm_like, x) is True
    report = ts.gradcheck(lambda x: (x.tanh(), (x.sigmoid(), bad_cube(x))), x, raise_exception=False)
    assert not report and [s.op for s in report.culprit.suspects] == ["bad_cube"]


def test_relu_at_zero_warns_about_the_kink():
    x = f64([0.7, 0.0, -0.4], "x")
    with pytest.warns(UserWarning, match=r"input 'x' sits on a kink at \(1,\) \(one-sided derivatives"):
        report = ts.gradcheck(lambda x: x.relu(), x, raise_exception=False)
    assert len(report.kink_warnings) == 1 and "(0,)" not in report.kink_warnings[0]
    assert "relu at 0" in report.kink_warnings[0]
    # the central difference at the kink sees half a slope, backward sees none: a failure there
    assert [row.index for row in report.rows if row.failed] == [(1,)]


def test_maximum_ties_warn_about_the_kink_but_agree():
    x, y = f64([1.0, 2.0], "x"), f64([0.5, 2.0], "y")
    with pytest.warns(UserWarning, match="kink") as caught:
        report = ts.gradcheck(lambda x, y: ts.maximum(x, y), [x, y], raise_exception=False)
    assert report  # ties split the gradient in half, which is also what the central difference sees
    assert len(report.kink_warnings) == 2
    assert all("at (1,)" in message for message in report.kink_warnings)
    assert {str(w.message).split("'")[1] for w in caught} == {"x", "y"}


def test_no_kink_warning_on_smooth_functions(composite_inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = ts.gradcheck(composite, composite_inputs, raise_exception=False)
    assert report.kink_warnings == []


def test_random_ops_inside_fn_see_the_same_draws_on_every_run():
    x = f64([0.2, -0.5, 1.1, 0.4], "x")
    state_before = ts.creation.generator().bit_generator.state

    def dropout_like(x):
        keep = ts.rand(4, dtype=np.float64) > 0.5
        return ts.where(keep, x * 2.0, 0.0).tanh()

    assert ts.gradcheck(dropout_like, x) is True
    assert ts.creation.generator().bit_generator.state == state_before


def test_localisation_cap_is_reported(monkeypatch, rng):
    monkeypatch.setattr(gradcheck_module, "MAX_LOCALISED_OPS", 1)
    x, w = f64(rng.standard_normal((2, 3)), "x"), f64(rng.standard_normal((3, 2)), "w")
    report = ts.gradcheck(_with_wrong_op, [x, w], raise_exception=False)
    assert report.culprit is None
    assert "checked the 1 ops nearest the output" in report.localisation_note
    assert report.localisation_note in str(report)


@pytest.mark.parametrize("eps", [0.0, -1e-6])
def test_nonpositive_eps_is_rejected(eps):
    with pytest.raises(ValueError, match="eps must be > 0"):
        ts.gradcheck(lambda x: x, f64([1.0]), eps=eps)


def test_integer_input_is_rejected_by_name():
    with pytest.raises(TypeError, match=r"input\[1\] 'idx' has dtype int64"):
        ts.gradcheck(lambda x, i: x, [f64([1.0]), ts.tensor(np.array([0]), name="idx")])


def test_non_tensor_and_non_leaf_and_repeated_inputs_are_rejected():
    x = f64([1.0], "x", requires_grad=True)
    with pytest.raises(TypeError, match=r"input\[0\] is a ndarray"):
        ts.gradcheck(lambda x: x, [np.ones(2)])
    with pytest.raises(ValueError, match="made by op 'mul', not a leaf"):
        ts.gradcheck(lambda x: x, [x * 2.0])
    with pytest.raises(ValueError, match=r"input\[1\] 'x' is the same tensor as input\[0\]"):
        ts.gradcheck(lambda a, b: a * b, [x, x])
    with pytest.raises(ValueError, match="no inputs"):
        ts.gradcheck(lambda: x, [])


def test_fn_returning_no_float_tensor_is_rejected():
    x = f64([1.0, 2.0], "x")
    with pytest.raises(ValueError, match="fn returned a int64 Tensor"):
        ts.gradcheck(lambda x: x.argmax(), x)
    with pytest.raises(ValueError, match="fn returned a float"):
        ts.gradcheck(lambda x: 3.0, x)


def test_fn_returning_a_tensor_that_does_not_require_grad_is_rejected():
    x = f64([1.0, 2.0], "x")
    with pytest.raises(ValueError, match="requires grad"):
        ts.gradcheck(lambda x: x.detach() * 2.0, x)
    assert x.requires_grad is False  # restored even though the check raised


def test_a_function_whose_output_is_not_finite_is_named_not_blamed_on_a_backward():
    """log(-1) = nan made both sides nan, and the report blamed the backward of the output."""
    x = f64([-1.0, 2.0], "x")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match=r"fn's output 0 \(shape \(\)\) is not "
                                                                       "finite at these inputs"):
        ts.gradcheck(lambda v: v.log().sum(), x)
