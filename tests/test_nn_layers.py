"""Linear, Embedding, Dropout and Sequential: values, initialisation, gradients (float64 finite
differences), PyTorch's reprs and rules (padding_idx, inverted dropout), and bad input."""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np
import pytest
from helpers import assert_grads_match

import tinygrad_seq as ts
from tinygrad_seq.nn import functional as F

# -- Linear -----------------------------------------------------------------------------------


def test_linear_computes_x_w_transpose_plus_b(rng: np.random.Generator) -> None:
    layer = ts.nn.Linear(3, 4).double()
    assert layer.weight.shape == (4, 3) and layer.bias.shape == (4,)
    x = rng.standard_normal((5, 2, 3))
    expected = x @ layer.weight.numpy().T + layer.bias.numpy()
    np.testing.assert_allclose(layer(ts.tensor(x)).numpy(), expected, rtol=1e-14)
    assert layer(ts.tensor(x[0, 0])).shape == (4,)  # a single vector works too
    no_bias = ts.nn.Linear(3, 4, bias=False)
    assert no_bias.bias is None and [name for name, _ in no_bias.named_parameters()] == ["weight"]


def test_linear_gradients_match_finite_differences(rng: np.random.Generator) -> None:
    arrays = [rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)]
    assert_grads_match(F.linear, arrays)
    assert_grads_match(lambda x, w: F.linear(x, w), arrays[:2])


def test_linear_initialises_uniform_within_one_over_sqrt_fan_in() -> None:
    layer = ts.nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    for values in (layer.weight.numpy(), layer.bias.numpy()):
        assert values.dtype == np.float32
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.98 * bound
    assert abs(layer.weight.numpy().std() - bound / np.sqrt(3)) < 0.02 * bound


def test_linear_repr_and_bad_input() -> None:
    assert repr(ts.nn.Linear(3, 4)) == "Linear(in_features=3, out_features=4, bias=True)"
    assert repr(ts.nn.Linear(3, 4, bias=False)) == "Linear(in_features=3, out_features=4, bias=False)"
    with pytest.raises(ValueError, match=re.escape("linear: input of shape (2, 5) does not match weight "
                                                   "(4, 3): expected 3 features in the last dimension")):
        ts.nn.Linear(3, 4)(ts.randn(2, 5))
    with pytest.raises(ValueError, match="Linear: in_features must be an integer >= 0, got -1"):
        ts.nn.Linear(-1, 4)


# -- Embedding ----------------------------------------------------------------------------------


def test_embedding_looks_up_rows_and_sums_gradients_of_repeated_indices() -> None:
    table = ts.nn.Embedding(5, 3).double()
    indices = np.array([[1, 3, 1], [0, 1, 4]])
    out = table(indices)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out.numpy(), table.weight.numpy()[indices])
    out.backward(gradient=np.ones(out.shape))
    np.testing.assert_array_equal(table.weight.grad.numpy()[:, 0], [1, 3, 0, 1, 1])  # row 1 used 3 times


def test_embedding_gradients_match_finite_differences(rng: np.random.Generator) -> None:
    indices = ts.tensor(np.array([2, 0, 2, 3]))
    assert_grads_match(lambda weight: F.embedding(indices, weight), [rng.standard_normal((4, 3))])


def test_embedding_padding_row_starts_at_zero_and_never_trains() -> None:
    table = ts.nn.Embedding(4, 2, padding_idx=-1)
    assert table.padding_idx == 3 and not table.weight.numpy()[3].any() and table.weight.numpy()[:3].all()
    out = table(ts.tensor([[3, 1], [3, 3]]))
    assert not out.numpy()[0, 0].any()
    (out * 2.0).sum().backward()
    np.testing.assert_array_equal(table.weight.grad.numpy(), [[0, 0], [2, 2], [0, 0], [0, 0]])
    # even a padding row that was changed by hand is looked up as is, and still gets no gradient
    table.weight.data = np.ones((4, 2), np.float32)
    np.testing.assert_array_equal(table(ts.tensor([3])).numpy(), [[1, 1]])


def test_embedding_initialises_standard_normal() -> None:
    values = ts.nn.Embedding(2000, 50).weight.numpy()
    assert values.dtype == np.float32
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01


def test_embedding_repr_and_bad_input() -> None:
    assert repr(ts.nn.Embedding(10, 3)) == "Embedding(10, 3)"
    assert repr(ts.nn.Embedding(10, 3, padding_idx=0)) == "Embedding(10, 3, padding_idx=0)"
    table = ts.nn.Embedding(4, 2)
    with pytest.raises(IndexError, match=re.escape("embedding: indices [-1, 4] are out of range for a table "
                                                   "of 4 rows")):
        table(ts.tensor([0, 4, -1]))
    with pytest.raises(TypeError, match="embedding: indices must be integers, got dtype float32"):
        table(ts.tensor([1.0]))
    with pytest.raises(ValueError, match=re.escape("padding_idx 4 must be within [-4, 4)")):
        ts.nn.Embedding(4, 2, padding_idx=4)


def test_functional_embedding_reads_a_negative_padding_idx_as_the_module_does() -> None:
    """F.embedding(padding_idx=-1) trained the last row: only the module counted from the end."""
    weight = ts.tensor(np.ones((5, 3)), requires_grad=True)
    F.embedding(np.array([4, 1, 4]), weight, padding_idx=-1).sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy().sum(axis=1), [0, 3, 0, 0, 0])
    with pytest.raises(ValueError, match=re.escape("embedding: padding_idx -6 must be within [-5, 5)")):
        F.embedding(np.array([0]), weight, padding_idx=-6)
    with pytest.raises(TypeError, match="embedding: padding_idx must be an integer, got 1.0"):
        F.embedding(np.array([0]), weight, padding_idx=1.0)


# -- Dropout ------------------------------------------------------------------------------------


def test_dropout_zeroes_a_fraction_p_and_scales_survivors() -> None:
    x = ts.ones(200, 500, dtype=np.float64, requires_grad=True)
    out = ts.nn.Dropout(0.3)(x)
    values = out.numpy()
    assert set(np.unique(values)) == {0.0, 1 / 0.7}
    assert abs((values == 0).mean() - 0.3) < 0.01
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), values)  # d out / d x is the scaled mask itself


def test_dropout_gradient_matches_finite_differences(rng: np.random.Generator) -> None:
    """The mask is drawn from the seeded generator; reseeding before each call makes the
    function deterministic, so finite differences apply."""
    def dropped(x: ts.Tensor) -> ts.Tensor:
        ts.manual_seed(3)
        return F.dropout(x, 0.4)

    assert_grads_match(dropped, [rng.standard_normal((3, 4))])


def test_dropout_is_the_identity_in_eval_mode_and_at_p_zero() -> None:
    x = ts.randn(4, 5)
    layer = ts.nn.Dropout(0.5)
    assert layer.eval()(x) is x
    assert F.dropout(x, 0.0) is x and F.dropout(x, 0.9, training=False) is x


def test_dropout_with_p_one_drops_everything() -> None:
    x = ts.randn(3, 3, requires_grad=True)
    out = F.dropout(x, 1.0)
    out.sum().backward()
    assert not out.numpy().any() and not x.grad.numpy().any()


def test_dropout_masks_follow_the_seed() -> None:
    x = ts.ones(50)
    ts.manual_seed(9)
    first = F.dropout(x, 0.5).numpy()
    ts.manual_seed(9)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)


@pytest.mark.parametrize("p", [-0.1, 1.5, "0.5", True])
def test_dropout_rejects_bad_probabilities(p: object) -> None:
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        ts.nn.Dropout(p)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        F.dropout(ts.ones(2), p)


def test_dropout_repr() -> None:
    assert repr(ts.nn.Dropout(0.25)) == "Dropout(p=0.25)"


# -- Sequential ---------------------------------------------------------------------------------


def test_sequential_chains_and_behaves_like_a_list(rng: np.random.Generator) -> None:
    first, second = ts.nn.Linear(3, 4).double(), ts.nn.Linear(4, 2).double()
    model = ts.nn.Sequential(first, ts.nn.Dropout(0.5), second).eval()
    x = ts.tensor(rng.standard_normal((5, 3)))
    np.testing.assert_array_equal(model(x).numpy(), second(first(x)).numpy())
    assert len(model) == 3 and list(model) == [first, model[1], second]
    assert model[0] is first and model[-1] is second
    assert [name for name, _ in model.named_children()] == ["0", "1", "2"]
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    tail = model[1:]
    assert isinstance(tail, ts.nn.Sequential) and [n for n, _ in tail.named_children()] == ["1", "2"]
    model.append(ts.nn.Linear(2, 1))
    assert len(model) == 4 and "3.weight" in model.state_dict()
    with pytest.raises(IndexError, match="Sequential: index 4 is out of range for 4 modules"):
        model[4]


def test_sequential_from_an_ordered_dict_keeps_names() -> None:
    model = ts.nn.Sequential(OrderedDict([("encoder", ts.nn.Linear(2, 3)), ("drop", ts.nn.Dropout())]))
    assert [name for name, _ in model.named_children()] == ["encoder", "drop"]
    assert model.encoder is model[0]


def test_sequential_children_record_their_module_path() -> None:
    model = ts.nn.Sequential(ts.nn.Linear(2, 3), ts.nn.Linear(3, 1))
    out = model(ts.randn(4, 2))
    assert out.grad_fn.prov.module == "Sequential.1"


def test_sequential_repr_and_bad_children() -> None:
    model = ts.nn.Sequential(ts.nn.Linear(3, 4), ts.nn.Dropout(0.5))
    assert repr(model) == ("Sequential(\n  (0): Linear(in_features=3, out_features=4, bias=True)\n"
                           "  (1): Dropout(p=0.5)\n)")
    with pytest.raises(TypeError, match="Sequential: child '1' is a function, not a Module"):
        ts.nn.Sequential(ts.nn.Linear(1, 1), lambda x: x)


# -- PyTorch parity -----------------------------------------------------------------------------


def test_linear_and_embedding_match_pytorch(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference = torch.nn.Linear(3, 4).double()
    layer = ts.nn.Linear(3, 4).double()
    layer.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    x = rng.standard_normal((2, 3))
    expected = reference(torch.tensor(x))
    expected.sum().backward()
    out = layer(ts.tensor(x))
    out.sum().backward()
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), atol=1e-14)
    np.testing.assert_allclose(layer.weight.grad.numpy(), reference.weight.grad.numpy(), atol=1e-14)

    torch_table = torch.nn.Embedding(5, 2, padding_idx=1).double()
    table = ts.nn.Embedding(5, 2, padding_idx=1).double()
    table.load_state_dict({"weight": torch_table.weight.detach().numpy()})
    indices = np.array([[1, 2], [4, 1], [2, 2]])
    weights = rng.standard_normal((3, 2, 2))
    (torch_table(torch.tensor(indices)) * torch.tensor(weights)).sum().backward()
    (table(indices) * weights).sum().backward()
    np.testing.assert_allclose(table.weight.grad.numpy(), torch_table.weight.grad.numpy(), atol=1e-14)
