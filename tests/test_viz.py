"""ts.viz: the structure of the drawn graph (not pixels), escaping, rendering with dot, gradients.

The DOT source is parsed back with small regexes: node ids are ``n<seq>`` (ops and leaves),
``s<seq>`` (cell-level steps), ``l<seq>`` (layers), ``e<seq>`` (elided steps) and ``legend_*``;
clusters are ``cluster_g<k>`` (module / layer / direction), ``cluster_g<k>_steps`` (its time steps)
and, at op level, ``cluster_g<k>_t<step>``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import graphviz
import numpy as np
import pytest

import tinygrad_seq as ts
from tinygrad_seq.autograd import topological_order

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="the Graphviz 'dot' program is not installed "
                                                   "(apt-get install graphviz)")
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = 'a<b>"c'


# -- reading the DOT source back -------------------------------------------------------------------


def node_labels(dot: graphviz.Digraph) -> dict[str, str]:
    """DOT node id -> its label, for drawn (non-legend) nodes."""
    labels = {}
    for line in dot.body:
        match = re.match(r"\s*(\w+) \[label=(.*)$", line)
        if match and not match.group(1).startswith("legend_"):
            labels[match.group(1)] = match.group(2)
    return labels


def edges(dot: graphviz.Digraph, invisible: bool = False) -> list[tuple[str, str, str]]:
    """(source, target, attributes) of each drawn edge, or of the invisible ones that order steps."""
    found = []
    for line in dot.body:
        match = re.match(r"\s*(\w+) -> (\w+)(.*)$", line)
        if match and ("style=invis" in match.group(3)) == invisible:
            found.append(match.groups())
    return found


def step_clusters(dot: graphviz.Digraph) -> list[tuple[int, int]]:
    """(group number, step) of each time-step cluster."""
    return [(int(g), int(t)) for g, t in re.findall(r"subgraph cluster_g(\d+)_t(\d+) \{", dot.source)]


def cluster_members(dot: graphviz.Digraph) -> dict[str, list[str]]:
    """Time-step cluster name -> ids of the nodes directly inside it."""
    members: dict[str, list[str]] = {}
    current = []
    for line in dot.body:
        opened = re.match(r"\s*subgraph (cluster_\w+) \{", line)
        if opened:
            current.append(opened.group(1))
            members[opened.group(1)] = []
        elif line.strip() == "}":
            current.pop()
        else:
            node = re.match(r"\s*(\w+) \[label=", line)
            if node and current:
                members[current[-1]].append(node.group(1))
    return members


def ids_labelled(dot: graphviz.Digraph, text: str) -> list[str]:
    return [node for node, label in node_labels(dot).items() if f"<B>{text}</B>" in label]


def out_degree(dot: graphviz.Digraph, node: str) -> int:
    return sum(1 for source, _, _ in edges(dot) if source == node)


def step_of(label: str) -> int:
    return int(re.search(r"<B>t=(\d+)</B>", label).group(1))


def lstm_loss(steps: int, num_layers: int = 1, bidirectional: bool = False, hidden: int = 3):
    lstm = ts.nn.LSTM(2, hidden, num_layers=num_layers, bidirectional=bidirectional)
    out, (h, c) = lstm(ts.randn(steps, 2, 2))
    return lstm, out, h, c, (out * out).sum()


def lstm_cell_loop(steps: int):
    """An LSTMCell run by hand, each step in ``ts.scope(step=t)``; also returns the op count of
    one call of the cell on its own."""
    cell = ts.nn.LSTMCell(2, 3)
    xs = ts.randn(steps, 2, 2)
    state = None
    for t in range(steps):
        with ts.scope(step=t):
            state = cell(xs[t], state)
    alone = cell(xs[0])
    nodes = {id(n): n for root in alone for n in topological_order(root._node)}
    ops_per_call = sum(1 for n in nodes.values() if not n.is_leaf)
    return cell, state, ops_per_call


# -- structure ------------------------------------------------------------------------------------


def test_op_level_has_a_cluster_per_step_layer_and_direction_with_the_same_ops_in_each():
    _, out, h, c, loss = lstm_loss(steps=3, num_layers=2, bidirectional=True)
    dot = ts.viz.draw(loss)
    clusters = step_clusters(dot)
    assert len(clusters) == 3 * 2 * 2
    assert len(re.findall(r"subgraph cluster_g\d+ \{", dot.source)) == 2 * 2
    for group in range(4):
        assert sorted(t for g, t in clusters if g == group) == [0, 1, 2]
    members = cluster_members(dot)
    counts = {len(members[f"cluster_g{g}_t{t}"]) for g, t in clusters}
    # one step of an LSTM layer: gates = x_t's rows of the hoisted projection + h W_hh^T as one addmm,
    # sigmoid, 4 gate slices, tanh(g), f*c, f*c + i*g as one addcmul, tanh(c), o*tanh(c)
    assert counts == {11}
    for gate in "ifgo":
        assert dot.source.count(f"[gate {gate}]") == 12 * (2 if gate == "g" else 1)  # g: slice and tanh
    titles = re.findall(r"label=<<B>([^<]*)</B>> .*style=\"rounded,filled\"", dot.source)
    assert set(titles) == {"LSTM · layer 0 · forward", "LSTM · layer 0 · reverse",
                           "LSTM · layer 1 · forward", "LSTM · layer 1 · reverse"}


def test_a_cell_loop_step_has_the_cells_op_count_and_shares_each_weight_over_all_steps():
    steps = 4
    _, state, ops_per_call = lstm_cell_loop(steps)
    dot = ts.viz.draw(state)
    members = cluster_members(dot)
    assert sorted(t for _, t in step_clusters(dot)) == list(range(steps))
    assert {len(ids) for name, ids in members.items() if "_t" in name} == {ops_per_call}
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        (node,) = ids_labelled(dot, f"LSTMCell.{name}")  # named by the module that uses it
        assert out_degree(dot, node) == steps  # W.T / the bias add happen inside each call


def test_cell_level_draws_one_box_per_step_and_each_parameter_once_with_an_edge_per_step():
    steps = 5
    lstm, out, h, c, loss = lstm_loss(steps)
    dot = ts.viz.draw(loss, level="cell", params=lstm.named_parameters())
    labels = node_labels(dot)
    boxes = [node for node in labels if node.startswith("s")]
    assert sorted(step_of(labels[b]) for b in boxes) == list(range(steps))
    assert all("gates i f g o" in labels[b] and "11 ops" in labels[b] for b in boxes)
    (w_hh,) = ids_labelled(dot, "weight_hh_l0")  # drawn once, W_hh.T folded into it
    assert {target for source, target, _ in edges(dot) if source == w_hh} == set(boxes)
    # the hoisted projection x W_ih^T + (b_ih + b_hh) of all steps is one addmm
    (w_ih,) = ids_labelled(dot, "weight_ih_l0")
    (projection,) = {target for source, target, _ in edges(dot) if source == w_ih}
    assert "<B>addmm</B>" in labels[projection]
    for bias in ("bias_ih_l0", "bias_hh_l0"):
        (node,) = ids_labelled(dot, bias)
        assert {target for source, target, _ in edges(dot) if source == node} == {projection}
    assert {target for source, target, _ in edges(dot) if source == projection} == set(boxes)
    # the recurrence: h_{t-1} and c_{t-1} enter step t as two edges from step t-1
    ordered = sorted(boxes, key=lambda b: step_of(labels[b]))
    for before, after in zip(ordered, ordered[1:], strict=False):
        assert sum(1 for s, t, _ in edges(dot) if (s, t) == (before, after)) == 2


def test_cell_level_edges_name_each_steps_inputs_and_outputs():
    lstm, out, h, c, loss = lstm_loss(steps=3, bidirectional=True)
    dot = ts.viz.draw(loss, level="cell", show_shapes=False)
    labels, members = node_labels(dot), cluster_members(dot)
    into: dict[str, set] = {}
    out_of: dict[str, set] = {}
    for source, target, attrs in edges(dot):
        text = re.search(r"label=<(.*)>", attrs).group(1) if "label=" in attrs else ""
        into.setdefault(target, set()).add(text)
        out_of.setdefault(source, set()).add(text)
    for group, previous in (("cluster_g0_steps", -1), ("cluster_g1_steps", +1)):  # forward, reverse
        for box in members[group]:
            t = step_of(labels[box])
            assert f"x<SUB>{t}</SUB>" in into[box]  # the projected input x_t
            assert f"h<SUB>{t}</SUB>" in out_of[box]  # into the output stack (and the next step)
            if t + previous in range(3):  # the state h_{t-1}, c_{t-1} (reverse: h_{t+1}, c_{t+1})
                assert {f"h<SUB>{t + previous}</SUB>", f"c<SUB>{t + previous}</SUB>"} <= into[box]
    cell = ts.nn.LSTMCell(2, 3)
    xs = ts.randn(2, 2, 2, requires_grad=True)
    state = None
    for t in range(2):
        with ts.scope(step=t):  # x[t] is made at step t, outside the cell's module
            state = cell(xs[t], state)
            state = (state[0].named(HOSTILE), state[1])
    loop = ts.viz.draw(state, level="cell", show_shapes=False).source
    assert f"label=<{ts.viz._html(HOSTILE)}<SUB>0</SUB>>" in loop and "label=<c<SUB>0</SUB>>" in loop
    assert "label=<x<SUB>0</SUB>>" in loop and "label=<x<SUB>1</SUB>>" in loop


@pytest.mark.parametrize("fused", [False, True])
def test_state_edges_are_labelled_at_padded_steps_and_on_the_fused_path(fused: bool):
    lstm = ts.nn.LSTM(3, 4, fused=fused)
    out, _ = lstm(ts.randn(5, 2, 3), lengths=[5, 3])  # steps 3 and 4 mask the shorter sequence
    source = ts.viz.draw(out.sum(), level="cell", show_shapes=False).source
    names = ["[h, c]"] if fused else ["h", "c"]
    for t in range(4):  # each step's state feeds the next step, by its name
        assert all(f"label=<{ts.viz._html(name)}<SUB>{t}</SUB>>" in source for name in names)


def test_x_t_edges_show_the_shape_of_one_step_not_of_the_whole_projection():
    _, out, h, c, loss = lstm_loss(steps=5)  # batch 2, 4 gates * hidden 3: x_proj is (5 * 2, 12)
    dot = ts.viz.draw(loss, level="cell")
    x_edges = [attrs for _, _, attrs in edges(dot) if "x<SUB>" in attrs]
    assert len(x_edges) == 5 and all("(2, 12)" in attrs and "(10, 12)" not in attrs for attrs in x_edges)
    graded = ts.viz.draw(loss, level="cell", show_grads=True)
    x_norms = [float(re.search(r'tooltip="grad norm ([\d.e+-]+)"', attrs).group(1))
               for _, _, attrs in edges(graded) if "x<SUB>" in attrs]
    (projection,) = [lab for lab in node_labels(graded).values() if "<B>addmm</B><BR/>(10, 12)" in lab]
    whole = float(re.search(r"‖g‖ ([\d.e+-]+)", projection).group(1))
    assert len(set(x_norms)) == 5  # each step's slice, not the whole projection's norm five times
    assert np.sqrt(np.sum(np.square(x_norms))) == pytest.approx(whole, rel=1e-2)


def test_a_hand_written_loop_without_step_scopes_warns_how_to_get_step_boxes():
    cell = ts.nn.LSTMCell(2, 3)
    xs = ts.randn(3, 2, 2)
    state = None
    for t in range(3):
        state = cell(xs[t], state)
    for level in ("cell", "layer"):
        with pytest.warns(UserWarning, match=r"with ts.scope\(step=t\):.*RNN / LSTM / GRU layer") as caught:
            ts.viz.draw(state, level=level)
        assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ts.viz.draw(state)  # the op level needs no steps
        ts.viz.draw(lstm_loss(steps=2)[-1], level="cell")


def test_x_t_slices_in_a_hand_written_loop_are_the_input_of_their_cell_step():
    cell = ts.nn.LSTMCell(2, 3)
    xs = ts.randn(3, 2, 2, requires_grad=True).named("xs")
    state = None
    for t in range(3):
        with ts.scope(step=t):  # xs[t] is made at step t, but in no module
            state = cell(xs[t], state)
    dot = ts.viz.draw(state, level="cell")
    assert "<B>steps</B>" not in dot.source  # no row of step boxes of their own
    labels = node_labels(dot)
    boxes = {node: step_of(label) for node, label in labels.items() if node.startswith("s")}
    assert len(boxes) == 3
    (source,) = ids_labelled(dot, "xs")
    into = {target: attrs for s, target, attrs in edges(dot) if s == source}
    assert set(into) == set(boxes)
    for box, t in boxes.items():
        assert f"label=<x<SUB>{t}</SUB><BR/>(2, 2)>" in into[box]
    layers = [label for node, label in node_labels(ts.viz.draw(state, level="layer")).items()
              if node.startswith("l")]
    assert len(layers) == 1 and "<B>LSTMCell</B>" in layers[0]


def test_many_steps_share_one_edge_per_parameter_into_the_box_of_steps():
    steps = ts.viz.BUNDLE_FROM + 2
    lstm, out, h, c, loss = lstm_loss(steps, bidirectional=True)
    for level in ("cell", "op"):
        dot = ts.viz.draw(loss, level=level)
        bundled = [(s, t, a) for s, t, a in edges(dot) if "lhead=" in a or "ltail=" in a]
        # per direction: W_hh (W_hh.T at op level) and the projection feed every step, the stack
        # collects from every step
        assert len(bundled) == 3 * 2 and all("every step" in a for _, _, a in bundled)
        assert 'compound=true' in dot.source
        (w_hh,) = ids_labelled(dot, "LSTM.weight_hh_l0")
        reach = [t for s, t, _ in edges(dot) if s == w_hh]
        assert len(reach) == 1  # the parameter itself is drawn once
        heads = {re.search(r"lhead=(\w+)", a).group(1) for _, _, a in bundled if "lhead=" in a}
        assert heads == {"cluster_g0_steps", "cluster_g1_steps"}
    cell = ts.viz.draw(loss, level="cell", show_shapes=False)
    assert "label=<x<SUB>t</SUB><BR/>every step>" in cell.source
    assert "label=<h<SUB>t</SUB><BR/>every step>" in cell.source


def test_layer_level_draws_a_box_per_layer_and_direction():
    _, out, h, c, loss = lstm_loss(steps=3, num_layers=2, bidirectional=True)
    labels = node_labels(ts.viz.draw(loss, level="layer"))
    boxes = [labels[n] for n in labels if n.startswith("l")]
    assert len(boxes) == 4 and all("t=0..2" in box for box in boxes)
    # 3 steps of 11 ops, the output stack and the projection of the inputs (addmm), while ops on
    # parameters alone (W.T, b_ih + b_hh) are drawn as the parameters
    assert [re.search(r"(\d+) ops", box).group(1) for box in boxes] == ["35", "35", "35", "35"]


def test_each_run_of_a_layer_is_its_own_recurrence_and_a_decoder_loop_is_one():
    encoder = ts.nn.GRU(2, 3)
    first, _ = encoder(ts.randn(4, 1, 2))
    second, h = encoder(ts.randn(4, 1, 2))  # the same layer again: two recurrences, not one
    decoder, outputs = ts.nn.RNN(3, 3), []
    for t in range(3):  # one step per call, in the caller's time loop: one recurrence of 3 steps
        with ts.scope(step=t):
            out, h = decoder(h.reshape(1, 1, 3), h)
        outputs.append(out)
    loss = first.sum() + second.sum() + ts.stack(outputs).sum()
    labels = node_labels(ts.viz.draw(loss, level="layer"))
    boxes = {re.search(r"<B>(.*?)</B>", labels[n]).group(1): labels[n] for n in labels if n.startswith("l")}
    layers = sorted(title for title in boxes if "layer" in title)
    assert layers == ["GRU #1 · layer 0 · forward", "GRU #2 · layer 0 · forward", "RNN · layer 0 · forward"]
    spans = [re.search(r"t=(\d+\.\.\d+)", boxes[title]).group(1) for title in layers]
    assert spans == ["0..3", "0..3", "0..2"]


def test_reverse_direction_keeps_time_running_left_to_right():
    _, out, h, c, loss = lstm_loss(steps=3, bidirectional=True)
    cell = ts.viz.draw(loss, level="cell")
    labels = node_labels(cell)
    step = {n: step_of(lab) for n, lab in labels.items() if n[0] == "s"}
    recurrent = [(s, t, a) for s, t, a in edges(cell) if s in step and t in step]
    backwards = [a for s, t, a in recurrent if step[s] > step[t]]
    assert len(backwards) == 2 * 2  # h and c between the reverse direction's 3 steps
    assert all("constraint=false" in a for a in backwards)  # they do not lay out the picture ...
    assert not any("constraint=false" in a for s, t, a in recurrent if step[s] < step[t])
    anchors = [(step[s], step[t]) for s, t, _ in edges(cell, invisible=True)]
    assert sorted(anchors) == [(0, 1), (0, 1), (1, 2), (1, 2)]  # ... invisible edges t -> t+1 do
    assert all("weight=10" in a for _, _, a in edges(cell, invisible=True))

    dot = ts.viz.draw(loss, level="op")
    cluster_of = {node: name for name, nodes in cluster_members(dot).items() for node in nodes}
    time_of = {node: int(name.rsplit("_t", 1)[1]) for node, name in cluster_of.items() if "_t" in name}
    for source, target, _ in edges(dot, invisible=True):  # each step's last ops -> the next's first
        assert time_of[target] == time_of[source] + 1
        assert cluster_of[source].split("_t")[0] == cluster_of[target].split("_t")[0]
    assert {(cluster_of[s].split("_t")[0], time_of[s]) for s, _, _ in edges(dot, invisible=True)} == {
        (group, t) for group in ("cluster_g0", "cluster_g1") for t in (0, 1)}
    across = [(time_of[s], time_of[t], a) for s, t, a in edges(dot) if s in time_of and t in time_of
              and time_of[s] != time_of[t]]
    assert {(a, b) for a, b, _ in across} == {(0, 1), (1, 2), (2, 1), (1, 0)}
    assert all(("constraint=false" in attrs) == (a > b) for a, b, attrs in across)


def test_names_and_shapes_appear():
    x = ts.randn(3, 2, requires_grad=True).named("tokens")
    w = ts.nn.Parameter(np.ones((2, 4), np.float32), name="proj")
    y = (x @ w).tanh().named("hidden")
    loss = y.sum().named("loss")
    labels = node_labels(ts.viz.draw(loss, show_values=False))
    text = " ".join(labels.values())
    for name, shape in (("tokens", "(3, 2)"), ("proj", "(2, 4)"), ("hidden", "(3, 4)"), ("loss", "()")):
        (label,) = [lab for lab in labels.values() if f"<B>{name}</B>" in lab]
        assert shape in label
    assert "matmul" in text and "tanh" in text
    assert len(labels) == 5  # tokens, proj, matmul, tanh (hidden), sum (loss)
    bare = ts.viz.draw(loss, show_shapes=False, show_values=False)
    assert "(3, 4)" not in bare.source


def test_parameters_are_named_by_module_path_by_default():
    class Model(ts.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = ts.nn.LSTM(2, 3)
            self.head = ts.nn.Linear(3, 1)

        def forward(self, x: ts.Tensor) -> ts.Tensor:
            out, _ = self.lstm(x)
            return self.head(out).sum()

    model = Model()
    loss = model(ts.randn(2, 1, 2))
    for level in ts.viz.LEVELS:
        dot = ts.viz.draw(loss, level=level)
        for name in ("Model.lstm.weight_hh_l0", "Model.lstm.bias_ih_l0", "Model.head.weight"):
            assert len(ids_labelled(dot, name)) == 1, (level, name)
    named = ts.viz.draw(loss, params=model.named_parameters())
    assert len(ids_labelled(named, "lstm.weight_hh_l0")) == 1  # params= names win


def test_the_legend_says_what_each_swatch_means():
    x = ts.randn(2, requires_grad=True)
    w = ts.nn.Parameter(np.ones(2, np.float32), name="w")
    loss = (x * w).sum()
    legend = " ".join(line for line in ts.viz.draw(loss, show_values=False).body if "legend_" in line)
    for text in ("parameter: a weight, drawn once and shared by every step", "input: a leaf tensor",
                 "output: a tensor passed to draw", "op: one primitive operation"):
        assert text in legend
    loss.backward()
    graded = ts.viz.draw(loss, show_grads=True, show_values=False).source
    assert "fill: gradient norm ‖g‖ (log scale)" in graded
    assert "zero gradient" in graded and "white: no gradient recorded" in graded


def test_containers_and_several_roots_are_outputs():
    _, out, h, c, _ = lstm_loss(steps=2)
    dot = ts.viz.draw((out, (h, c)), legend=False)
    assert dot.source.count("shape=doubleoctagon") == 3
    same = ts.viz.draw({"out": out, "state": [h, c]}, legend=False)
    assert same.source == dot.source
    assert ts.viz.draw(out, h, c, legend=False).source == dot.source


def test_elision_keeps_the_first_and_last_steps():
    _, out, h, c, loss = lstm_loss(steps=12)
    dot = ts.viz.draw(loss, max_steps=4)
    assert sorted(t for _, t in step_clusters(dot)) == [0, 1, 10, 11]
    labels = node_labels(dot)
    (elided,) = [lab for n, lab in labels.items() if n.startswith("e")]
    assert "8 more steps" in elided and "t=2..9" in elided
    cell = node_labels(ts.viz.draw(loss, level="cell", max_steps=3))
    assert sorted(re.search(r"<B>t=(\d+)</B>", lab).group(1) for n, lab in cell.items()
                  if n.startswith("s")) == ["0", "1", "11"]
    with pytest.raises(ValueError, match="max_steps must be an int >= 2"):
        ts.viz.draw(loss, max_steps=1)


def test_node_count_guard_suggests_what_would_still_shrink_the_picture():
    _, out, h, c, loss = lstm_loss(steps=190)  # 11 ops a step: over the default limit of 2,000 nodes
    with pytest.raises(ValueError, match=r"level='cell'.*max_steps") as err:
        ts.viz.draw(loss)
    assert "max_nodes=None" in str(err.value)
    assert len(step_clusters(ts.viz.draw(loss, max_nodes=None, legend=False))) == 190
    assert len(step_clusters(ts.viz.draw(loss, max_steps=10))) == 10
    with pytest.raises(ValueError, match="Use level='layer', elide the middle") as err:
        ts.viz.draw(loss, level="cell", max_nodes=50)
    assert "level='cell'" not in str(err.value)
    with pytest.raises(ValueError, match=r"fewer steps \(now max_steps=40; try max_steps=20\)") as err:
        ts.viz.draw(loss, level="cell", max_steps=40, max_nodes=20)
    assert "max_steps=10" not in str(err.value)
    with pytest.raises(ValueError, match=r"Use level='layer', or pass max_nodes=None"):
        ts.viz.draw(loss, level="cell", max_steps=2, max_nodes=5)  # no fewer steps to keep
    with pytest.raises(ValueError, match=r"unreadable\. Pass max_nodes=None to draw it anyway\.$"):
        ts.viz.draw(loss, level="layer", max_nodes=3)  # a layer box has no steps to elide


def test_hostile_names_are_escaped():
    x = ts.randn(2, requires_grad=True).named(HOSTILE)
    w = ts.nn.Parameter(np.ones(2, np.float32), name='w\\"};\n<&>')
    with ts.scope(HOSTILE, module=HOSTILE, step=0):  # a label, and a cluster title
        y = (x * w).named("]] -> evil [label=x")
    dot = ts.viz.draw(y.sum(), show_values=True)
    for line in dot.body:  # no user text leaks outside an HTML label or quoted string
        assert "evil" not in line.split("label=")[0]
    assert HOSTILE not in dot.source and "&lt;b&gt;&quot;c" in dot.source
    if HAS_DOT:
        svg = ET.fromstring(dot.pipe(format="svg"))
        texts = ["".join(t.itertext()) for t in svg.iter(f"{SVG}text")]
        assert texts.count(HOSTILE) == 2  # the cluster title and the input's name
        assert any("]] -> evil [label=x" in text for text in texts)
        assert any('w\\"};?<&>' in text for text in texts)  # the newline became '?'


# -- gradients ------------------------------------------------------------------------------------


def test_recorded_gradient_norms_label_and_colour_the_nodes():
    x = ts.randn(3, 2, requires_grad=True).named("x")
    w = ts.nn.Parameter(ts.randn(2, 4).data * 3, name="w")
    hidden = (x @ w).tanh().named("hidden").retain_grad()
    loss = (hidden * hidden).sum().named("loss")
    before = ts.viz.draw(loss)
    assert "‖g‖" not in before.source  # nothing recorded yet: no overlay by default
    with ts.viz.record_grad_norms():
        loss.backward()
    dot = ts.viz.draw(loss, show_values=False)  # after backward: the structure is still there
    labels = node_labels(dot)
    (label,) = [lab for lab in labels.values() if "<B>hidden</B>" in lab]
    assert f"‖g‖ {np.linalg.norm(hidden.grad.data):.3g}" in label
    (label,) = [lab for lab in labels.values() if "<B>w</B>" in lab]
    assert f"‖g‖ {np.linalg.norm(w.grad.data):.3g}" in label
    assert "gradient norm ‖g‖ (log scale)" in dot.source
    assert ts.viz.draw(loss, show_grads=False).source.count("‖g‖") == 0


def test_gradient_colours_follow_the_log_norm():
    x = ts.tensor([1.0, 1.0], requires_grad=True).named("x")
    scales = (1e-4, 1e-2, 1.0, 1e2)
    branches = [(x * 1.0).named(f"s{k}") for k in range(len(scales))]
    loss = sum((b.sum() * scale for b, scale in zip(branches, scales, strict=True)), ts.tensor(0.0))
    with ts.viz.record_grad_norms():
        loss.backward()
    dot = ts.viz.draw(loss, show_values=False)
    labels = node_labels(dot)
    shades = []
    for k, scale in enumerate(scales):  # dL/ds_k = scale * ones(2)
        (node,) = [n for n, lab in labels.items() if f"<B>s{k}</B>" in lab]
        assert f"‖g‖ {scale * np.sqrt(2):.3g}" in labels[node]
        line = next(line for line in dot.body if line.strip().startswith(node + " "))
        shades.append(ts.viz._GRAD_COLOURS.index(re.search(r'fillcolor="(#\w+)"', line).group(1)))
    assert shades == sorted(shades) and shades[0] < shades[1] < shades[2] < shades[3]


def grad_label(dot: graphviz.Digraph, name: str) -> str:
    (label,) = [lab for lab in node_labels(dot).values() if f"<B>{name}</B>" in lab]
    return label


def test_show_grads_computes_every_norm_while_the_graph_is_alive_and_changes_nothing():
    x = ts.randn(3, 2, requires_grad=True).named("x")
    w = ts.nn.Parameter(ts.randn(2, 4).data, name="w")
    hidden = (x @ w).tanh().named("hidden").retain_grad()
    loss = (hidden * hidden).sum().named("loss")
    w.grad = ts.tensor(np.full((2, 4), 7.0, np.float32))  # an accumulated gradient draw must keep
    before = ts.viz.draw(loss, show_grads=True, show_values=False)  # no backward yet
    assert w.grad.data.tolist() == np.full((2, 4), 7.0).tolist() and hidden.grad is None
    assert all(node.grad_norm is None for node in topological_order(loss._node))  # draw's own dict
    w.grad = None
    loss.backward(retain_graph=True)
    after = ts.viz.draw(loss, show_grads=True, show_values=False)
    for dot in (before, after):
        assert f"‖g‖ {np.linalg.norm(hidden.grad.data):.3g}" in grad_label(dot, "hidden")
        assert f"‖g‖ {np.linalg.norm(w.grad.data):.3g}" in grad_label(dot, "w")
        assert "not recorded" not in dot.source and "ops: no norms" not in dot.source
    grads = [w.grad.data.copy(), x.grad.data.copy()]
    loss.backward()  # the graph was kept: a second backward works and accumulates as usual
    np.testing.assert_array_equal(w.grad.data, 2 * grads[0])
    np.testing.assert_array_equal(x.grad.data, 2 * grads[1])


def test_show_grads_after_a_plain_backward_says_how_to_get_the_op_norms():
    w = ts.nn.Parameter(np.full((2, 2), 2.0, np.float32), name="w")
    square = (w * w).named("square")
    loss = square.sum()
    loss.backward()  # frees the graph, records nothing
    dot = ts.viz.draw(loss, show_grads=True, show_values=False)
    assert f"‖g‖ {np.linalg.norm(w.grad.data):.3g}" in grad_label(dot, "w")  # leaves: from .grad
    assert "not recorded" in grad_label(dot, "square")
    assert ("ops: no norms: the graph was freed by backward()<BR/>draw before backward (or after "
            "backward(retain_graph=True)), or wrap backward in ts.viz.record_grad_norms()") in dot.source
    x = ts.randn(2, requires_grad=True)
    fresh = (x * 2).sum()
    fresh.backward()
    x.grad = None  # nothing left to show at all
    with pytest.raises(ValueError, match=r"graph was freed by backward\(\); draw before backward"):
        ts.viz.draw(fresh, show_grads=True)
    _, out, h, c, _ = lstm_loss(steps=2)  # alive, but no single scalar root to differentiate
    with pytest.raises(ValueError, match="single scalar root"):
        ts.viz.draw(out, h, show_grads=True)


def test_micrograd_style_values_for_tiny_graphs():
    a = ts.tensor(2.0, requires_grad=True).named("a")
    b = ts.tensor(-3.0, requires_grad=True).named("b")
    out = (a * b).named("out")
    with ts.viz.record_grad_norms():
        out.backward()
    labels = node_labels(ts.viz.draw(out))
    (a_label,) = [lab for lab in labels.values() if "<B>a</B>" in lab]
    assert "<TD>data 2</TD><TD>grad -3</TD>" in a_label  # leaves: values and .grad
    (out_label,) = [lab for lab in labels.values() if "<B>out</B>" in lab]
    assert "<TD>data -6</TD><TD>grad ‖g‖ 1</TD>" in out_label  # the caller holds the root
    big = node_labels(ts.viz.draw(ts.randn(5, 5, requires_grad=True).sum()))
    assert not any("data" in lab for lab in big.values())


def test_drawing_never_changes_a_result():
    def run(draw: bool) -> list[np.ndarray]:
        ts.manual_seed(3)
        lstm, out, h, c, loss = lstm_loss(steps=4, bidirectional=True)
        if draw:
            for level in ts.viz.LEVELS:
                ts.viz.draw(loss, (h, c), level=level, max_steps=2)
                ts.viz.draw(loss, level=level, show_grads=True)  # an extra backward, undone
        loss.backward()
        if draw:
            ts.viz.draw(loss, show_grads=True)
        return [p.grad.data for p in lstm.parameters()] + [ts.randn(3).data]

    for drawn, plain in zip(run(True), run(False), strict=True):
        np.testing.assert_array_equal(drawn, plain)


# -- rendering ------------------------------------------------------------------------------------


@needs_dot
def test_svg_rendering_with_dot(tmp_path: Path):
    lstm, out, h, c, loss = lstm_loss(steps=3, num_layers=2, bidirectional=True)
    path = ts.viz.save(ts.viz.draw(loss, level="op"), tmp_path / "lstm.svg")
    svg = ET.parse(path).getroot()
    groups = list(svg.iter(f"{SVG}g"))
    clusters = [g for g in groups if g.get("class") == "cluster"]
    assert len(clusters) == 12 + 4 + 4 + 1  # steps, boxes of steps, layer / direction groups, legend
    titles = {"".join(g.find(f"{SVG}text").itertext()) for g in clusters if g.find(f"{SVG}text") is not None}
    assert {"t=0", "t=1", "t=2", "legend"} <= titles
    nodes = [g for g in groups if g.get("class") == "node"]
    assert len(nodes) == len(node_labels(ts.viz.draw(loss))) + sum(
        1 for line in ts.viz.draw(loss).body if line.strip().startswith("legend_"))
    png = ts.viz.save(loss, tmp_path / "lstm.png", level="cell")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = ts.viz.save(loss, tmp_path / "lstm.pdf", level="layer")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    bundle = ts.viz.draw(loss, level="layer")._repr_mimebundle_()
    assert "image/svg+xml" in bundle  # notebooks: graphviz's own rich display


@needs_dot
def test_the_dot_source_parses():
    _, out, h, c, loss = lstm_loss(steps=2, bidirectional=True)
    for level in ts.viz.LEVELS:
        result = subprocess.run(["dot", "-Tcanon"], input=ts.viz.draw(loss, level=level).source,
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0 and not result.stderr, result.stderr


def test_save_dot_source_and_missing_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _, out, h, c, loss = lstm_loss(steps=2)
    dot = ts.viz.draw(loss)
    source = ts.viz.save(dot, tmp_path / "g.dot")
    assert source.read_text(encoding="utf-8") == dot.source
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ts.viz.GraphvizNotFoundError, match="apt-get install graphviz") as err:
        ts.viz.save(dot, tmp_path / "picture.svg")
    fallback = tmp_path / "picture.dot"
    assert str(fallback) in str(err.value)
    assert fallback.read_text(encoding="utf-8").startswith(dot.source)
    assert not (tmp_path / "picture.svg").exists()
    assert dot._repr_mimebundle_() == {"text/plain": (  # a notebook shows how to install dot
        "Showing this picture needs the Graphviz 'dot' program, which is not on PATH. Install Graphviz "
        "with `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or from "
        "https://graphviz.org/download/. Without it, ts.viz.save(picture, 'picture.dot') writes the "
        "DOT source.")}


def test_the_fallback_never_overwrites_a_dot_file_it_did_not_write(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    _, out, h, c, loss = lstm_loss(steps=2)
    dot = ts.viz.draw(loss)
    mine = tmp_path / "picture.dot"
    mine.write_text("digraph { my -> notes }", encoding="utf-8")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for _ in range(2):  # the second save overwrites its own earlier fallback, and nothing else
        with pytest.raises(ts.viz.GraphvizNotFoundError, match=re.escape(str(tmp_path / "picture.1.dot"))):
            ts.viz.save(dot, tmp_path / "picture.svg")
    assert mine.read_text(encoding="utf-8") == "digraph { my -> notes }"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["picture.1.dot", "picture.dot"]
    fallback = (tmp_path / "picture.1.dot").read_text(encoding="utf-8")
    assert fallback.startswith(dot.source)
    assert fallback.endswith("\n// DOT source written by ts.viz.save: picture.svg could not be rendered\n")
    mine.write_text(dot.source, encoding="utf-8")  # the same picture, saved by the user: reused
    with pytest.raises(ts.viz.GraphvizNotFoundError, match=re.escape(f"{str(mine)!r}")):
        ts.viz.save(dot, tmp_path / "picture.svg")
    monkeypatch.undo()
    if HAS_DOT:  # the marker line is a DOT comment: the fallback renders as it is
        result = subprocess.run(["dot", "-Tcanon"], input=fallback, capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0 and not result.stderr, result.stderr


def test_save_checks_the_folder_before_drawing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _, out, h, c, loss = lstm_loss(steps=2)

    def no_drawing(*args: object, **kwargs: object) -> None:
        raise AssertionError("save drew before checking the folder")

    monkeypatch.setattr(ts.viz, "draw", no_drawing)
    missing = tmp_path / "no such folder"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{str(missing)!r} does not exist")):
        ts.viz.save(loss, missing / "picture.svg")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("", encoding="utf-8")
    with pytest.raises(NotADirectoryError, match=re.escape(f"{str(a_file)!r} is not a folder")):
        ts.viz.save(loss, a_file / "picture.dot")


def test_save_writes_the_dot_source_when_dot_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _, out, h, c, loss = lstm_loss(steps=2)
    dot = ts.viz.draw(loss)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    broken = bin_dir / "dot"
    # reads its input with the shell's own `read` (no cat on this PATH), then fails
    broken.write_text("#!/bin/sh\nwhile read -r _; do :; done\necho 'Error: out of memory' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ts.viz.RenderError, match="exit status 3: Error: out of memory") as err:
        ts.viz.save(dot, tmp_path / "picture.png")
    broken.write_text("#!/bin/sh\nexit 3\n")  # dies before reading: a broken pipe, still a fallback
    with pytest.raises(ts.viz.RenderError, match="picture.dot"):
        ts.viz.save(dot, tmp_path / "picture.png")
    assert not isinstance(err.value, ts.viz.GraphvizNotFoundError)
    fallback = tmp_path / "picture.dot"
    assert str(fallback) in str(err.value)
    assert fallback.read_text(encoding="utf-8").startswith(dot.source)
    assert not (tmp_path / "picture.png").exists()


def test_bad_input_is_named():
    _, out, h, c, loss = lstm_loss(steps=2)
    with pytest.raises(ValueError, match="level must be one of"):
        ts.viz.draw(loss, level="cells")
    with pytest.raises(TypeError, match="tuples / lists / dicts of them as roots, got int"):
        ts.viz.draw(loss, 3)
    with pytest.raises(ValueError, match="none of the roots requires grad"):
        ts.viz.draw(ts.randn(2))
    with pytest.raises(ValueError, match="rankdir"):
        ts.viz.draw(loss, rankdir="sideways")
    with pytest.raises(TypeError, match="params must be"):
        ts.viz.draw(loss, params=[loss])
    with pytest.raises(ValueError, match="cannot infer the format"):
        ts.viz.save(loss, "picture.jpeg")
    with pytest.raises(TypeError, match="only apply when passing roots"):
        ts.viz.save(ts.viz.draw(loss), "picture.dot", level="cell")


def test_drawing_a_long_bidirectional_stack_is_fast():
    """The issue's budget: building the Digraph of a 2-layer bidirectional LSTM over 100 steps at
    op level takes well under 2 s (benchmarks/bench_viz.py measures it; about 0.5 s here)."""
    _, out, h, c, loss = lstm_loss(steps=100, num_layers=2, bidirectional=True, hidden=8)
    start = time.perf_counter()
    dot = ts.viz.draw(loss, max_nodes=None)
    elapsed = time.perf_counter() - start
    assert len(step_clusters(dot)) == 400
    assert elapsed <= 2.0
    assert re.findall(r"\[gate (\w)\]", dot.source).count("f") == 400


@needs_dot
@pytest.mark.parametrize(("level", "steps"), [("cell", 50), ("op", 20)])
def test_dot_renders_a_long_bidirectional_stack_quickly(level: str, steps: int):
    """Each weight feeding every step used to be T edges, and dot took 20 s at T=20 and minutes
    at T=40; the bound is generous (a few tenths of a second at cell level, ~1 s at op level)."""
    _, out, h, c, loss = lstm_loss(steps=steps, num_layers=2, bidirectional=True)
    source = ts.viz.draw(loss, level=level).source
    result = subprocess.run(["dot", "-Tsvg"], input=source, capture_output=True, text=True, timeout=20,
                            check=False)
    assert result.returncode == 0, result.stderr
    texts = ["".join(t.itertext()) for t in ET.fromstring(result.stdout).iter(f"{SVG}text")]
    assert texts.count("LSTM.weight_hh_l1_reverse") == 1  # drawn once, shared by all steps


def test_the_node_count_error_survives_pickling_and_spells_cli_flags() -> None:
    import pickle

    error = ts.viz.PictureTooLargeError("cell", 49, 20, 40)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.nodes == 49
    assert error.advice(flags=True) == ("Use --level layer, or keep fewer steps (now --max-steps 40; try "
                                        "--max-steps 20)")


def test_the_node_count_advice_of_a_graph_without_steps_offers_what_would_shrink_it() -> None:
    h = ts.randn(2, requires_grad=True)
    for _ in range(300):
        h = h.tanh() * 1.0
    for level in ("op", "cell"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (draw warns that a cell level without steps draws every op)
            with pytest.raises(ts.viz.PictureTooLargeError) as caught:
                ts.viz.draw(h.sum(), level=level, max_steps=10, max_nodes=100)
        message = str(caught.value)
        assert "with ts.scope(step=t):" in message and "max_nodes=None" in message
        assert "max_steps" not in message.split("limit max_nodes")[1] and "level=" not in message
