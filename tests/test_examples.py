"""Every example's fast mode runs and learned: the numbers its ``main(fast=True)`` returns are
checked against thresholds with a margin (seeds are fixed), and its output files exist.

BLAS runs on one thread here: the examples' matrices are tiny, so more threads only add
scheduling noise (and, on a busy machine, minutes), and one thread keeps the sums reproducible.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tinygrad_seq.demo import zen_of_python

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def run_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], dict]:
    """Import examples/<name>.py and run its fast mode inside tmp_path (its outputs land there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def run(name: str) -> dict:
        with threadpool_limits(1):
            return importlib.import_module(name).main(fast=True)

    return run


def test_every_example_runs_as_a_script(tmp_path: Path) -> None:
    """``python examples/X.py --fast`` as a user types it: the argument parsing and the ``__main__``
    block that main(fast=True) skips. One process per core at a time keeps this to about 20 s."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(EXAMPLES.parent), os.environ.get("PYTHONPATH", "")])}

    def run(script: Path) -> subprocess.CompletedProcess:
        (tmp_path / script.stem).mkdir()
        return subprocess.run([sys.executable, str(script), "--fast"], cwd=tmp_path / script.stem, env=env,
                              capture_output=True, text=True, timeout=300)

    scripts = sorted(EXAMPLES.glob("*.py"))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for script, result in zip(scripts, pool.map(run, scripts), strict=True):
            assert result.returncode == 0, f"{script.name}: {result.stderr[-2000:]}"


def test_char_rnn_learns_hello_exactly_and_the_zen(run_example: Callable[[str], dict],
                                                   tmp_path: Path) -> None:
    result = run_example("char_rnn")
    assert result["hello_prediction"] == "ello"
    assert result["last_loss"] < 0.6 * result["first_loss"]
    assert result["train_perplexity"] < 5.0  # uniform guessing over the alphabet: 44
    assert result["held_out_perplexity"] < 0.5 * result["uniform_perplexity"]
    # early stopping hands back the parameters that did best on the held-out lines, not the last ones
    assert result["held_out_perplexity"] == pytest.approx(min(result["held_out_history"]), rel=1e-5)
    assert result["clipped_fraction"] > 0.2  # the clip threshold is one that acts
    samples = (tmp_path / "tinygrad_seq_out" / "char_rnn_samples.txt").read_text()
    assert samples.count("--- temperature") == 3 and samples.count("Beautiful") >= 3


def test_sentiment_rnn_follows_word_order_and_bag_of_words_cannot(run_example: Callable[[str], dict]) -> None:
    result = run_example("sentiment")
    assert result["binary_accuracy"] >= 0.95 and result["three_way_accuracy"] >= 0.9
    assert result["binary_showcase_right"] == 1.0 and result["three_way_showcase_right"] == 1.0
    # "not good" vs "not bad" and both orders of a "but" review are beyond a linear model of word counts
    assert result["binary_bag_of_words_accuracy"] < 0.7
    assert result["three_way_bag_of_words_accuracy"] < 0.7


def test_sequence_labeling_needs_the_later_context(run_example: Callable[[str], dict]) -> None:
    result = run_example("sequence_labeling")
    bidirectional, unidirectional = result["bidirectional"], result["unidirectional"]
    assert bidirectional["tokens"] >= 0.97 and bidirectional["future-dependent tokens"] >= 0.95
    # reading left to right, the tag of "12 oak" is a coin flip until "street" / "trees" arrives
    assert unidirectional["future-dependent tokens"] < 0.7
    assert bidirectional["sentences"] > unidirectional["sentences"] + 0.5


def test_seq2seq_reverses_digits_by_greedy_decoding(run_example: Callable[[str], dict]) -> None:
    result = run_example("seq2seq")
    assert result["exact_match"] >= 0.5  # a guess is right 10^-3 to 10^-6 of the time
    assert result["last_loss"] < 0.5


def test_captioning_decodes_captions_from_features(run_example: Callable[[str], dict]) -> None:
    result = run_example("captioning")
    assert result["exact_match_seen"] >= 0.95
    assert result["last_loss"] < 0.1


def test_vanishing_gradients_tanh_rnn_fails_where_gated_cells_learn(run_example: Callable[[str], dict],
                                                                      tmp_path: Path) -> None:
    result = run_example("vanishing_gradients")
    # the consequence of the vanishing gradient: over seeds 0-11 the gated cells all reached 100% and the
    # tanh RNN at most 58% (chance 50%) in this budget
    assert result["LSTM"]["accuracy"] >= 0.9 and result["GRU"]["accuracy"] >= 0.9
    assert result["tanh RNN"]["accuracy"] <= 0.7
    # its cause, at initialisation: the tanh RNN's dL/dh_0 is orders of magnitude below the open-gated cells'
    assert result["tanh RNN"]["reach"] < 1e-3 * min(result["LSTM"]["reach"], result["GRU"]["reach"])
    assert result["LSTM default"]["reach"] < 1e-2 * result["LSTM"]["reach"]
    # an exploding tanh RNN learns with clipping (12 of 12 seeds) and not without it (seed 0; 9 of 12 seeds)
    clipped, unclipped = result["clipping"]["clip 0.5"], result["clipping"]["unclipped"]
    assert clipped["accuracy"] >= 0.9 and clipped["clipped_steps"] > 0
    assert unclipped["accuracy"] <= 0.7 and unclipped["largest_loss"] > 2 * clipped["largest_loss"]
    out = tmp_path / "tinygrad_seq_out"
    header = (out / "vanishing_gradients.csv").read_text().splitlines()[0]
    assert header == "t,tanh RNN,LSTM,GRU,LSTM default"
    table = np.loadtxt(out / "vanishing_gradients.csv", delimiter=",", skiprows=1)
    assert table.shape == (40, 5) and np.all(table[:, 1:] > 0)
    np.testing.assert_array_equal(table[:, 0], np.arange(40))


def test_hidden_states_strip_in_terminal_and_html(run_example: Callable[[str], dict], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")  # pytest's stdout is no terminal: colours only on request
    result = run_example("hidden_states")
    assert result["last_loss"] < 1.6
    assert abs(result["correlation"]) > 0.3
    assert "\x1b[30;48;2;" in capsys.readouterr().out  # the terminal strip: ANSI background colours
    page = (tmp_path / "tinygrad_seq_out" / "hidden_states.html").read_text()
    assert page.count("<h2>") == len(result["correlations"])
    assert page.count("<span ") == len(result["correlations"]) * len(zen_of_python())


def test_hidden_states_without_colours_marks_the_strip(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a log (no terminal) the strip is a row of +/- marks under each line, not escape codes."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    hidden_states = importlib.import_module("hidden_states")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert not hidden_states.use_colour()  # pytest's stdout is not a terminal
    strip = hidden_states.marked_strip("abc\nde\n", np.array([0.9, 0.1, -0.7, 0.0, 0.6, -0.9]))
    assert strip == "abc\n+ -\nde\n+-"  # the line end (activation 0.0) has no column
