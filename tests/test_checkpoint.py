"""Checkpoints: exact round trips (structure, dtypes, bits), PyTorch can read model files, saves
are atomic, and damaged, foreign or pickle-bearing files are refused without running code."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

import tinygrad_seq as ts
from tinygrad_seq import files, optim


class TinyModel(ts.nn.Module):
    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.cell = ts.nn.Module()
        self.cell.weight = ts.nn.Parameter(rng.standard_normal((3, 2)))
        self.bias = ts.nn.Parameter(rng.standard_normal(3).astype(np.float32))


def trained_optimizer(rng: np.random.Generator, model: ts.nn.Module, steps: int = 3) -> optim.Adam:
    opt = optim.Adam([{"params": [model.cell.weight]}, {"params": [model.bias], "lr": 0.1}], amsgrad=True)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = ts.Tensor(rng.standard_normal(p.shape).astype(p.dtype))
        opt.step()
    return opt


def assert_same_tree(actual, expected) -> None:
    """Equal structure, container types, key types, scalar types; arrays equal in dtype and bits."""
    assert type(actual) is type(expected), (type(actual), type(expected))
    if isinstance(expected, dict):
        assert list(actual) == list(expected)
        assert [type(k) for k in actual] == [type(k) for k in expected]
        for key in expected:
            assert_same_tree(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same_tree(a, e)
    elif isinstance(expected, (np.ndarray, np.generic)):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        assert actual.tobytes() == expected.tobytes()
    else:
        assert actual == expected or (actual != actual and expected != expected)  # nan == nan here


# -- round trips ---------------------------------------------------------------------------------


def test_flat_state_dict_round_trips_dtypes_and_bits(tmp_path, rng):
    state = {"w32": rng.standard_normal((2, 3)).astype(np.float32), "w64": rng.standard_normal(4),
             "ids": np.array([-(2**62), 0, 7], dtype=np.int64), "empty": np.zeros((0, 3)),
             "special": np.array([np.nan, -np.inf, -0.0, 5e-324])}
    path = tmp_path / "model.safetensors"
    ts.save(state, path)
    assert_same_tree(ts.load(path), state)
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary file left behind


def test_nested_checkpoint_restores_exact_structure(tmp_path, rng):
    model = TinyModel(rng)
    opt = trained_optimizer(rng, model)
    obj = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 3, "loss": 0.125,
           "tag": "run/1", "best": None, "done": False, "shape": (2, [3, {"k": 1.5}]),
           "scalar": np.float32(1.5), "ids": {0: "a", 10: "b"}}
    path = tmp_path / "ckpt.safetensors"
    ts.save(obj, path)
    loaded = ts.load(path)
    expected = {**obj, "model": dict(obj["model"])}
    assert_same_tree(loaded, expected)
    assert loaded["optimizer"]["param_groups"][1]["betas"] == (0.9, 0.999)
    assert set(loaded["optimizer"]["state"]) == {0, 1}
    assert type(loaded["optimizer"]["state"][0]["step"]) is int


def test_resuming_from_a_checkpoint_continues_bit_for_bit(tmp_path, rng):
    model = TinyModel(rng)
    opt = trained_optimizer(rng, model)
    ts.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "ckpt.safetensors")
    grads = [[rng.standard_normal(p.shape).astype(p.dtype) for p in model.parameters()] for _ in range(2)]

    restored = TinyModel(np.random.default_rng(99))
    checkpoint_data = ts.load(tmp_path / "ckpt.safetensors")
    restored.load_state_dict(checkpoint_data["model"])
    restored_opt = optim.Adam([{"params": [restored.cell.weight]}, {"params": [restored.bias]}])
    restored_opt.load_state_dict(checkpoint_data["optimizer"])
    for step_grads in grads:
        for (p, q), g in zip(zip(model.parameters(), restored.parameters(), strict=True), step_grads,
                             strict=True):
            p.grad, q.grad = ts.Tensor(g), ts.Tensor(g)
        opt.step()
        restored_opt.step()
    for p, q in zip(model.parameters(), restored.parameters(), strict=True):
        assert p.dtype == q.dtype
        np.testing.assert_array_equal(p.data, q.data)


def test_overwriting_an_existing_checkpoint(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    ts.save({"a": np.zeros(2)}, path)
    ts.save({"a": np.ones(3)}, str(path))
    np.testing.assert_array_equal(ts.load(str(path))["a"], np.ones(3))


def test_foreign_safetensors_and_npz_files_load_as_flat_dicts(tmp_path, rng):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    arrays = {"a.weight": rng.standard_normal((2, 2)), "b": np.arange(3, dtype=np.int64)}
    safetensors_numpy.save_file(arrays, tmp_path / "other.safetensors")
    assert_same_tree(ts.load(tmp_path / "other.safetensors"), {k: arrays[k] for k in sorted(arrays)})
    np.savez(tmp_path / "arrays.npz", **arrays)
    assert_same_tree(ts.load(tmp_path / "arrays.npz"), arrays)


def test_model_checkpoint_loads_into_the_pytorch_twin(tmp_path, rng):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    if hasattr(ts.nn, "Linear"):
        model = ts.nn.Linear(3, 2)
    else:  # the same parameter names, built by hand
        model = ts.nn.Module()
        model.weight = ts.nn.Parameter(rng.standard_normal((2, 3)).astype(np.float32))
        model.bias = ts.nn.Parameter(rng.standard_normal(2).astype(np.float32))
    path = tmp_path / "linear.safetensors"
    ts.save(model.state_dict(), path)
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(safetensors_torch.load_file(path))
    np.testing.assert_array_equal(twin.weight.detach().numpy(), model.weight.data)
    np.testing.assert_array_equal(twin.bias.detach().numpy(), model.bias.data)


# -- atomic writes -------------------------------------------------------------------------------


def test_save_failing_at_the_rename_keeps_the_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    ts.save({"a": np.zeros(4)}, path)
    old_bytes = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk unplugged")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk unplugged"):
        ts.save({"a": np.ones(1000)}, path)
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_save_killed_halfway_through_writing_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    ts.save({"a": np.zeros(4)}, path)
    old_bytes = path.read_bytes()
    written = []

    def interrupted(file, payload: bytes) -> None:
        file.write(payload[: len(payload) // 2])
        file.flush()
        written.append(Path(file.name).read_bytes())
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "write_synced", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ts.save({"a": np.ones(1000)}, path)
    assert len(written) == 1 and 0 < len(written[0]) < 8000  # half a file did reach the disk
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    np.testing.assert_array_equal(ts.load(path)["a"], np.zeros(4))


# -- refusing bad files --------------------------------------------------------------------------


class CreatesMarker:
    """Unpickling this calls open(marker, "w"): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_npz_with_an_object_array_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez(path, weight=np.array([CreatesMarker(marker)], dtype=object))
    with pytest.raises(ValueError, match=r"evil\.npz.*pickle.*refusing"):
        ts.load(path)
    assert not marker.exists()
    np.load(path, allow_pickle=True)["weight"]  # positive control: the payload is live
    assert marker.exists()


def test_pickle_renamed_to_safetensors_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"weight": CreatesMarker(marker)}))
    with pytest.raises(ValueError, match=r"model\.safetensors is not a valid safetensors checkpoint: "
                                         "it looks like a pickle file"):
        ts.load(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # positive control
    assert marker.exists()


def test_torch_pt_file_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2)}, path)  # a zip archive holding a pickle
    with pytest.raises(ValueError, match=r"model\.pt is not a readable \.npz archive.*not a \.npy array"):
        ts.load(path)


def safetensors_bytes(header: dict, body: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + body


@pytest.mark.parametrize("content,problem", [
    (b"", "empty file"),
    (os.urandom(64), "random bytes"),
    (safetensors_bytes({"a": {"dtype": "F64", "shape": [100], "data_offsets": [0, 8]}}, bytes(8)),
     "a header whose shape does not fit the data"),
    (safetensors_bytes({"a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, bytes(4)),
     "data cut short"),
])
def test_damaged_or_foreign_files_give_a_value_error_naming_the_path(tmp_path, content, problem):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.safetensors is not a valid safetensors checkpoint"):
        ts.load(path)


def test_truncated_checkpoint_is_refused(tmp_path, rng):
    path = tmp_path / "ckpt.safetensors"
    ts.save({"a": rng.standard_normal(100)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"ckpt\.safetensors is not a valid safetensors checkpoint"):
        ts.load(path)


def test_structure_naming_a_missing_tensor_is_reported_as_corrupt(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "ckpt.safetensors"
    structure = {"dict": [["a", {"tensor": "a"}], ["b", {"tensor": "gone"}]]}
    safetensors_numpy.save_file({"a": np.zeros(1)}, path, metadata={
        "tinygrad_seq.format": "1", "tinygrad_seq.structure": json.dumps(structure)})
    with pytest.raises(ValueError, match=r"ckpt\.safetensors is corrupt.*tensor 'gone'"):
        ts.load(path)


def test_unknown_format_version_is_refused(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "future.safetensors"
    safetensors_numpy.save_file({"a": np.zeros(1)}, path, metadata={
        "tinygrad_seq.format": "2", "tinygrad_seq.structure": "{}"})
    with pytest.raises(ValueError, match=r"future\.safetensors has checkpoint format '2'.*reads format '1'"):
        ts.load(path)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        ts.load(tmp_path / "nope.safetensors")


# -- refusing what cannot be saved ---------------------------------------------------------------


def test_unsavable_objects_are_named(tmp_path, rng):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match=r"expected a dict.*got TinyModel \(save its \.state_dict\(\)\)"):
        ts.save(TinyModel(rng), path)
    with pytest.raises(TypeError, match="cannot store a function at model/hook"):
        ts.save({"model": {"hook": lambda: None}}, path)
    with pytest.raises(TypeError, match="'a/names' has dtype <U1"):
        ts.save({"a": {"names": np.array(["x"])}}, path)
    with pytest.raises(TypeError, match=r"key 1.5 at opt must be a str or int"):
        ts.save({"opt": {1.5: 0}}, path)
    with pytest.raises(ValueError, match="two entries flatten to the same tensor name 'a/b'"):
        ts.save({"a/b": np.zeros(1), "a": {"b": np.zeros(1)}}, path)
    assert not path.exists() and os.listdir(tmp_path) == []


def _handmade_safetensors(path, name: str, dtype: str, shape: list, data: bytes) -> None:
    """The format by hand: an 8-byte little-endian header length, the JSON header, the raw data."""
    header = json.dumps({name: {"dtype": dtype, "shape": shape, "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)


def test_bfloat16_tensors_load_as_float32_and_float8_is_named(tmp_path):
    """PyTorch often saves bfloat16, which numpy lacks: a bfloat16 is the top half of a float32."""
    values = np.array([[1.5, -2.0, 0.15625], [2.0 ** 127, -0.0, np.inf]], np.float32)
    assert np.array_equal((values.view(np.uint32) & 0xFFFF0000).view(np.float32), values)  # all exact
    halves = (values.view(np.uint32) >> 16).astype("<u2")
    _handmade_safetensors(tmp_path / "bf16.safetensors", "w", "BF16", [2, 3], halves.tobytes())
    loaded = ts.load(tmp_path / "bf16.safetensors")["w"]
    assert loaded.dtype == np.float32 and np.array_equal(loaded, values)
    assert np.signbit(loaded[1, 1])
    _handmade_safetensors(tmp_path / "f8.safetensors", "w", "F8_E4M3", [2], b"\x38\x40")
    with pytest.raises(ValueError, match=r"tensor 'w' of .*f8\.safetensors has dtype F8_E4M3, which numpy"):
        ts.load(tmp_path / "f8.safetensors")


def test_structures_nested_too_deeply_are_refused_as_such(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    for depth in (600, 5000):  # past json.dumps' recursion, and past the encoder's own
        deep: list = []
        for _ in range(depth):
            deep = [deep]
        with pytest.raises(TypeError, match="nested too deeply"):
            ts.save({"a": deep}, tmp_path / "deep.safetensors")
    path = tmp_path / "forged.safetensors"
    for depth in (900, 100_000):  # past the decoder's recursion, and past json's own
        forged = '{"list": [' * depth + "]}" * depth
        safetensors_numpy.save_file({"a": np.zeros(1)}, path, metadata={
            "tinygrad_seq.format": "1", "tinygrad_seq.structure": forged})
        with pytest.raises(ValueError, match=r"forged\.safetensors is corrupt"):
            ts.load(path)
