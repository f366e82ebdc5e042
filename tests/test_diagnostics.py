"""ts.diagnostics: gradient flow through time and Jacobian spectra, against independent oracles.

Oracles: ``retain_grad`` on per-step states (the engine's own answer, via a different route);
for a linear RNN the analytic product of Jacobians (W_hh^T)^k applied to dL/dh_T; a stacked
layer run again by hand with cells; numpy's svd / eigvals; the Elman Jacobian written out
(diag(1 - h_t^2) W_hh); and float64 finite differences of an LSTM step written in numpy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_seq as ts
from tinygrad_seq import diagnostics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-a))


def rnn_cell_loop(rng: np.random.Generator, steps: int = 6):
    cell = ts.nn.RNNCell(3, 4).double()
    xs = ts.tensor(rng.standard_normal((steps, 2, 3)))
    h, states = None, []
    for x in xs:
        h = cell(x, h)
        states.append(h)
    return cell, states


def share_weights(cell: ts.nn.Module, layer: ts.nn.Module, suffix: str) -> ts.nn.Module:
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        cell.register_parameter(name, getattr(layer, name + suffix))
    return cell


# -- gradient_flow ----------------------------------------------------------------------------------


def test_gradient_flow_matches_retain_grad_and_leaves_every_grad_alone(rng):
    cell, states = rnn_cell_loop(rng)
    for state in states:
        state.retain_grad()
    loss = (states[-1] ** 2).sum() + states[2].sum()  # a direct use of h_2 as well
    earlier = ts.Tensor(np.ones((4, 4)))
    cell.weight_hh.grad = earlier
    norms = diagnostics.gradient_flow(loss, states)
    assert cell.weight_hh.grad is earlier and cell.weight_ih.grad is None
    assert all(state.grad is None for state in states)
    loss.backward()  # the graph was kept: training goes on as if nothing happened
    expected = [np.linalg.norm(state.grad.data) for state in states]
    np.testing.assert_allclose(norms, expected, rtol=1e-12)
    assert norms.shape == (6,) and np.all(norms > 0)


def test_gradient_flow_of_a_linear_rnn_is_the_product_of_jacobians(rng):
    steps, size = 8, 4
    w = rng.standard_normal((size, size)) * 0.6
    w_hh = ts.nn.Parameter(w)
    w_ih = ts.nn.Parameter(rng.standard_normal((size, 3)))
    xs = ts.tensor(rng.standard_normal((steps, 1, 3)))
    h, states = ts.tensor(np.zeros((1, size))), []
    for x in xs:  # h_t = W_hh h_{t-1} + W_ih x_t, identity nonlinearity
        h = h @ w_hh.T + x @ w_ih.T
        states.append(h)
    v = rng.standard_normal(size)
    loss = (states[-1] * ts.tensor(v)).sum()  # dL/dh_T = v
    norms = diagnostics.gradient_flow(loss, states)
    expected = [np.linalg.norm(np.linalg.matrix_power(w.T, steps - 1 - t) @ v) for t in range(steps)]
    np.testing.assert_allclose(norms, expected, rtol=1e-12)


def test_gradient_flow_of_a_stacked_copy_is_the_direct_gradient_split_by_direction(rng):
    lstm = ts.nn.LSTM(3, 4, bidirectional=True, batch_first=True).double()
    out, _ = lstm(ts.tensor(rng.standard_normal((2, 5, 3))))
    copy = out * 1.0  # the user's own op: no longer the layer's output
    weights = rng.standard_normal(out.shape)
    loss = (copy * ts.tensor(weights)).sum()  # dL/d copy = weights: the direct gradient
    norms = diagnostics.gradient_flow(loss, copy, directions=2, time_dim=1)
    expected = [[np.linalg.norm(weights[:, t, 4 * d:4 * (d + 1)]) for t in range(5)] for d in range(2)]
    np.testing.assert_allclose(norms, expected, rtol=1e-12)
    per_step = diagnostics.gradient_flow(loss, [out[:, t] for t in range(5)], directions=2)
    assert per_step.shape == (2, 5) and np.all(per_step == 0)  # slices made after the loss: unreached


@pytest.mark.parametrize("fused", [False, True])
def test_gradient_flow_of_a_layer_output_is_the_gradient_through_time_of_its_last_layer(rng, fused):
    gru = ts.nn.GRU(2, 3, num_layers=2, bidirectional=True, batch_first=True, fused=fused).double()
    out, h_n = gru(ts.tensor(rng.standard_normal((2, 6, 2))), lengths=[6, 4])  # padding too
    loss = (out * ts.tensor(rng.standard_normal(out.shape))).sum() + (h_n ** 2).sum()
    norms = diagnostics.gradient_flow(loss, out, directions=2)
    flows = diagnostics.layer_gradient_flow(loss)  # checked against cells run by hand below
    np.testing.assert_array_equal(norms, [flows["GRU", 1, 0], flows["GRU", 1, 1]])
    assert norms.shape == (2, 6) and np.all(norms[:, :4] > 0)
    with pytest.raises(ValueError, match=r"2 direction\(s\); pass directions=2"):
        diagnostics.gradient_flow(loss, out)


def test_layer_gradient_flow_matches_the_same_stack_run_by_hand(rng):
    steps, hidden = 5, 3
    gru = ts.nn.GRU(2, hidden, num_layers=2, bidirectional=True).double()
    x = ts.tensor(rng.standard_normal((steps, 2, 2)))
    weights = ts.tensor(rng.standard_normal((steps, 2, 2 * hidden)))
    out, h_n = gru(x)
    loss = (out * weights).sum() + (h_n ** 2).sum()
    flows = diagnostics.layer_gradient_flow(loss)
    assert list(flows) == [("GRU", layer, d) for layer in (0, 1) for d in (0, 1)]

    layer_input, by_hand, finals = x, {}, []
    for layer in range(2):
        outputs = []
        for d in range(2):
            cell = share_weights(ts.nn.GRUCell(layer_input.shape[-1], hidden).double(), gru,
                                 f"_l{layer}" + ("_reverse" if d else ""))
            h, states = None, [None] * steps
            for t in (reversed(range(steps)) if d else range(steps)):
                h = cell(layer_input[t], h).retain_grad()
                states[t] = h
            by_hand[layer, d] = states
            finals.append(h)
            outputs.append(ts.stack(states))
        layer_input = ts.cat(outputs, dim=2)
    np.testing.assert_allclose(layer_input.data, out.data, rtol=1e-12)
    ((layer_input * weights).sum() + sum((f ** 2).sum() for f in finals)).backward()
    for (layer, d), states in by_hand.items():
        np.testing.assert_allclose(flows["GRU", layer, d], [np.linalg.norm(s.grad.data) for s in states],
                                   rtol=1e-10)
    assert all(p.grad is not None for p in gru.parameters())  # from the by-hand run only: shared
    assert np.all(flows["GRU", 1, 1] > 0)


def test_layer_gradient_flow_keeps_each_run_of_a_layer_apart_and_fused_matches_composed(rng):
    x, y = (ts.tensor(rng.standard_normal((4, 2, 3))) for _ in range(2))
    flows = []
    for fused in (False, True):
        ts.manual_seed(1)
        lstm = ts.nn.LSTM(3, 4, fused=fused).double()
        first, _ = lstm(x)
        second, (h_n, c_n) = lstm(y)
        loss = (first ** 2).sum() + (second[:2] * 3).sum() + (c_n ** 2).sum()
        flows.append(diagnostics.layer_gradient_flow(loss))
        composed = flows[0]
        assert sorted(flows[-1]) == [("LSTM #1", 0, 0), ("LSTM #2", 0, 0)]
        np.testing.assert_allclose(flows[-1]["LSTM #1", 0, 0], composed["LSTM #1", 0, 0], rtol=1e-12)
        np.testing.assert_allclose(flows[-1]["LSTM #2", 0, 0], composed["LSTM #2", 0, 0], rtol=1e-12)
        np.testing.assert_allclose(diagnostics.gradient_flow(loss, second), composed["LSTM #2", 0, 0],
                                   rtol=1e-12)
    # by hand: the first run's states, with retain_grad
    cell = share_weights(ts.nn.LSTMCell(3, 4).double(), lstm, "_l0")
    state, hs = None, []
    for x_t in x:
        state = cell(x_t, state)
        hs.append(state[0].retain_grad())
    (ts.stack(hs) ** 2).sum().backward()
    np.testing.assert_allclose(flows[0]["LSTM #1", 0, 0], [np.linalg.norm(h.grad.data) for h in hs],
                               rtol=1e-10)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_gradient_flow_of_a_final_state_is_its_direct_gradient_in_both_paths(rng, kind):
    """h_n is not a layer output: its norms are of dL/dh_n per layer-direction slot, (L*D,), in both
    paths (a fused layer's h_n is a slice of its sequence node, which must not be taken for one)."""
    x = ts.tensor(rng.standard_normal((6, 2, 3)))
    results = []
    for fused in (False, True):
        ts.manual_seed(4)
        layer = getattr(ts.nn, kind)(3, 4, num_layers=2, bidirectional=True, fused=fused).double()
        out, state = layer(x)
        h_n = state[0] if kind == "LSTM" else state
        weights = ts.tensor(rng.standard_normal(h_n.shape))
        results.append(diagnostics.gradient_flow((out ** 2).sum() + (h_n * weights).sum(), h_n))
        assert results[-1].shape == (4,)
        np.testing.assert_allclose(results[-1], np.linalg.norm(weights.numpy().reshape(4, -1), axis=1),
                                   rtol=1e-12)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_layer_gradient_flow_finds_the_layers_when_the_loss_uses_only_the_final_state(rng, kind):
    """A many-to-one classifier on h_n never touches the output sequence; every layer's states are
    still in the graph, and composed and fused layers report the same norms for them."""
    x = ts.tensor(rng.standard_normal((5, 2, 3)))
    flows = []
    for fused in (False, True):
        ts.manual_seed(2)
        layer = getattr(ts.nn, kind)(3, 4, num_layers=2, bidirectional=True, fused=fused).double()
        _, state = layer(x, lengths=[5, 3])
        h_n = state[0] if kind == "LSTM" else state
        flows.append(diagnostics.layer_gradient_flow((h_n[-2:] ** 2).sum()))  # the top layer's directions
    composed, fused = flows
    assert sorted(composed) == sorted(fused) == [(kind, n, d) for n in (0, 1) for d in (0, 1)]
    for key in composed:
        np.testing.assert_allclose(fused[key], composed[key], rtol=1e-12, atol=1e-15)
    # the top forward direction's last state is h_n itself: its gradient is 2 h_n, nothing else, of the
    # one sequence still running at the last step
    np.testing.assert_allclose(composed[kind, 1, 0][-1], np.linalg.norm(2 * h_n[-2, 0].numpy()), rtol=1e-12)


def test_layer_gradient_flow_of_a_layer_run_without_a_module_path(rng):
    lstm, gru = ts.nn.LSTM(2, 3).double(), ts.nn.GRU(3, 3).double()
    out, _ = lstm.forward(ts.tensor(rng.standard_normal((4, 1, 2))))  # forward(): no module scope
    out, _ = gru(out)
    flows = diagnostics.layer_gradient_flow(out.sum())
    assert list(flows) == [("GRU", 0, 0), (None, 0, 0)] and all(v.shape == (4,) for v in flows.values())


def test_gradient_flow_bad_input(rng):
    _, states = rnn_cell_loop(rng, steps=3)
    loss = states[-1].sum()
    with pytest.raises(ValueError, match="loss must be a scalar"):
        diagnostics.gradient_flow(states[-1], states)
    with pytest.raises(ValueError, match=r"hidden_states\[1\] does not require grad"):
        diagnostics.gradient_flow(loss, [states[0], ts.randn(2, 4)])
    with pytest.raises(ValueError, match="split into 3 equal direction parts"):
        diagnostics.gradient_flow(loss, states, directions=3)
    with pytest.raises(ValueError, match="time_dim 2 is out of range"):
        diagnostics.gradient_flow(loss, ts.stack(states), time_dim=2)
    with pytest.raises(ValueError, match="does not depend on any recurrent layer"):
        diagnostics.layer_gradient_flow(loss)
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        diagnostics.gradient_flow(loss, states)


# -- jacobian_spectrum ------------------------------------------------------------------------------


def test_elman_jacobians_are_diag_of_tanh_derivative_times_w_hh(rng):
    cell = ts.nn.RNNCell(3, 5).double()
    xs = rng.standard_normal((6, 2, 3))
    h0 = rng.standard_normal((2, 5)) * 0.5
    spectrum = diagnostics.jacobian_spectrum(cell, xs, ts.tensor(h0), batch_index=1)
    w_ih, w_hh, b = (cell.weight_ih.data, cell.weight_hh.data, cell.bias_ih.data + cell.bias_hh.data)
    h = h0[1]
    for t, x in enumerate(xs[:, 1]):
        h = np.tanh(w_ih @ x + w_hh @ h + b)
        jacobian = np.diag(1 - h ** 2) @ w_hh
        np.testing.assert_allclose(spectrum.singular_values[t], np.linalg.svd(jacobian, compute_uv=False),
                                   rtol=1e-10)
        np.testing.assert_allclose(spectrum.spectral_radius[t], np.abs(np.linalg.eigvals(jacobian)).max(),
                                   rtol=1e-10)
    np.testing.assert_allclose(spectrum.weight_singular_values["hh"], np.linalg.svd(w_hh, compute_uv=False),
                               rtol=1e-12)
    assert spectrum.weight_spectral_radius["hh"] == pytest.approx(np.abs(np.linalg.eigvals(w_hh)).max())
    assert spectrum.state_names == ("h",)


def lstm_step(weights: dict[str, np.ndarray], x: np.ndarray, state: np.ndarray) -> np.ndarray:
    """One LSTM step in numpy on the concatenated state (h, c) -> (h', c')."""
    size = weights["w_hh"].shape[1]
    h, c = state[:size], state[size:]
    gates = weights["w_ih"] @ x + weights["w_hh"] @ h + weights["b"]
    i, f, g, o = _sigmoid(gates[:size]), _sigmoid(gates[size:2 * size]), np.tanh(gates[2 * size:3 * size]), \
        _sigmoid(gates[3 * size:])
    c = f * c + i * g
    return np.concatenate([o * np.tanh(c), c])


def test_lstm_layer_jacobians_match_finite_differences_for_an_upper_reverse_layer(rng):
    steps, hidden = 4, 3
    lstm = ts.nn.LSTM(2, hidden, num_layers=2, bidirectional=True).double()
    xs = rng.standard_normal((steps, 2, 2))
    ts.manual_seed(7)
    spectrum = diagnostics.jacobian_spectrum(lstm, xs, layer=1, direction=1)
    drawn_after = ts.randn(3).data
    ts.manual_seed(7)
    np.testing.assert_array_equal(drawn_after, ts.randn(3).data)  # the library's random stream is untouched
    assert all(p.grad is None for p in lstm.parameters())

    lower = ts.nn.LSTM(2, hidden, bidirectional=True).double()  # layer 0 alone gives layer 1's input
    lower.load_state_dict({k: v for k, v in lstm.state_dict().items() if "_l0" in k})
    layer_input = lower(ts.tensor(xs))[0].data[:, 0]
    weights = {"w_ih": lstm.weight_ih_l1_reverse.data, "w_hh": lstm.weight_hh_l1_reverse.data,
               "b": lstm.bias_ih_l1_reverse.data + lstm.bias_hh_l1_reverse.data}
    state, step = np.zeros(2 * hidden), 1e-6
    for t in reversed(range(steps)):
        numeric = np.stack([(lstm_step(weights, layer_input[t], state + step * e)
                             - lstm_step(weights, layer_input[t], state - step * e)) / (2 * step)
                            for e in np.eye(2 * hidden)], axis=1)
        np.testing.assert_allclose(spectrum.singular_values[t], np.linalg.svd(numeric, compute_uv=False),
                                   rtol=1e-6, atol=1e-9)
        state = lstm_step(weights, layer_input[t], state)
    for k, gate in enumerate(ts.nn.LSTM_GATES):
        block = lstm.weight_hh_l1_reverse.data[k * hidden:(k + 1) * hidden]
        np.testing.assert_allclose(spectrum.weight_singular_values[gate],
                                   np.linalg.svd(block, compute_uv=False), rtol=1e-12)
    assert spectrum.state_names == ("h", "c") and spectrum.singular_values.shape == (steps, 2 * hidden)


def test_jacobian_spectrum_bad_input(rng):
    lstm = ts.nn.LSTM(2, 3, num_layers=2)
    xs = rng.standard_normal((4, 2, 2))
    with pytest.raises(ValueError, match=r"has 2 layer\(s\) and 1 direction\(s\), got layer=0, direction=1"):
        diagnostics.jacobian_spectrum(lstm, xs, direction=1)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(T, B, 2\)"):
        diagnostics.jacobian_spectrum(lstm, rng.standard_normal((4, 2, 5)))
    with pytest.raises(IndexError, match="batch_index 2 is out of range for a batch of 2"):
        diagnostics.jacobian_spectrum(lstm, xs, batch_index=2)
    with pytest.raises(TypeError, match="expected an RNN / LSTM / GRU layer or cell, got Linear"):
        diagnostics.jacobian_spectrum(ts.nn.Linear(2, 2), xs)
    with pytest.raises(ValueError, match="a cell has one layer and direction"):
        diagnostics.jacobian_spectrum(ts.nn.GRUCell(2, 3), xs, layer=1)


# -- plots ----------------------------------------------------------------------------------------


def test_plots_write_pngs(rng, tmp_path: Path):
    pytest.importorskip("matplotlib")
    gru = ts.nn.GRU(2, 3, num_layers=2, bidirectional=True)
    xs = rng.standard_normal((6, 2, 2)).astype(np.float32)
    out, _ = gru(ts.tensor(xs))
    loss = (out[-1] ** 2).sum()
    for norms, name in ((diagnostics.layer_gradient_flow(loss), "layers"),
                        (diagnostics.gradient_flow(loss, out, directions=2), "directions")):
        path = tmp_path / f"{name}.png"
        figure = diagnostics.plot_gradient_flow(norms, path)
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert len(figure.axes[0].get_lines()) == (4 if name == "layers" else 2)
    path = tmp_path / "spectrum.png"
    diagnostics.plot_jacobian_spectrum(diagnostics.jacobian_spectrum(gru, xs, layer=1), path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match=r"expected norms of shape \(T,\) or \(directions, T\)"):
        diagnostics.plot_gradient_flow(np.zeros((2, 2, 2)), tmp_path / "bad.png")


def test_plots_without_matplotlib_name_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(ImportError, match=r"needs matplotlib.*pip install 'tinygrad_seq\[plot\]'"):
        diagnostics.plot_gradient_flow(np.ones(3), tmp_path / "flow.png")


def test_jacobian_spectrum_checks_the_state_as_the_module_would() -> None:
    """A batch-5 state was used for a batch-2 input without a word; an LSTM given only h was
    reported by an internal cell with the wrong type."""
    spectrum = diagnostics.jacobian_spectrum
    with pytest.raises(ValueError, match=r"expected a state of shape \(1, 2, 8\) for RNN .* got \(1, 5, 8\)"):
        spectrum(ts.nn.RNN(3, 8), ts.randn(20, 2, 3), ts.zeros(1, 5, 8))
    with pytest.raises(ValueError, match=r"LSTM's state is a pair \(h, c\), got 1 tensor"):
        spectrum(ts.nn.LSTM(3, 8, num_layers=2), ts.randn(4, 2, 3), ts.zeros(2, 2, 8))
    with pytest.raises(ValueError, match=r"expected a state of shape \(8,\) for GRUCell"):
        spectrum(ts.nn.GRUCell(3, 8), ts.randn(4, 3), ts.zeros(1, 8))
    with pytest.raises(IndexError, match="batch_index 1.5"):
        spectrum(ts.nn.GRUCell(3, 8), ts.randn(4, 2, 3), batch_index=1.5)
    two_layers = ts.nn.LSTM(3, 8, num_layers=2)
    assert spectrum(two_layers, ts.randn(4, 2, 3), (ts.zeros(2, 2, 8), ts.zeros(2, 2, 8)), layer=1
                    ).singular_values.shape == (4, 16)
    assert spectrum(ts.nn.GRU(3, 8, batch_first=True), ts.randn(2, 4, 3), ts.zeros(1, 2, 8)
                    ).singular_values.shape == (4, 8)


def test_layer_gradient_flow_keeps_every_step_when_the_loss_skips_the_last_h() -> None:
    """A loss on c_n alone never uses the last step's h: that step was dropped, and the reverse
    direction's norms shifted by one. It has norm 0 now, as the fused layer (and torch) say."""
    composed = ts.nn.LSTM(2, 3, bidirectional=True).double()
    fused = ts.nn.LSTM(2, 3, bidirectional=True, fused=True).double()
    fused.load_state_dict(composed.state_dict())
    x = ts.tensor(np.random.default_rng(0).standard_normal((4, 1, 2)))
    flows = [diagnostics.layer_gradient_flow(layer(x)[1][1].sum()) for layer in (composed, fused)]
    forward, reverse = flows[0][("LSTM", 0, 0)], flows[0][("LSTM", 0, 1)]
    assert forward.shape == reverse.shape == (4,) and forward[3] == 0 and reverse[0] == 0
    assert forward[:3].all() and reverse[1:].all()
    for key in flows[0]:
        np.testing.assert_allclose(flows[0][key], flows[1][key], rtol=1e-12)


def test_layer_gradient_flow_steps_are_those_the_run_made_and_unused_runs_read_zero() -> None:
    """Steps driven by hand at t = 0, 2, 4, 6 got zeros at 1, 3, 5 that never ran; a one-step run
    whose h the loss does not use was dropped by the composed layer (the fused one gave 0)."""
    lstm = ts.nn.LSTM(2, 3).double()
    x = ts.tensor(np.random.default_rng(0).standard_normal((8, 1, 2)))
    state, outs = None, []
    for t in range(0, 8, 2):
        with ts.scope(step=t):
            out, state = lstm(x[t:t + 1], state)
        outs.append(out)
    flow = diagnostics.layer_gradient_flow(ts.stack(outs).sum())
    assert [values.shape for values in flow.values()] == [(4,)] and flow[("LSTM", 0, 0)].all()
    fused = ts.nn.LSTM(2, 3, fused=True).double()
    fused.load_state_dict(lstm.state_dict())
    flows = [diagnostics.layer_gradient_flow(layer(x[:1])[1][1].sum()) for layer in (lstm, fused)]
    for one in flows:
        assert {key: list(values) for key, values in one.items()} == {("LSTM", 0, 0): [0.0]}


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_layer_gradient_flow_with_lengths_counts_only_the_sequences_running_at_each_step(rng, kind, fused):
    """Packed semantics: at step t a sequence shorter than t has no state (forward: it ended; reverse: it
    has not started), so it adds nothing to ||dL/dh_t||, though the padded batch carries its state (and
    that state's gradient) through the padding. Oracle: each sequence run alone, unpadded, its norms
    combined per step over the sequences running then."""
    lengths, steps, hidden = [5, 2, 4], 5, 3
    ts.manual_seed(3)
    layer = getattr(ts.nn, kind)(2, hidden, num_layers=2, bidirectional=True, fused=fused).double()
    x = rng.standard_normal((steps, 3, 2))
    weights = rng.standard_normal((steps, 3, 2 * hidden))

    def loss_of(out: ts.Tensor, state: object, w: np.ndarray) -> ts.Tensor:
        h_n = state[0] if kind == "LSTM" else state
        return (out * ts.tensor(w)).sum() + (h_n ** 2).sum()

    out, state = layer(ts.tensor(x), lengths=lengths)
    flows = diagnostics.layer_gradient_flow(loss_of(out, state, weights))
    squares = {key: np.zeros(steps) for key in flows}
    for b, length in enumerate(lengths):
        alone_out, alone_state = layer(ts.tensor(x[:length, b:b + 1]))
        alone = diagnostics.layer_gradient_flow(loss_of(alone_out, alone_state, weights[:length, b:b + 1]))
        for key, norms in alone.items():
            squares[key[0].split(" #")[0], key[1], key[2]][:length] += norms ** 2
    assert len(squares) == 4
    for key, norms in flows.items():
        np.testing.assert_allclose(norms, np.sqrt(squares[key]), rtol=1e-10, atol=1e-14)
    # gradient_flow of the output reads the same states
    np.testing.assert_array_equal(diagnostics.gradient_flow(loss_of(out, state, weights), out, directions=2),
                                  [flows[kind, 1, 0], flows[kind, 1, 1]])
