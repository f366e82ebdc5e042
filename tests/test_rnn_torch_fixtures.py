"""The recurrent cells and layers against stored PyTorch results, without torch installed.

``fixtures/rnn_torch.npz`` holds, per configuration (every cell, and RNN-tanh / RNN-relu / LSTM /
GRU in one to three layers, bidirectional, batch-first, with h0, without bias, unbatched, and
with unsorted ``lengths`` run through pack_padded_sequence), PyTorch's float64 weights, inputs,
outputs and gradients; regenerate it with ``python tests/fixtures/make_rnn_fixtures.py``.
"""

from __future__ import annotations

import pytest
from fixtures.make_rnn_fixtures import CASES, compare, load_fixture, run_ours, weights_of

STORED = load_fixture()


def test_fixture_holds_every_case() -> None:
    assert [c["name"] for c, _, _ in STORED] == [c["name"] for c in CASES]


@pytest.mark.parametrize(("config", "inputs", "reference"), STORED, ids=[c["name"] for c, _, _ in STORED])
def test_matches_pytorch_outputs_states_and_gradients(config: dict, inputs: dict, reference: dict) -> None:
    ours = run_ours(config, inputs, weights_of(reference))
    compare(ours, reference, config["name"])
