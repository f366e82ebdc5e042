"""Every file the library writes (checkpoints, pictures, DOT sources, plots) is written whole or not
at all: a write that fails halfway leaves the previous file as it was and no temporary file behind,
and a missing folder is named before any work."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tinygrad_seq as ts
from tinygrad_seq import files


def _small_graph() -> ts.Tensor:
    w = ts.tensor(np.ones((2, 2)), requires_grad=True)
    return (w * 2.0).sum()


def _flow_plot(path: Path) -> None:
    pytest.importorskip("matplotlib")
    ts.diagnostics.plot_gradient_flow(np.array([1.0, 0.5, 0.25]), path)


WRITERS: list[tuple[str, str, Callable[[Path], object]]] = [
    ("ts.save", "ckpt.safetensors", lambda path: ts.save({"a": np.ones(1000)}, path)),
    ("viz.save .dot", "graph.dot", lambda path: ts.viz.save(_small_graph(), path)),
    ("plot_gradient_flow", "flow.svg", _flow_plot),
]


@pytest.mark.parametrize("name, filename, write", WRITERS, ids=[w[0] for w in WRITERS])
def test_a_write_that_fails_halfway_leaves_the_old_file(name: str, filename: str, write: Callable,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / filename
    path.write_bytes(b"the previous file")

    def full_disk(file: object, payload: bytes) -> None:
        file.write(payload[: len(payload) // 2])
        file.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "write_synced", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write(path)
    assert path.read_bytes() == b"the previous file"
    assert os.listdir(tmp_path) == [filename]
    monkeypatch.undo()
    write(path)  # and, written in full, the new one replaces it
    assert path.read_bytes() != b"the previous file" and os.listdir(tmp_path) == [filename]


@pytest.mark.parametrize("name, filename, write", WRITERS, ids=[w[0] for w in WRITERS])
def test_a_missing_folder_or_a_folder_as_the_target_is_named(name: str, filename: str, write: Callable,
                                                            tmp_path: Path):
    missing = tmp_path / "runs" / filename
    with pytest.raises(FileNotFoundError, match=re.escape(f"{str(missing.parent)!r} does not exist")):
        write(missing)
    folder = tmp_path / filename
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="that is a folder"):
        write(folder)
    assert os.listdir(tmp_path) == [filename] and not os.listdir(folder)


def test_a_plot_without_a_suffix_is_a_png_named_as_matplotlib_names_it(tmp_path: Path):
    _flow_plot(tmp_path / "flow")
    assert os.listdir(tmp_path) == ["flow.png"]
    assert (tmp_path / "flow.png").read_bytes().startswith(b"\x89PNG")
