"""@ts.custom_op: user ops on numpy arrays take part in autograd like built-ins."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_seq as ts


@ts.custom_op
def cube(x):
    return x**3, lambda g: (3 * x**2 * g,)


@ts.custom_op
def scaled_product(a, b):
    """a * b (broadcasting); the backward returns gradients in the broadcast shape."""
    return a * b, lambda g: (g * b, g * a)


@ts.custom_op(name="shifted_softplus")
def softplus(x, shift=0.0):
    e = np.exp(x - shift)
    return np.log1p(e), lambda g: (g * e / (1 + e),)


@ts.custom_op
def scale(x, factor):
    """A Python scalar argument: a constant, so its gradient slot is None."""
    return x * factor, lambda g: (g * factor, None)


@ts.custom_op
def two_grads_for_one_input(x):
    return 2 * x, lambda g: (2 * g, g)


def test_forward_matches_numpy_and_backward_matches_finite_differences(rng):
    data = rng.standard_normal((2, 3))
    x = ts.tensor(data, requires_grad=True, name="x")
    y = cube(x)
    np.testing.assert_allclose(y.data, data**3)
    assert y.dtype == np.float64
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, 3 * data**2)
    assert ts.gradcheck(lambda x: cube(x).tanh(), [x]) is True


def test_broadcasting_inputs_get_gradients_summed_to_their_shapes(rng):
    a_data, b_data = rng.standard_normal((3, 1)), rng.standard_normal(4)
    a = ts.tensor(a_data, requires_grad=True, name="a")
    b = ts.tensor(b_data, requires_grad=True, name="b")
    out = scaled_product(a, b)
    assert out.shape == (3, 4)
    out.sum().backward()
    np.testing.assert_allclose(a.grad.data, np.full((3, 1), b_data.sum()))
    np.testing.assert_allclose(b.grad.data, np.full(4, a_data.sum()))
    assert ts.gradcheck(lambda a, b: scaled_product(a, b).sigmoid(), [a, b]) is True


def test_node_records_the_op_name_and_provenance():
    x = ts.tensor(np.array([0.5, -0.5]), requires_grad=True)
    with ts.scope("encoder", step=2, gate="f"):
        y = cube(x)
    node = y.grad_fn
    assert node.op == "cube"
    assert (node.prov.label, node.prov.step, node.prov.gate) == ("encoder", 2, "f")
    assert node.parents == (x._node,)


def test_node_inside_a_module_records_the_module():
    class Block(ts.nn.Module):
        def forward(self, x):
            return cube(x)

    y = Block()(ts.tensor(np.array([1.0]), requires_grad=True))
    assert y.grad_fn.prov.module == "Block"


def test_name_keyword_sets_the_op_name_and_kwargs_reach_the_forward():
    x = ts.tensor(np.array([0.0, 1.0, 2.0]), requires_grad=True, name="x")
    y = softplus(x, shift=1.0)
    assert y.grad_fn.op == "shifted_softplus"
    np.testing.assert_allclose(y.data, np.log1p(np.exp(np.array([-1.0, 0.0, 1.0]))))
    assert ts.gradcheck(lambda x: softplus(x, shift=1.0), x) is True


def test_scalar_arguments_are_constants():
    x = ts.tensor(np.array([1.0, -2.0]), requires_grad=True, name="x")
    y = scale(x, 2.5)
    np.testing.assert_allclose(y.data, [2.5, -5.0])
    assert y.grad_fn.parents == (x._node, None)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, [2.5, 2.5])
    assert ts.gradcheck(lambda x: scale(x, -0.75).exp(), x) is True


def test_inputs_that_do_not_require_grad_make_no_node():
    out = cube(ts.tensor(np.array([2.0])))
    assert out.grad_fn is None and out.item() == 8.0


def test_wrong_number_of_gradients_is_a_clear_error():
    x = ts.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = two_grads_for_one_input(x)
    with pytest.raises(ValueError, match="custom op 'two_grads_for_one_input': backward returned 2 "
                                         "gradients for 1 inputs"):
        y.sum().backward()


def test_a_custom_op_that_forgets_its_backward_is_named_at_once() -> None:
    """It used row 0 of the output as the output and its rest as the backward (unpacking an array)."""

    @ts.custom_op
    def double(v):
        return v * 2

    with pytest.raises(TypeError, match=r"custom op 'double': must return \(output, backward\).*ndarray"):
        double(ts.randn(2, 3, requires_grad=True))

    @ts.custom_op
    def stringly(v):
        return np.array(["a"]), lambda g: (g,)

    with pytest.raises(TypeError, match="custom op 'stringly': output of dtype <U1"):
        stringly(ts.randn(1))


def test_a_custom_backward_s_gradients_are_checked_naming_the_op() -> None:
    def op_returning(grad: object):
        @ts.custom_op(name="scaled")
        def scaled(v):
            return v * 3, lambda g: (grad,)
        return scaled

    x = ts.randn(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"'scaled': backward's gradient 0 has shape \(4,\).*shape \(3,\)"):
        op_returning(np.ones(4))(x).sum().backward()
    with pytest.raises(ValueError, match=r"gradient 0 has shape \(1,\), which does not sum back"):
        op_returning(np.ones(1))(x).sum().backward()
    with pytest.raises(TypeError, match="gradient 0 is of dtype <U1"):
        op_returning("a")(x).sum().backward()
    op_returning(np.ones((2, 3)))(x).sum().backward()  # a broadcast shape is summed back
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])


def test_tensors_go_positionally_and_an_integer_output_is_not_differentiable() -> None:
    @ts.custom_op
    def scale(x, w=None):
        return x * w, lambda g: (g * w,)

    x, w = ts.tensor([1.0, 2.0], requires_grad=True), ts.tensor([3.0, 4.0], requires_grad=True)
    with pytest.raises(TypeError, match=r"custom op 'scale': Tensor passed as keyword argument 'w'; pass "
                                        r"Tensors positionally"):
        scale(x, w=w)
    assert np.array_equal(scale(x, w=np.array([3.0, 4.0])).numpy(), [3.0, 8.0])  # arrays are settings

    @ts.custom_op
    def rounded(x):
        return np.round(x).astype(np.int64), lambda g: (None,)

    out = rounded(ts.tensor([1.4, 2.6], requires_grad=True))
    assert out.dtype == np.int64 and not out.requires_grad and out._node is None
    np.testing.assert_array_equal(out.numpy(), [1, 3])
