"""The command line and the demo, run as a user would: in a subprocess, then reading the files."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

import tinygrad_seq as ts
from tinygrad_seq.demo import run_demo


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinygrad_seq", *args], capture_output=True, text=True,
                          timeout=300)


def test_demo_subprocess_writes_its_outputs(tmp_path: Path) -> None:
    result = run_cli("demo", "--steps", "60", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "perplexity" in result.stdout and "max abs error" in result.stdout
    out = tmp_path / "out"
    assert len((out / "sample.txt").read_text()) == len("Beautiful") + 160
    flow = np.loadtxt(out / "gradient_flow.csv", delimiter=",", skiprows=1)
    assert flow.shape == (32, 2) and np.all(flow[:, 1] > 0)
    state = ts.load(out / "char_lstm.safetensors")
    assert state["lstm.weight_hh_l0"].shape == (4 * 64, 64)
    if shutil.which("dot"):
        svg = ET.parse(out / "unrolled_lstm.svg").getroot()
        assert svg.tag.endswith("svg") and "t=0" in (out / "unrolled_lstm.svg").read_text()
    else:
        assert "digraph" in (out / "unrolled_lstm.dot").read_text()
    if importlib.util.find_spec("matplotlib"):
        assert (out / "gradient_flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_learns_and_its_gradients_check(tmp_path: Path) -> None:
    result = run_demo(out_dir=str(tmp_path), steps=150, hidden=32)
    assert result["last_loss"] < 0.75 * result["first_loss"]
    assert result["gradcheck_passed"]
    norms = result["grad_norms"]
    assert norms[-1] > norms[0]  # the gradient of a last-step loss fades going back in time


def test_bad_option_is_one_line_and_nonzero() -> None:
    result = run_cli("demo", "--steps", "many")
    assert result.returncode != 0
    assert "invalid int value" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_demo() -> None:
    result = run_cli("--help")
    assert result.returncode == 0 and "demo" in result.stdout
