"""PyTorch interop: state dicts map key for key, and modules convert to and from their twins with
the same hyper-parameters, weights, dtype and mode (and so the same outputs)."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_seq as ts

torch = pytest.importorskip("torch")
interop = pytest.importorskip("tinygrad_seq.interop")

# (class name, constructor kwargs): every module with a twin, in non-default configurations
TWINS = [
    ("Linear", dict(in_features=3, out_features=2)),
    ("Linear", dict(in_features=3, out_features=2, bias=False)),
    ("Embedding", dict(num_embeddings=5, embedding_dim=3, padding_idx=1)),
    ("Dropout", dict(p=0.25)),
    ("RNN", dict(input_size=3, hidden_size=4, num_layers=2, nonlinearity="relu", batch_first=True,
                 dropout=0.5, bidirectional=True)),
    ("LSTM", dict(input_size=3, hidden_size=2, num_layers=2, bias=False, bidirectional=True)),
    ("GRU", dict(input_size=2, hidden_size=3, batch_first=True)),
    ("RNNCell", dict(input_size=3, hidden_size=2, nonlinearity="relu")),
    ("LSTMCell", dict(input_size=3, hidden_size=2, bias=False)),
    ("GRUCell", dict(input_size=3, hidden_size=4)),
]
AVAILABLE = [twin for twin in TWINS if hasattr(ts.nn, twin[0])]


def twin_id(twin: tuple) -> str:
    return twin[0] + "".join(f"-{k}={v}" for k, v in twin[1].items())


def assert_same_weights(ours: ts.nn.Module, theirs) -> None:
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    for name, array in ours_sd.items():
        assert array.dtype == theirs_sd[name].numpy().dtype, name
        np.testing.assert_array_equal(array, theirs_sd[name].numpy(), err_msg=name)


@pytest.mark.parametrize("twin", AVAILABLE, ids=twin_id)
def test_to_torch_builds_the_twin_with_the_same_hyperparameters_and_weights(twin):
    name, kwargs = twin
    ours = getattr(ts.nn, name)(**kwargs).double().eval()
    theirs = interop.to_torch(ours)
    assert type(theirs) is getattr(torch.nn, name) and not theirs.training
    for key, value in kwargs.items():
        stored = getattr(theirs, key)
        assert (stored is not None if key == "bias" and name == "Linear" else stored) == value, key
    assert_same_weights(ours, theirs)


@pytest.mark.parametrize("twin", AVAILABLE, ids=twin_id)
def test_from_torch_builds_our_twin_with_the_same_hyperparameters_and_weights(twin):
    name, kwargs = twin
    theirs = getattr(torch.nn, name)(**kwargs, **({} if name == "Dropout" else {"dtype": torch.float64}))
    ours = interop.from_torch(theirs)
    assert type(ours) is getattr(ts.nn, name) and ours.training
    assert_same_weights(ours, theirs)
    back = interop.to_torch(ours)
    assert repr(back) == repr(theirs)


@pytest.mark.skipif(not hasattr(ts.nn, "LSTM"), reason="nn.LSTM not available")
def test_converted_lstm_computes_the_same_outputs():
    theirs = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    ours = interop.from_torch(theirs)
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    out, (h, c) = ours(ts.Tensor(x))
    want_out, (want_h, want_c) = theirs(torch.tensor(x))
    for got, want in ((out, want_out), (h, want_h), (c, want_c)):
        np.testing.assert_allclose(got.data, want.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not all(hasattr(ts.nn, n) for n in ("Sequential", "Linear", "Dropout")),
                    reason="nn.Sequential / Linear / Dropout not available")
def test_sequential_converts_both_ways_keeping_names_and_outputs():
    ours = ts.nn.Sequential(ts.nn.Linear(3, 4), ts.nn.Dropout(0.1), ts.nn.Linear(4, 2)).double().eval()
    theirs = interop.to_torch(ours)
    assert isinstance(theirs, torch.nn.Sequential) and [type(m).__name__ for m in theirs] == [
        "Linear", "Dropout", "Linear"]
    assert_same_weights(ours, theirs)
    x = np.random.default_rng(1).standard_normal((5, 3))
    np.testing.assert_allclose(ours(ts.Tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    again = interop.from_torch(theirs)
    assert type(again) is ts.nn.Sequential and not again.training
    assert_same_weights(again, theirs)


def test_state_dicts_map_key_for_key_and_cast_to_our_dtype(rng):
    model = ts.nn.Module()
    model.weight = ts.nn.Parameter(rng.standard_normal((2, 3)).astype(np.float32))
    model.bias = ts.nn.Parameter(rng.standard_normal(2).astype(np.float32))
    torch_sd = interop.to_torch_state_dict(model)
    assert list(torch_sd) == ["weight", "bias"] and torch_sd["weight"].dtype == torch.float32
    torch_sd["weight"] += 1  # writable copies: our read-only arrays are untouched
    assert not np.array_equal(torch_sd["weight"].numpy(), model.weight.data)

    twin = torch.nn.Linear(3, 2, dtype=torch.float64)
    assert interop.from_torch_state_dict(model, twin.state_dict()) == ([], [])
    assert model.weight.dtype == np.float32
    np.testing.assert_array_equal(model.weight.data, twin.weight.detach().numpy().astype(np.float32))
    with pytest.raises(ts.nn.StateDictError, match="unexpected keys: extra"):
        interop.from_torch_state_dict(model, {**twin.state_dict(), "extra": torch.zeros(1)})
    assert interop.from_torch_state_dict(model, {"weight": torch.zeros(2, 3)}, strict=False) == (["bias"], [])


def test_modules_without_a_twin_are_refused_with_the_supported_list():
    with pytest.raises(TypeError, match=r"to_torch: no PyTorch twin for Module; supported: Sequential"):
        interop.to_torch(ts.nn.Module())
    with pytest.raises(TypeError, match=r"from_torch: no tinygrad_seq twin for Conv1d"):
        interop.from_torch(torch.nn.Conv1d(1, 1, 1))

    class MyLinear(torch.nn.Linear):  # a subclass may compute something else: not a twin
        pass

    with pytest.raises(TypeError, match="no tinygrad_seq twin for MyLinear"):
        interop.from_torch(MyLinear(2, 2))


@pytest.mark.parametrize("make,option", [
    (lambda: torch.nn.LSTM(3, 4, proj_size=2), "proj_size=2"),
    (lambda: torch.nn.Embedding(4, 2, max_norm=1.0), "max_norm=1.0"),
])
def test_torch_options_without_an_equivalent_are_refused(make, option):
    with pytest.raises(ValueError, match=f"with {option} has no equivalent here"):
        interop.from_torch(make())


def test_bfloat16_weights_arrive_as_float32_holding_the_same_values():
    """numpy has no bfloat16: .numpy() raised 'Got unsupported ScalarType BFloat16'."""
    theirs = torch.nn.LSTM(2, 3).to(torch.bfloat16)
    ours = interop.from_torch(theirs)
    assert ours.weight_ih_l0.dtype == np.float32
    np.testing.assert_array_equal(ours.weight_hh_l0.numpy(), theirs.weight_hh_l0.detach().float().numpy())
    interop.from_torch_state_dict(ts.nn.LSTM(2, 3), theirs.state_dict())


def test_the_wrong_kind_of_argument_is_named():
    with pytest.raises(TypeError, match="to_torch_state_dict: expected a tinygrad_seq module, got dict"):
        interop.to_torch_state_dict({"a": np.ones(2)})
    with pytest.raises(TypeError, match="from_torch_state_dict: expected a state dict .* got NoneType"):
        interop.from_torch_state_dict(ts.nn.Linear(2, 2), None)


def test_tied_weights_and_a_module_used_twice_stay_shared_across_the_conversion():
    """Embedding and output weights tied, and one Linear used twice: a twin with copies would let them
    drift apart in training. Checked by the parameter count and by one optimizer step on each side."""
    embed, head = ts.nn.Embedding(5, 3), ts.nn.Linear(3, 5, bias=False)
    head.weight = embed.weight
    square = ts.nn.Linear(5, 5)
    ours = ts.nn.Sequential(embed, head, square, square).double()
    theirs = interop.to_torch(ours)
    assert theirs[1].weight is theirs[0].weight and theirs[3].weight is theirs[2].weight
    assert len(list(theirs.parameters())) == len(list(ours.parameters())) == 3
    ids = np.array([0, 3, 3, 1])
    loss = (ours(ts.tensor(ids)) ** 2).sum()
    loss.backward()
    (theirs(torch.tensor(ids)) ** 2).sum().backward()
    ts.optim.SGD(ours.parameters(), lr=0.1).step()
    torch.optim.SGD(theirs.parameters(), lr=0.1).step()
    for name, array in ours.state_dict().items():  # (the tied gradients add up in another order)
        np.testing.assert_allclose(array, theirs.state_dict()[name].numpy(), rtol=1e-12, err_msg=name)
    back = interop.from_torch(theirs)
    assert back[1].weight is back[0].weight and back[3].weight is back[2].weight
    assert len(list(back.parameters())) == 3
    assert_same_weights(back, theirs)
