"""Checkpoints: ``ts.save(obj, path)`` / ``ts.load(path)`` in the safetensors format, never pickle.

Arrays go into the safetensors body under flat names (``"model/fc.weight"``: nested keys
joined with ``/``, so a flat model state dict keeps its own keys and loads straight into
PyTorch with ``safetensors.torch.load_file``).  Everything else, the nesting, ints, floats,
strings, tuples and the optimizer's hyper-parameters, is JSON in the header's string metadata,
as a tagged tree that restores the exact structure (int keys stay ints).  Loading parses
data only, so an untrusted file cannot run code.

Saves are atomic (``files.atomic_write``): a crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from .files import atomic_write, check_folder
from .tensor import Tensor

SEPARATOR = "/"
_STRUCTURE_KEY = "tinygrad_seq.structure"
_FORMAT_KEY = "tinygrad_seq.format"
_FORMAT_VERSION = "1"
_ZIP_MAGIC = b"PK\x03\x04"  # .npz files are zip archives
_PICKLE_PROTOCOL_2_PLUS = b"\x80"
_STORABLE_DTYPES = {"bool", "float16", "float32", "float64", "int8", "int16", "int32", "int64",
                    "uint8", "uint16", "uint32", "uint64"}

PathLike = str | os.PathLike


# -- encoding: a tagged JSON tree whose leaves name tensors ------------------------------------


def _encode(value: Any, path: tuple, tensors: dict[str, np.ndarray]) -> Any:
    """JSON for ``value``; arrays are moved into ``tensors`` under their path joined by '/'."""
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, (np.ndarray, np.generic)):
        name = SEPARATOR.join(str(part) for part in path)
        if name in tensors:
            raise ValueError(f"ts.save: two entries flatten to the same tensor name {name!r}; "
                             f"rename a key containing '{SEPARATOR}'")
        array = np.asarray(value)
        if array.dtype.name not in _STORABLE_DTYPES:
            raise TypeError(f"ts.save: {name!r} has dtype {array.dtype}, which safetensors cannot store "
                            f"(supported: {', '.join(sorted(_STORABLE_DTYPES))})")
        tensors[name] = array if array.flags.c_contiguous else array.copy(order="C")
        return {"tensor": name, "scalar": True} if isinstance(value, np.generic) else {"tensor": name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"ts.save: key {key!r} at {_where(path)} must be a str or int, "
                                f"not {type(key).__name__}")
            items.append([key, _encode(item, path + (key,), tensors)])
        return {"dict": items}
    if isinstance(value, (list, tuple)):
        encoded = [_encode(item, path + (i,), tensors) for i, item in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": encoded}
    hint = " (save its .state_dict())" if hasattr(value, "state_dict") else ""
    raise TypeError(f"ts.save: cannot store a {type(value).__name__} at {_where(path)}{hint}; "
                    "checkpoints hold arrays, dicts, lists, tuples, numbers, strings and None")


def _where(path: tuple) -> str:
    return SEPARATOR.join(str(part) for part in path) or "the top level"


def _decode(node: Any, tensors: Mapping[str, np.ndarray], source: str) -> Any:
    """Rebuild the saved object; a malformed tree (a damaged or forged file) is a ValueError."""
    try:
        return _decoded(node, tensors)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"ts.load: {source} is corrupt: {err}") from None
    except RecursionError:  # (only a forged file nests deeper than save can write)
        raise ValueError(f"ts.load: {source} is corrupt: its structure is nested too deeply") from None


def _decoded(node: Any, tensors: Mapping[str, np.ndarray]) -> Any:
    if not isinstance(node, dict):
        return node
    if "tensor" in node:
        name = node["tensor"]
        if name not in tensors:
            raise ValueError(f"its structure names tensor {name!r}, which the file does not contain")
        array = tensors[name]
        return array[()] if node.get("scalar") else array
    if "dict" in node:
        return {key: _decoded(item, tensors) for key, item in node["dict"]}
    if "list" in node:
        return [_decoded(item, tensors) for item in node["list"]]
    if "tuple" in node:
        return tuple(_decoded(item, tensors) for item in node["tuple"])
    raise ValueError(f"unknown structure entry {sorted(node)}")


# -- writing -------------------------------------------------------------------------------------


def save(obj: Mapping[str, Any], path: PathLike) -> None:
    """Write a state dict (flat ``{name: array}``) or a nested dict of them, e.g.
    ``{"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 3}``, to ``path``."""
    if not isinstance(obj, Mapping):
        hint = " (save its .state_dict())" if hasattr(obj, "state_dict") else ""
        raise TypeError(f"ts.save: expected a dict (a state dict or a nested dict of them), "
                        f"got {type(obj).__name__}{hint}")
    path = Path(path)
    check_folder(path, "ts.save")
    tensors: dict[str, np.ndarray] = {}
    try:
        structure = _encode(obj, (), tensors)
        metadata = {_FORMAT_KEY: _FORMAT_VERSION, _STRUCTURE_KEY: json.dumps(structure)}
    except RecursionError:  # a structure nested hundreds deep (or one that contains itself)
        raise TypeError("ts.save: the object is nested too deeply to store (does it contain itself?)"
                        ) from None
    atomic_write(path, safetensors.numpy.save(tensors, metadata=metadata))


# -- reading -------------------------------------------------------------------------------------


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            foreign = [name for name in archive.zip.namelist() if not name.endswith(".npy")]
            if foreign:
                raise ValueError(f"member {foreign[0]!r} is not a .npy array (a PyTorch .pt file?)")
            return {name: archive[name] for name in archive.files}
    except Exception as err:  # a damaged zip raises several kinds of error
        refusal = ("; refusing, since unpickling an untrusted file can run code"
                   if "pickle" in str(err) else "")
        raise ValueError(f"ts.load: {path} is not a readable .npz archive of arrays: {err}{refusal}"
                         ) from None


def _load_safetensors(path: Path, magic: bytes) -> Any:
    try:
        with safetensors.safe_open(path, framework="np") as file:
            metadata = file.metadata() or {}
            tensors = {name: _tensor(file, name, path) for name in file.keys()}
    except safetensors.SafetensorError as err:
        kind = ("it looks like a pickle file, which is never loaded here because unpickling can run "
                "code" if magic.startswith(_PICKLE_PROTOCOL_2_PLUS) else f"{err}")
        raise ValueError(f"ts.load: {path} is not a valid safetensors checkpoint: {kind}") from None
    if _STRUCTURE_KEY not in metadata:  # written by another tool: the flat tensors are all there is
        return tensors
    if metadata.get(_FORMAT_KEY) != _FORMAT_VERSION:
        raise ValueError(f"ts.load: {path} has checkpoint format {metadata.get(_FORMAT_KEY)!r}; this version "
                         f"of tinygrad_seq reads format {_FORMAT_VERSION!r}")
    try:
        structure = json.loads(metadata[_STRUCTURE_KEY])
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"ts.load: {path} is corrupt: its structure metadata is not JSON that can be read "
                         f"({err})") from None
    return _decode(structure, tensors, str(path))


def _tensor(file: Any, name: str, path: Path) -> np.ndarray:
    """One tensor of a safetensors file. numpy has no bfloat16, which PyTorch often saves: such a
    tensor loads as float32 (exactly: a bfloat16 is a float32's upper 16 bits), as ``from_torch``
    converts it; a dtype numpy cannot hold at all (float8) is named."""
    try:
        return file.get_tensor(name)
    except (TypeError, AttributeError):  # safetensors asks numpy for a dtype it lacks
        pass
    with open(path, "rb") as raw:  # the format: an 8-byte header length, the JSON header, the data
        header_size = int.from_bytes(raw.read(8), "little")
        entry = json.loads(raw.read(header_size))[name]
        if entry["dtype"] != "BF16":
            raise ValueError(f"ts.load: tensor {name!r} of {path} has dtype {entry['dtype']}, which numpy "
                             "cannot hold; convert it before saving (e.g. to float32)")
        start, stop = entry["data_offsets"]
        raw.seek(8 + header_size + start)
        halves = np.frombuffer(raw.read(stop - start), dtype="<u2")
    return (halves.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


def load(path: PathLike) -> Any:
    """Read a checkpoint written by ``save`` (the exact nested structure comes back, arrays as
    numpy arrays), any other safetensors file (a flat ``{name: array}`` dict), or an ``.npz``
    archive.  Anything else, or anything that would need pickle, raises ValueError."""
    path = Path(path)
    with open(path, "rb") as file:
        magic = file.read(len(_ZIP_MAGIC))
    if magic == _ZIP_MAGIC:
        return _load_npz(path)
    return _load_safetensors(path, magic)


__all__ = ["load", "save"]
