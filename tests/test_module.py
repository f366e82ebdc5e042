"""Module and Parameter: registration, traversal, modes, grads, dtypes, state dicts, provenance, repr.

Tiny hand-written modules keep each expectation derivable by reading the test; PyTorch's
documented behaviour (and, for repr, torch itself) is the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_seq as ts
from tinygrad_seq.nn import Linear, Module, Parameter, Sequential, StateDictError


class Affine(Module):
    """y = x * scale + shift, with two parameters registered in that order."""

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.scale = Parameter(np.arange(1, size + 1, dtype=np.float32))
        self.shift = Parameter(np.zeros(size, np.float32))

    def forward(self, x: ts.Tensor) -> ts.Tensor:
        return x * self.scale + self.shift


class Stack(Module):
    """A parent with a parameter of its own and two Affine children, for dotted names and order."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = Parameter(np.ones(3, np.float32))
        self.first = Affine()
        self.second = Affine()

    def forward(self, x: ts.Tensor) -> ts.Tensor:
        return self.second(self.first(x)) * self.gain


class Tied(Module):
    """Two children holding one shared Parameter object (tied weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.left = Affine()
        self.right = Affine()
        self.right.scale = self.left.scale


def grads_from_sum(model: Module, x: np.ndarray) -> None:
    model(ts.tensor(x)).sum().backward()


# -- registration ------------------------------------------------------------------------------


def test_assignment_registers_parameters_and_children_and_plain_values_stay_plain() -> None:
    model = Stack()
    model.note = "not a parameter"
    model.tensor_attr = ts.tensor([1.0])  # a plain Tensor is state, not a parameter
    assert [name for name, _ in model.named_parameters(recurse=False)] == ["gain"]
    assert [name for name, _ in model.named_children()] == ["first", "second"]
    assert model.note == "not a parameter"
    assert model.gain.name == "gain"  # unnamed parameters are named after their attribute


def test_reassigning_or_deleting_unregisters() -> None:
    model = Stack()
    model.gain = None
    with pytest.raises(TypeError, match="cannot assign a str as child module 'first'"):  # as PyTorch
        model.first = "replaced"
    model.first = None
    assert [name for name, _ in model.named_parameters()] == ["second.scale", "second.shift"]
    assert [name for name, _ in model.named_children()] == ["second"]
    del model.second
    assert list(model.named_parameters()) == []
    assert not hasattr(model, "second")


def test_replacing_a_parameter_keeps_its_registration_slot_current() -> None:
    model = Affine()
    new_scale = Parameter(np.full(3, 7.0, np.float32))
    model.scale = new_scale
    assert dict(model.named_parameters())["scale"] is new_scale


def test_register_parameter_none_declares_an_absent_parameter() -> None:
    model = Affine()
    model.register_parameter("shift", None)
    assert model.shift is None
    assert [name for name, _ in model.named_parameters()] == ["scale"]
    linear = Linear(2, 3, bias=False)
    assert linear.bias is None
    assert [name for name, _ in linear.named_parameters()] == ["weight"]


def test_assigning_before_super_init_raises_a_clear_error() -> None:
    class Forgetful(Module):
        def __init__(self) -> None:
            self.weight = Parameter(np.zeros(2, np.float32))

    with pytest.raises(AttributeError, match=r"Forgetful: call super\(\).__init__\(\) before assigning"):
        Forgetful()


# -- traversal ---------------------------------------------------------------------------------


def test_named_parameters_are_dotted_and_in_registration_order_depth_first() -> None:
    names = [name for name, _ in Stack().named_parameters()]
    assert names == ["gain", "first.scale", "first.shift", "second.scale", "second.shift"]
    nested = Sequential(Stack(), Linear(3, 2))
    assert [name for name, _ in nested.named_parameters()] == [
        "0.gain", "0.first.scale", "0.first.shift", "0.second.scale", "0.second.shift",
        "1.weight", "1.bias"]


def test_named_parameters_prefix_and_parameters_match() -> None:
    model = Stack()
    named = list(model.named_parameters(prefix="net"))
    assert named[0][0] == "net.gain" and named[-1][0] == "net.second.shift"
    assert [p for _, p in named] == list(model.parameters())
    assert all(isinstance(p, Parameter) for p in model.parameters())


def test_a_shared_parameter_appears_once_under_its_first_name() -> None:
    model = Tied()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["left.scale", "left.shift", "right.shift"]
    assert len(list(model.parameters())) == 3


def test_a_state_dict_lists_a_shared_parameter_or_module_under_each_name_as_pytorch() -> None:
    """PyTorch's keys, in its order (a replaced parameter keeps its slot), so that a tied-weight
    model's state dict loads in either library; any one of a shared parameter's names loads it."""
    model = Tied()
    assert list(model.state_dict()) == ["left.scale", "left.shift", "right.scale", "right.shift"]
    shared = Affine()
    assert list(Sequential(shared, shared).state_dict()) == ["0.scale", "0.shift", "1.scale", "1.shift"]
    values = {key: np.full(3, k, np.float32) for k, key in enumerate(model.state_dict())}
    model.load_state_dict(values)
    np.testing.assert_array_equal(model.left.scale.numpy(), values["right.scale"])  # the last name wins
    older = {key: values[key] for key in ("left.scale", "left.shift", "right.shift")}
    assert model.load_state_dict(older) == ([], [])
    np.testing.assert_array_equal(model.right.scale.numpy(), values["left.scale"])
    with pytest.raises(StateDictError, match="missing keys: left.scale, right.scale"):
        model.load_state_dict({"left.shift": values["left.shift"], "right.shift": values["right.shift"]})


def test_a_tied_state_dict_crosses_to_pytorch_and_back() -> None:
    torch = pytest.importorskip("torch")

    class TorchAffine(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale, self.shift = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.zeros(3))

    class TorchTied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left, self.right = TorchAffine(), TorchAffine()
            self.right.scale = self.left.scale

    theirs, ours = TorchTied(), Tied()
    assert list(theirs.state_dict()) == list(ours.state_dict())
    ours.load_state_dict({key: value.numpy() * 2 for key, value in theirs.state_dict().items()})
    theirs.load_state_dict({key: torch.from_numpy(value.copy()) for key, value in ours.state_dict().items()})
    np.testing.assert_array_equal(theirs.left.scale.detach().numpy(), [2, 2, 2])


def test_parameters_recurse_false_gives_only_own_parameters() -> None:
    model = Stack()
    assert list(model.parameters(recurse=False)) == [model.gain]
    assert [name for name, _ in model.named_parameters(recurse=False)] == ["gain"]


def test_modules_children_and_their_names() -> None:
    model = Sequential(Stack(), Linear(3, 2))
    stack, linear = model[0], model[1]
    assert [name for name, _ in model.named_modules()] == ["", "0", "0.first", "0.second", "1"]
    assert list(model.modules()) == [model, stack, stack.first, stack.second, linear]
    assert list(model.named_children()) == [("0", stack), ("1", linear)]
    assert list(model.children()) == [stack, linear]
    assert list(stack.children()) == [stack.first, stack.second]  # children are not recursive


def test_a_shared_child_module_is_visited_once() -> None:
    shared = Affine()
    model = Sequential(shared, shared)
    assert list(model.modules()) == [model, shared]
    assert [name for name, _ in model.named_parameters()] == ["0.scale", "0.shift"]


# -- modes and grads ---------------------------------------------------------------------------


def test_train_and_eval_reach_every_descendant_and_return_self() -> None:
    model = Sequential(Stack(), ts.nn.Dropout(0.5))
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert [m.training for m in model.modules()] == [False] * 5
    assert model.train() is model
    assert [m.training for m in model.modules()] == [True] * 5
    assert model.train(False) is model and not model[0].first.training


def test_zero_grad_sets_grads_to_none_by_default() -> None:
    model = Stack()
    grads_from_sum(model, np.ones(3, np.float32))
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_zero_grad_without_set_to_none_gives_zeros_of_each_parameters_shape_and_dtype() -> None:
    model = Sequential(Linear(2, 3), Linear(3, 1)).double()
    grads_from_sum(model, np.ones((4, 2)))
    assert any(np.any(p.grad.data != 0) for p in model.parameters())
    model.zero_grad(set_to_none=False)
    for param in model.parameters():
        assert param.grad.shape == param.shape
        assert param.grad.dtype == np.float64
        np.testing.assert_array_equal(param.grad.data, 0.0)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_resets_a_shared_parameter_once_per_holder_to_the_same_result(set_to_none: bool) -> None:
    """zero_grad walks each module's own parameters, so a tied one is reset twice: the second reset
    must leave what the first did (None, or zeros of the parameter's shape and dtype)."""
    model = Tied()
    x = ts.tensor(np.ones(3, np.float32))
    (model.left(x) + model.right(x)).sum().backward()
    shared = model.left.scale
    np.testing.assert_array_equal(shared.grad.data, 2.0)
    model.zero_grad(set_to_none=set_to_none)
    for param in model.parameters():
        if set_to_none:
            assert param.grad is None
        else:
            assert param.grad.shape == param.shape and param.grad.dtype == param.dtype
            np.testing.assert_array_equal(param.grad.data, 0.0)


# -- dtypes ------------------------------------------------------------------------------------


def test_to_double_and_float_convert_parameters_and_grads_in_place() -> None:
    model = Stack()
    grads_from_sum(model, np.ones(3, np.float32))
    params_before = list(model.parameters())
    values_before = [p.data.copy() for p in params_before]
    assert model.to(np.float64) is model
    assert all(a is b for a, b in zip(model.parameters(), params_before, strict=True))
    for param, value in zip(model.parameters(), values_before, strict=True):
        assert param.dtype == np.float64 and param.grad.dtype == np.float64
        np.testing.assert_array_equal(param.data, value)
    assert model.float() is model
    assert all(p.dtype == np.float32 and p.grad.dtype == np.float32 for p in model.parameters())
    model.zero_grad()
    model.double()
    assert all(p.dtype == np.float64 and p.grad is None for p in model.parameters())


def test_an_optimizer_made_before_double_still_updates_the_module() -> None:
    model = Linear(2, 1)
    optimizer = ts.optim.SGD(model.parameters(), lr=0.1)
    model.double()
    weight_before = model.weight.data.copy()
    model(ts.tensor(np.array([[1.0, 2.0]]))).sum().backward()  # d/dW = x, d/db = 1
    optimizer.step()
    assert model.weight.dtype == np.float64
    np.testing.assert_allclose(model.weight.data, weight_before - 0.1 * np.array([[1.0, 2.0]]), rtol=1e-12)


def test_backward_after_double_gives_float64_grads() -> None:
    model = Affine().double()
    grads_from_sum(model, np.array([1.0, 2.0, 3.0]))
    assert model.scale.grad.dtype == np.float64
    np.testing.assert_array_equal(model.scale.grad.data, [1.0, 2.0, 3.0])


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_to_rejects_non_float_dtypes(dtype: type) -> None:
    model = Affine()
    with pytest.raises(TypeError, match="floating point"):
        model.to(dtype)
    assert all(p.dtype == np.float32 for p in model.parameters())


# -- state dicts -------------------------------------------------------------------------------


def test_state_dict_has_dotted_keys_and_read_only_arrays_equal_to_parameters() -> None:
    model = Stack()
    state = model.state_dict()
    assert list(state) == [name for name, _ in model.named_parameters()]
    for name, param in model.named_parameters():
        np.testing.assert_array_equal(state[name], param.data)
        assert not state[name].flags.writeable
        with pytest.raises(ValueError):
            state[name][0] = 99.0


def test_state_dict_is_a_snapshot_not_affected_by_later_updates() -> None:
    model = Affine()
    state = model.state_dict()
    model.scale.data = np.zeros(3, np.float32)
    np.testing.assert_array_equal(state["scale"], [1.0, 2.0, 3.0])


def test_load_state_dict_round_trip_keeps_parameter_dtypes() -> None:
    source = Sequential(Linear(2, 3), Linear(3, 1))
    ts.manual_seed(1)  # different initial values, so the load visibly changes them
    target = Sequential(Linear(2, 3), Linear(3, 1))
    as_float64 = {k: v.astype(np.float64) for k, v in source.state_dict().items()}
    assert target.load_state_dict(as_float64) == ([], [])
    for (name, param), (_, expected) in zip(target.named_parameters(), source.named_parameters(),
                                            strict=True):
        assert param.dtype == np.float32, name
        np.testing.assert_array_equal(param.data, expected.data)


def test_load_state_dict_accepts_tensors_and_lists() -> None:
    model = Affine()
    model.load_state_dict({"scale": ts.tensor([4.0, 5.0, 6.0]), "shift": [0.5, 0.5, 0.5]})
    np.testing.assert_array_equal(model.scale.data, [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(model.shift.data, [0.5, 0.5, 0.5])


def test_strict_load_lists_every_missing_unexpected_and_mismatched_key_at_once() -> None:
    model = Stack()
    state = dict(model.state_dict())
    del state["first.shift"], state["second.scale"]
    state["first.bias"] = np.zeros(3)
    state["gain"] = np.ones((2, 5))
    with pytest.raises(StateDictError) as excinfo:
        model.load_state_dict(state)
    message = str(excinfo.value)
    assert message.startswith("Stack.load_state_dict:")
    for key in ("first.shift", "second.scale", "first.bias", "gain"):
        assert key in message
    assert "missing keys: first.shift, second.scale" in message
    assert "unexpected keys: first.bias" in message
    assert "gain: checkpoint (2, 5), model (3,)" in message


def test_non_strict_load_returns_missing_and_unexpected_and_loads_the_rest() -> None:
    model = Affine()
    missing, unexpected = model.load_state_dict({"scale": np.full(3, 9.0), "extra": np.ones(1)},
                                                strict=False)
    assert missing == ["shift"] and unexpected == ["extra"]
    np.testing.assert_array_equal(model.scale.data, [9.0, 9.0, 9.0])
    np.testing.assert_array_equal(model.shift.data, [0.0, 0.0, 0.0])


def test_a_shape_mismatch_raises_even_without_strict_and_a_failed_load_changes_nothing() -> None:
    model = Stack()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = {k: np.full(v.shape, 42.0) for k, v in before.items()}
    state["second.shift"] = np.zeros(4)
    with pytest.raises(StateDictError, match=r"second.shift: checkpoint \(4,\), model \(3,\)"):
        model.load_state_dict(state, strict=False)
    state["second.shift"] = np.zeros(3)
    state["surprise"] = np.zeros(1)
    with pytest.raises(StateDictError, match="unexpected keys: surprise"):
        model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_state_dict_error_is_caught_as_key_error() -> None:
    with pytest.raises(KeyError):
        Affine().load_state_dict({})


def test_lstm_state_dict_round_trip() -> None:
    source = ts.nn.LSTM(2, 3, num_layers=2)
    ts.manual_seed(5)
    target = ts.nn.LSTM(2, 3, num_layers=2)
    assert list(target.state_dict()) == list(source.state_dict())
    target.load_state_dict(source.state_dict())
    x = ts.tensor(np.linspace(-1, 1, 2 * 1 * 2).reshape(2, 1, 2), dtype=np.float32)
    np.testing.assert_array_equal(target(x)[0].data, source(x)[0].data)


# -- calling and provenance --------------------------------------------------------------------


def test_forward_ops_record_the_module_path() -> None:
    model = Stack()
    out = model(ts.tensor(np.ones(3, np.float32)))
    assert out.grad_fn.prov.module == "Stack"  # the final "* gain" runs in the root's forward
    first_out = model.first(ts.tensor(np.ones(3, np.float32)))
    assert first_out.grad_fn.prov.module == "first"  # a registered child called directly: its attribute name


def test_child_ops_record_parent_dot_child() -> None:
    seen: dict[str, str] = {}

    class Probe(Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = Parameter(np.ones(2, np.float32))

        def forward(self, x: ts.Tensor) -> ts.Tensor:
            out = x * self.weight
            seen["probe"] = out.grad_fn.prov.module
            return out

    class Parent(Module):
        def __init__(self) -> None:
            super().__init__()
            self.child = Probe()

        def forward(self, x: ts.Tensor) -> ts.Tensor:
            return self.child(x) + 1.0

    out = Parent()(ts.tensor([1.0, 2.0]))
    assert seen["probe"] == "Parent.child"
    assert out.grad_fn.prov.module == "Parent"
    assert ts.provenance.current is None  # the scope is closed after the call


def test_a_module_records_where_each_call_is_made() -> None:
    """A module reuses the record it made for the same caller's record (``Module.__call__``): a call
    from another scope, or after the module was registered under a new name, gets its own."""
    linear = Linear(2, 2)
    x = ts.tensor(np.ones((1, 2), np.float32))
    assert linear(x).grad_fn.prov.module == "Linear"
    assert linear(x).grad_fn.prov is linear(x).grad_fn.prov  # made once for this caller
    with ts.scope(step=3):
        made = linear(x).grad_fn.prov
    assert (made.module, made.step) == ("Linear", 3)
    assert linear(x).grad_fn.prov.step is None
    model = Sequential(linear)
    assert model(x).grad_fn.prov.module == "Sequential.0"
    assert linear(x).grad_fn.prov.module == "0"  # called directly: its attribute name, now
    assert ts.provenance.current is None


def test_sequential_children_are_scoped_by_index() -> None:
    model = Sequential(Linear(2, 3), Linear(3, 1))
    out = model(ts.tensor(np.ones((1, 2), np.float32)))
    assert out.grad_fn.prov.module == "Sequential.1"


def test_the_provenance_scope_is_restored_when_forward_raises() -> None:
    with pytest.raises(ValueError, match="linear"):
        Linear(2, 3)(ts.tensor(np.ones((1, 5), np.float32)))
    assert ts.provenance.current is None


def test_forward_must_be_defined() -> None:
    with pytest.raises(NotImplementedError, match="Empty must define forward"):
        type("Empty", (Module,), {})()(1)


# -- repr --------------------------------------------------------------------------------------


def test_nested_repr_matches_pytorch_layout() -> None:
    model = Sequential(Linear(2, 3), Linear(3, 1))
    assert repr(model) == ("Sequential(\n"
                           "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
                           "  (1): Linear(in_features=3, out_features=1, bias=True)\n"
                           ")")
    assert repr(Sequential(Sequential(Linear(1, 1, bias=False)))) == (
        "Sequential(\n"
        "  (0): Sequential(\n"
        "    (0): Linear(in_features=1, out_features=1, bias=False)\n"
        "  )\n"
        ")")
    assert repr(Affine()) == "Affine()"


class Described(Module):
    """A module with both an extra_repr and a child: PyTorch prints the extra line inside."""

    def __init__(self, extra: str) -> None:
        super().__init__()
        self.extra = extra
        self.fc = Linear(2, 3)

    def extra_repr(self) -> str:
        return self.extra


@pytest.mark.parametrize("extra", ["hidden=4", "line one\nline two", ""])
def test_repr_with_extra_repr_and_children_matches_torch(extra: str) -> None:
    torch = pytest.importorskip("torch")

    class TorchDescribed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(2, 3)

        def extra_repr(self) -> str:
            return extra

    TorchDescribed.__name__ = "Described"
    assert repr(Described(extra)) == repr(TorchDescribed())


def test_multi_line_extra_repr_without_children_is_indented_like_torch() -> None:
    class Lines(Module):
        def extra_repr(self) -> str:
            return "a=1\nb=2"

    assert repr(Lines()) == "Lines(\n  a=1\n  b=2\n)"


# -- Parameter ---------------------------------------------------------------------------------


def test_parameter_requires_grad_by_default_and_can_opt_out() -> None:
    param = Parameter(np.zeros(2, np.float32))
    assert param.requires_grad and param.is_leaf
    frozen = Parameter(np.zeros(2, np.float32), requires_grad=False)
    assert not frozen.requires_grad
    assert isinstance(frozen, ts.Tensor)


def test_parameter_repr_and_copy_semantics() -> None:
    source = np.array([1.0, 2.0], np.float32)
    param = Parameter(source)
    assert repr(param).startswith("Parameter containing:\ntensor(")
    assert "requires_grad=True" in repr(param)
    source[0] = 5.0
    assert param.data[0] == 1.0  # the parameter owns a copy


def test_frozen_parameters_get_no_grad_and_are_still_listed() -> None:
    model = Affine()
    model.shift.requires_grad_(False)
    grads_from_sum(model, np.ones(3, np.float32))
    assert model.shift.grad is None
    np.testing.assert_array_equal(model.scale.grad.data, [1.0, 1.0, 1.0])
    assert [name for name, _ in model.named_parameters()] == ["scale", "shift"]


def test_to_cpu_changes_nothing_and_other_devices_are_named() -> None:
    """Code ported from PyTorch moves modules and tensors to the CPU, where everything here runs."""
    model = Affine()
    assert model.to("cpu") is model and model.scale.dtype == np.float32
    x = ts.ones(2)
    assert x.to("cpu") is x and x.to("float64").dtype == np.float64
    for call in (lambda: model.to("cuda"), lambda: x.to("cuda:0")):
        with pytest.raises(TypeError, match=r"expected a dtype such as np.float32 .* got 'cuda"):
            call()


def test_a_load_with_a_bad_value_changes_nothing_and_names_the_key() -> None:
    """A value that is not numbers failed in the middle of the copying, after earlier parameters had
    been overwritten; an object array of None loaded as nan."""
    model = Stack()
    before = {key: value.copy() for key, value in model.state_dict().items()}
    bad = dict(before, **{"second.shift": np.array(["x"] * 3), "first.scale": np.array([None] * 3)})
    bad["gain"] = np.full(3, 9.0)
    with pytest.raises(StateDictError, match=r"first\.scale: checkpoint holds object, not real numbers; "
                                             r"second\.shift: checkpoint holds <U1"):
        model.load_state_dict(bad)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    with pytest.raises(TypeError, match="Stack.load_state_dict: expected a mapping of names to arrays"):
        model.load_state_dict([("gain", np.ones(3))])
    with pytest.raises(StateDictError, match="unexpected keys: 7"):
        model.load_state_dict({**before, 7: np.ones(3)})
