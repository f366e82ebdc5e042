"""Pictures of the unrolled graph: ``ts.viz.draw(loss)`` returns a ``graphviz.Digraph``.

The picture is read off what the graph already records, never guessed from shapes: every node
keeps its op, shape, name and the provenance that was current when it was made (module path,
layer, direction, time step, gate; see ``tinygrad_seq.provenance``). Three levels of detail:

- ``"op"``: every primitive op, inside one cluster per time step (labelled t=0 .. T-1), inside
  one cluster per module / layer / direction;
- ``"cell"``: one box per time step of each recurrent layer and direction, with the edges that
  enter it (x_t, the previous step's state h_{t-1}, c_{t-1}) and leave it (h_t, c_t), labelled
  from provenance and the names layers give their states. A hand-written cell loop needs each
  step in ``ts.scope(step=t)`` (draw warns otherwise); ops made there outside the cell that only
  feed its step t (``x[t]``) are drawn inside that step;
- ``"layer"``: one box per layer and direction.

A fused layer (``fused=True``) is one node per layer direction in the graph; pictures draw its time
steps as the graph of per-step nodes would be drawn (``_Unrolling``): at every level one cell op per
step (with its ``x[t]`` when the layer input is in the graph), fed by the weights and the previous
step's state, and the sequence node collecting the steps' states.

Only tensors that require grad are in the graph: inputs without ``requires_grad`` and ops on
constants do not appear. At the cell and layer levels, ops computed from parameters alone (such
as ``W_hh.T`` or ``b_ih + b_hh``, made once before the time loop) are drawn as part of those
parameters, so each shared weight is drawn once with an edge into every step that uses it.
Parameters are named by the module path of the ops that use them (``Model.lstm.weight_hh_l0``),
or by ``params=model.named_parameters()``.

Layout: time runs left to right in both directions (invisible edges order consecutive steps; a
reverse direction's state edges, which point back in time, do not constrain the layout). A node
that feeds, or collects from, many steps of one recurrence gets a single edge to the box around
those steps: the weights are still drawn once and shared by every step, and ``dot`` stays fast.

Gradients: nodes do not keep gradients, and normal training pays nothing for pictures.
``draw(loss, show_grads=True)`` colours nodes by their gradient norm on a log scale. While the
graph is alive (before backward, or after ``backward(retain_graph=True)``) draw computes every
norm itself, with one extra backward from the scalar ``loss`` that keeps the graph and restores
every ``.grad`` (it does run tensor hooks). After a plain backward the graph is freed: only norms
recorded by wrapping that backward in ``record_grad_norms()`` (``Node.grad_norm``) and the leaves'
``.grad`` are left.

A node keeps its structure after ``backward()`` (only the arrays saved for the backward pass are
freed), so a graph can be drawn before or after backward; drawing never changes a result.
Rendering needs the Graphviz ``dot`` program (``save``); notebooks display the returned Digraph
through graphviz's own rich display.
"""

from __future__ import annotations

import math
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import graphviz
import numpy as np

from . import provenance
from .autograd import Node, observe_backward, topological_order
from .checks import is_integer
from .diagnostics import observed_backward
from .files import atomic_write, check_folder
from .nn.module import Parameter
from .tensor import Tensor

LEVELS = ("op", "cell", "layer")
DEFAULT_MAX_NODES = 2000
"""The node-count guard: larger pictures take graphviz minutes and are unreadable anyway."""

SAVE_FORMATS = ("svg", "png", "pdf", "dot", "gv")

BUNDLE_FROM = 8
"""A node feeding (or fed by) this many steps of one recurrence gets one edge to the box around
the steps instead of one per step: dot's layout time explodes with such fan-outs (cell level,
2-layer bidirectional LSTM: 21 s at T=20, over a minute at T=40)."""

# Fill colours of the node kinds; with show_grads the fill shows the gradient and the shape
# alone tells the kinds apart.
_KIND_STYLES: dict[str, dict[str, str]] = {
    "parameter": {"shape": "cylinder", "fillcolor": "#f9d9a6"},
    "input": {"shape": "parallelogram", "fillcolor": "#cfe3f7"},
    "output": {"shape": "doubleoctagon", "fillcolor": "#c8ebc4"},
    "op": {"shape": "box", "fillcolor": "#f2f2f2"},
    "step": {"shape": "box", "fillcolor": "#fff4c2"},
    "layer": {"shape": "box3d", "fillcolor": "#fff4c2"},
    "elided": {"shape": "note", "fillcolor": "#ffffff"},
}
_KIND_DESCRIPTIONS = {
    "parameter": "parameter: a weight, drawn once and shared by every step",
    "input": "input: a leaf tensor that requires grad",
    "output": "output: a tensor passed to draw",
    "op": "op: one primitive operation",
    "step": "step: all ops of one time step of a cell",
    "layer": "layer: all steps of one layer and direction",
    "elided": "elided: the middle time steps (max_steps)",
}
# ColorBrewer YlOrRd: vanishing gradients look faded, exploding ones dark red.
_GRAD_COLOURS = ("#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026",
                 "#800026")
_DARK_FROM = 6  # colours from this index on need white text
_ZERO_GRAD_COLOUR = "#d0d0d0"
_DIRECTION_COLOURS = {None: "#f6f6f6", 0: "#eef5fc", 1: "#fcf1ee"}


class RenderError(RuntimeError):
    """The Graphviz ``dot`` program could not render a picture; its DOT source was saved instead."""


class GraphvizNotFoundError(RenderError):
    """Rendering needs the Graphviz ``dot`` program, which is not installed."""


_INSTALL_DOT = ("Install Graphviz with `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` "
                "(macOS) or from https://graphviz.org/download/.")
_FALLBACK_MARK = "// DOT source written by ts.viz.save"
"""Last line of the source ``save`` writes when it cannot render (a DOT comment, so the file still
starts like any DOT file): such a file may be overwritten."""


class _Digraph(graphviz.Digraph):
    """What ``draw`` returns: a ``graphviz.Digraph`` whose notebook display, without ``dot``, says
    how to install it instead of showing graphviz's generic error."""

    def _repr_mimebundle_(self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
                          **kwargs: Any) -> dict[str, bytes | str]:
        try:
            return super()._repr_mimebundle_(include, exclude, **kwargs)
        except graphviz.ExecutableNotFound:
            return {"text/plain": "Showing this picture needs the Graphviz 'dot' program, which is not on "
                                  f"PATH. {_INSTALL_DOT} Without it, ts.viz.save(picture, 'picture.dot') "
                                  "writes the DOT source."}


# ---------------------------------------------------------------------------------------------
# Gradient norms


@contextmanager
def record_grad_norms() -> Iterator[None]:
    """Store on every node that backward reaches the norm of its gradient (``Node.grad_norm``; a fused
    layer's node also keeps each of its steps' norms, ``nn.fused.Unrolled``).

    ``with ts.viz.record_grad_norms(): loss.backward()`` and then ``draw(loss, show_grads=True)``.
    Opt-in, because normal training should not pay for a norm per op. A later backward through
    the same nodes overwrites the norms; nodes backward does not reach keep None.
    """
    def record(node: Node, grad: np.ndarray) -> None:
        node.grad_norm = float(np.linalg.norm(grad))

    with observe_backward(record):
        yield


def _grad_norms(roots: dict[int, tuple[Node, Tensor | None]], nodes: list[Node],
                compute: bool) -> tuple[dict[int, float], str | None]:
    """(gradient norm by node id, why the ops have none or None). ``compute``: every norm from one
    extra backward of the single scalar root, if its graph is alive; otherwise (or failing that)
    the norms ``record_grad_norms()`` stored, and the leaves' ``.grad``."""
    released = any(node.released for node in nodes)
    (_, loss), *others = roots.values()
    if compute and not released and not others and loss is not None and loss.size == 1:
        computed: dict[int, float] = {}

        def record(node: Node, grad: np.ndarray) -> None:
            computed[id(node)] = float(np.linalg.norm(grad))

        observed_backward(loss, record, "draw")
        return computed, None
    norms = {id(node): node.grad_norm for node in nodes if node.grad_norm is not None}
    missing = None
    if not any(id(node) in norms for node in nodes if not node.is_leaf):
        cause = ("the graph was freed by backward(); draw before backward (or after "
                 "backward(retain_graph=True))" if released else
                 "draw computes them only for a single scalar root (the loss)")
        missing = f"{cause}, or wrap backward in ts.viz.record_grad_norms()"
    for node in nodes:
        tensor = node.tensor() if node.is_leaf and node.tensor is not None else None
        if tensor is not None and tensor.grad is not None and id(node) not in norms:
            norms[id(node)] = float(np.linalg.norm(tensor.grad.data))
    return norms, missing


# ---------------------------------------------------------------------------------------------
# Escaping: every user-controlled text goes through one of these two.


def _html(text: object) -> str:
    """Text for an HTML-like label: markup characters become entities, control characters '?'."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return "".join(c if c.isprintable() else "?" for c in out)


def _plain(text: object) -> str:
    """Text for a quoted attribute (tooltips): backslashes literal, graphviz quotes the rest."""
    return graphviz.escape("".join(c if c.isprintable() else "?" for c in str(text)))


def _label(*lines: str) -> str:
    """An HTML-like label from already escaped lines."""
    return "<" + "<BR/>".join(lines) + ">"


# ---------------------------------------------------------------------------------------------
# Collecting the graph


def _root_nodes(roots: tuple) -> dict[int, tuple[Node, Tensor | None]]:
    """The graph nodes of ``roots`` (tensors, nodes, and nested tuples / lists / dicts of them),
    by id; tensors that do not require grad have no graph and are skipped."""
    found: dict[int, tuple[Node, Tensor | None]] = {}
    stack: list[Any] = list(reversed(roots))
    while stack:
        item = stack.pop()
        if isinstance(item, Tensor):
            if item._node is not None:
                found.setdefault(id(item._node), (item._node, item))
        elif isinstance(item, Node):
            found.setdefault(id(item), (item, None))
        elif isinstance(item, Mapping):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, (tuple, list)):
            stack.extend(reversed(item))
        elif item is not None:
            raise TypeError(f"draw: expected Tensors or tuples / lists / dicts of them as roots, "
                            f"got {type(item).__name__}")
    if not found:
        raise ValueError("draw: nothing to draw: none of the roots requires grad (inputs without "
                         "requires_grad=True and results of no_grad code have no graph)")
    return found


def _reachable(root_nodes: list[Node]) -> list[Node]:
    """Every node reachable from the roots, parents before children (iterative walk)."""
    if len(root_nodes) == 1:
        return topological_order(root_nodes[0])[::-1]
    # A throwaway node joining the roots lets one walk visit shared subgraphs once.
    joined = Node(None, tuple(root_nodes), "roots", (), np.dtype(np.float32))
    return topological_order(joined)[:0:-1]


class _Unrolling:
    """A fused layer's sequence node (``Node.unrolled``, see ``nn.fused``) drawn as its time steps.

    Per step t, two stand-in nodes, as the per-step graph would have them: ``x[t]`` (the step's
    slice of the layer input) and one cell op reading it, the weights and the previous step's state
    (h0, c0 at the first step). The sequence node then collects the steps' states, as a ``stack``
    of per-step states does. Stand-ins exist only in the picture: backward never sees them, and
    their gradient norms come from what the sequence node's backward kept (``Unrolled``)."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes: list[Node] = []  # ``nodes`` with each sequence node's stand-ins just before it
        self.parents: dict[int, tuple] = {}  # sequence node id -> its steps' cell stand-ins, in time order
        # stand-in id -> (its sequence node, t, "state" or "input": the gradient that is its own)
        self.origins: dict[int, tuple[Node, int, str]] = {}
        for node in nodes:
            if node.unrolled is not None:
                self._add_steps(node)
            self.nodes.append(node)

    def _add_steps(self, sequence: Node) -> None:
        unrolled = sequence.unrolled
        layer_input, weights, previous = sequence.parents[0], sequence.parents[1:5], sequence.parents[5:]
        cells: list[Node | None] = [None] * unrolled.steps
        for t in unrolled.order:
            here = unrolled.step_provenance(t)
            x_t = None
            if layer_input is not None:
                x_t = self._stand_in("getitem", (layer_input,), here, layer_input.shape[1:], sequence, t,
                                     "input")
            cell = self._stand_in(unrolled.cell_op, (x_t, *weights, *previous), here, sequence.shape[1:],
                                  sequence, t, "state")
            cell.name = unrolled.state_name
            cells[t], previous = cell, (cell,)
        self.parents[id(sequence)] = tuple(cells)

    def _stand_in(self, op: str, parents: tuple, here: provenance.Provenance, shape: tuple, sequence: Node,
                  t: int, part: str) -> Node:
        node = Node(None, parents, op, shape, sequence.dtype)
        node.prov = here
        self.nodes.append(node)
        self.origins[id(node)] = (sequence, t, part)
        return node

    def norms(self, norms: dict[int, float]) -> None:
        """Add the stand-ins' gradient norms to ``norms``, for the sequence nodes that have one (from
        the per-step norms their backward kept then)."""
        for key, (sequence, t, part) in self.origins.items():
            kept = sequence.unrolled.state_norms if part == "state" else sequence.unrolled.input_norms
            if id(sequence) in norms and kept is not None:
                norms[key] = float(kept[t])


def _parameter_names(params: Iterable[tuple[str, Tensor]] | Mapping[str, Tensor] | None) -> dict[int, str]:
    if params is None:
        return {}
    pairs = params.items() if isinstance(params, Mapping) else params
    names = {}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], Tensor)):
            raise TypeError("draw: params must be (name, tensor) pairs such as model.named_parameters() "
                            f"or a dict of them, got an item of type {type(pair).__name__}")
        names[id(pair[1])] = str(pair[0])
    return names


_OUTSIDE_MODULES = (None, None, None, None)  # the group of per-step ops that no layer made


def _group_of(node: Node) -> tuple | None:
    """The (module, call, layer, direction) cluster a node belongs to; None outside recurrences.
    ``call`` tells apart two runs of one layer (or two layers with one module path)."""
    prov = node.prov
    if prov is None or (prov.layer is None and prov.direction is None and prov.step is None):
        return None
    return prov.module, prov.call, prov.layer, prov.direction


def _group_title(group: tuple, runs: dict[tuple, str | None]) -> str:
    """'module · layer l · direction'; ``runs`` names the module's run ('LSTM #2') when it ran
    more than once in the picture."""
    module, call, layer, direction = group
    parts = [runs.get((module, call)) or "steps"]
    if layer is not None:
        parts.append(f"layer {layer}")
    if direction is not None:
        parts.append("reverse" if direction else "forward")
    return " · ".join(parts)


def _step_of(node: Node) -> int | None:
    return None if node.prov is None else node.prov.step


# ---------------------------------------------------------------------------------------------
# Units: what one DOT node stands for (one op, one leaf, one time step, one layer, elided steps)


class _Unit:
    __slots__ = ("id", "kind", "members", "group", "step", "time", "exits")

    def __init__(self, unit_id: str, kind: str, group: tuple | None, step: int | None,
                 time: float | None) -> None:
        self.id, self.kind, self.group, self.step, self.time = unit_id, kind, group, step, time
        self.members: list[Node] = []
        self.exits: dict[int, Node] = {}  # members whose value leaves the unit (their gradient is its)

    def grad_norm(self, norms: dict[int, float]) -> float | None:
        """The norm of the gradient of what leaves the unit (all its exits together)."""
        if len(self.members) == 1:
            return norms.get(id(self.members[0]))
        found = [norms[key] for key in self.exits if key in norms]
        return math.sqrt(sum(n * n for n in found)) if found else None


class _Picture:
    """Assigns nodes to units and units to clusters, then writes the Digraph."""

    def __init__(self, roots: dict[int, tuple[Node, Tensor | None]], level: str, max_steps: int | None,
                 names: dict[int, str]) -> None:
        self.level = level
        self.roots = roots
        self.unrolling = _Unrolling(_reachable([node for node, _ in roots.values()]))
        self.nodes = self.unrolling.nodes
        self.names = self._module_paths() | names
        self.param_sources = self._fold_parameter_ops() if level != "op" else {}
        self.adopted = self._adopted_inputs() if level != "op" else {}
        self.kept_steps = self._kept_steps(max_steps) if level != "layer" else {}
        self.norms: dict[int, float] = {}  # gradient norms by node id, filled by draw
        self.units: dict[Any, _Unit] = {}
        self.unit_of: dict[int, _Unit] = {}
        for node in self.nodes:
            if id(node) not in self.param_sources:
                self._assign(node)
        self.edges = self._edges()
        self.runs = provenance.run_names(unit.group[:2] for unit in self.units.values() if unit.group)

    def _parents(self, node: Node) -> tuple:
        """A node's parents in the picture: a fused sequence node's are its steps (``_Unrolling``)."""
        return self.unrolling.parents.get(id(node), node.parents)

    # -- which unit a node belongs to -----------------------------------------------------------
    def _leaf_kind(self, node: Node) -> str:
        tensor = node.tensor() if node.tensor is not None else None
        return "parameter" if isinstance(tensor, Parameter) or id(tensor) in self.names else "input"

    def _module_paths(self) -> dict[int, str]:
        """Parameter tensor id -> its dotted name under the module of the first op using it."""
        paths: dict[int, str] = {}
        for node in self.nodes:
            module = node.prov.module if node.prov is not None else None
            for parent in self._parents(node) if module else ():
                tensor = parent.tensor() if parent is not None and parent.tensor is not None else None
                if isinstance(tensor, Parameter) and tensor.name and id(tensor) not in paths:
                    paths[id(tensor)] = f"{module}.{tensor.name}"
        return paths

    def _fold_parameter_ops(self) -> dict[int, list[Node]]:
        """Ops outside any time step computed from parameters alone (``W.T``, ``b_ih + b_hh``),
        mapped to those parameters: cell and layer pictures draw them as the parameters. An op
        with a constant operand (the projection of a constant input) is kept: it carries x_t."""
        sources: dict[int, list[Node]] = {}
        for node in self.nodes:
            if node.is_leaf or id(node) in self.roots or _step_of(node) is not None:
                continue
            found: dict[int, Node] = {}
            for parent in self._parents(node):
                if parent is None:
                    break
                if id(parent) in sources:
                    found.update((id(p), p) for p in sources[id(parent)])
                elif parent.is_leaf and self._leaf_kind(parent) == "parameter":
                    found[id(parent)] = parent
                else:
                    break
            else:
                if found:
                    sources[id(node)] = list(found.values())
        return sources

    def _adopted_inputs(self) -> dict[int, tuple[tuple, int]]:
        """Ops made at step t outside any module whose every use is in one recurrence's step t
        (``x[t]`` in a hand-written loop), mapped to that (group, step): cell and layer pictures
        draw them inside it, so the tensor they slice enters the step as x_t."""
        users: dict[int, list[Node]] = {}
        for node in self.nodes:
            for parent in self._parents(node):
                if parent is not None:
                    users.setdefault(id(parent), []).append(node)
        adopted: dict[int, tuple[tuple, int]] = {}
        for node in reversed(self.nodes):  # every user before the node it uses
            if node.is_leaf or id(node) in self.roots or _group_of(node) != _OUTSIDE_MODULES:
                continue
            step = _step_of(node)
            places = {adopted.get(id(user), (_group_of(user), _step_of(user))) for user in users[id(node)]}
            if len(places) == 1:
                group, user_step = places.pop()
                if group not in (None, _OUTSIDE_MODULES) and user_step == step:
                    adopted[id(node)] = (group, step)
        return adopted

    def _kept_steps(self, max_steps: int | None) -> dict[tuple, tuple[set, list]]:
        """Per group whose steps exceed ``max_steps``: (steps kept, steps elided)."""
        if max_steps is None:
            return {}
        steps: dict[tuple, set] = {}
        for node in self.nodes:
            step = _step_of(node)
            if step is not None and not node.is_leaf:
                steps.setdefault(_group_of(node), set()).add(step)
        kept = {}
        for group, present in steps.items():
            if len(present) > max_steps:
                ordered = sorted(present)
                head = (max_steps + 1) // 2
                keep = set(ordered[:head] + ordered[len(ordered) - (max_steps - head):])
                kept[group] = (keep, [s for s in ordered if s not in keep])
        return kept

    def _assign(self, node: Node) -> None:
        group, step = self.adopted.get(id(node), (_group_of(node), _step_of(node)))
        if node.is_leaf:
            key, kind, group, step = id(node), self._leaf_kind(node), None, None
        else:
            kind = "output" if id(node) in self.roots else "op"
            key = id(node)
            elision = self.kept_steps.get(group)
            if step is not None and elision is not None and step not in elision[0]:
                key, kind = ("elided", group), "elided"
            elif self.level == "cell" and step is not None:
                key, kind = ("step", group, step), "step"
            elif self.level == "layer" and group is not None:
                key, kind, step = ("layer", group), "layer", None
        unit = self.units.get(key)
        if unit is None:
            if kind == "elided":
                elided = self.kept_steps[group][1]
                step, time = None, (elided[0] + elided[-1]) / 2
            else:
                time = step
            prefix = {"step": "s", "layer": "l", "elided": "e"}.get(kind, "n")
            unit_id = f"{prefix}{node.seq}"
            unit = self.units[key] = _Unit(unit_id, kind, group, step, time)
        unit.members.append(node)
        if id(node) in self.roots:
            unit.exits[id(node)] = node
        self.unit_of[id(node)] = unit

    # -- edges ----------------------------------------------------------------------------------
    def _edges(self) -> dict[tuple, list]:
        """[source unit, target unit, source node, count, user] per drawn edge: one per distinct
        tensor entering a unit (h and c are two edges), but one per pair of units where steps are
        elided; ``user`` is the one op of the target using the tensor, or None if several do."""
        edges: dict[tuple, list] = {}
        for node in self.nodes:
            target = self.unit_of.get(id(node))
            if target is None:  # folded into its parameters
                continue
            for parent in self._parents(node):
                if parent is None:
                    continue
                for via in self.param_sources.get(id(parent), (parent,)):
                    source = self.unit_of[id(via)]
                    if source is target:
                        continue
                    elided = source.kind == "elided" or target.kind == "elided"
                    key = (source.id, target.id) if elided else (source.id, target.id, id(via))
                    edge = edges.get(key)
                    if edge is None:
                        edges[key] = [source, target, via, 1, node]
                    elif edge[2] is not via:
                        edge[3] += 1
                    elif edge[4] is not node:
                        edge[4] = None
                    source.exits[id(via)] = via
        return edges

    # -- output ---------------------------------------------------------------------------------
    def render(self, show_shapes: bool, scale: _GradScale | None, show_values: bool, rankdir: str,
               legend: bool) -> graphviz.Digraph:
        dot = _Digraph(graph_attr={"rankdir": rankdir, "fontname": "Helvetica", "newrank": "true",
                                   "compound": "true"},
                       node_attr={"fontname": "Helvetica", "fontsize": "10", "style": "filled"},
                       edge_attr={"fontname": "Helvetica", "fontsize": "8", "color": "#555555"})
        loose: list[_Unit] = []
        groups: dict[tuple, tuple[list[_Unit], dict[float, list[_Unit]]]] = {}
        for unit in self.units.values():
            if unit.group is None or unit.kind == "layer":  # a layer box already names its group
                loose.append(unit)
            else:
                outside, timed = groups.setdefault(unit.group, ([], {}))
                if unit.time is None:
                    outside.append(unit)
                else:
                    timed.setdefault(unit.time, []).append(unit)
        group_clusters = {group: f"cluster_g{number}" for number, group in enumerate(groups)}
        within = [(source.id, target.id) for source, target, *_ in self.edges.values()
                  if source.time is not None and (source.group, source.time) == (target.group, target.time)]
        fed, feeding = {target for _, target in within}, {source for source, _ in within}
        for unit in loose:
            self._emit_unit(dot, unit, show_shapes, scale, show_values)
        for group, (outside, timed) in groups.items():
            with dot.subgraph(name=group_clusters[group]) as cluster:
                title = _group_title(group, self.runs)
                cluster.attr(label=_label(f"<B>{_html(title)}</B>"), style="rounded,filled",
                             color="#9aa7b5", fillcolor=_DIRECTION_COLOURS.get(group[3], "#f6f6f6"))
                for unit in outside:
                    self._emit_unit(cluster, unit, show_shapes, scale, show_values)
                if timed:
                    self._emit_steps(cluster, cluster.name, [timed[t] for t in sorted(timed)],
                                     (fed, feeding), show_shapes, scale, show_values)
        self._emit_edges(dot, group_clusters, show_shapes, scale)
        if legend:
            self._emit_legend(dot, scale)
        return dot

    def _emit_steps(self, cluster: graphviz.Digraph, name: str, by_time: list[list[_Unit]],
                    inner: tuple[set[str], set[str]], show_shapes: bool, scale: _GradScale | None,
                    show_values: bool) -> None:
        """One group's time steps, in a box ``<name>_steps`` that edges shared by every step point
        at (``name``: the group's cluster); at op level each step is a cluster of its ops.
        Invisible heavy edges from each step's last units to the next step's first ones keep time
        running left to right, whichever way the recurrence runs (``inner``: the units with an
        edge from, and those with an edge to, a unit of their step)."""
        with cluster.subgraph(name=f"{name}_steps") as steps:
            steps.attr(label="", style="dashed,rounded", color="#c5ccd3")
            for units in by_time:
                if self.level == "op" and units[0].step is not None:
                    with steps.subgraph(name=f"{name}_t{units[0].step}") as step_cluster:
                        step_cluster.attr(label=f"t={units[0].step}", style="rounded,filled", color="#b8c2cc",
                                          fillcolor="#ffffff")
                        for unit in units:
                            self._emit_unit(step_cluster, unit, show_shapes, scale, show_values)
                else:
                    for unit in units:
                        self._emit_unit(steps, unit, show_shapes, scale, show_values)
            fed, feeding = inner
            for before, after in zip(by_time, by_time[1:], strict=False):
                for last in (unit for unit in before if unit.id not in feeding):
                    for first in (unit for unit in after if unit.id not in fed):
                        steps.edge(last.id, first.id, style="invis", weight="10")

    def _title(self, node: Node) -> tuple[str, str | None]:
        """(bold title, op line or None) of one node."""
        name = self.names.get(id(node.tensor())) if node.is_leaf and node.tensor is not None else None
        name = name or node.name
        if node.is_leaf:
            return _html(name or "leaf"), None
        op = node.op + (f" [gate {node.prov.gate}]" if node.prov is not None and node.prov.gate else "")
        return (_html(name), _html(op)) if name else (_html(op), None)

    def _unit_lines(self, unit: _Unit, show_shapes: bool) -> list[str]:
        first = unit.members[0]
        if unit.kind == "elided":
            _, elided = self.kept_steps[unit.group]
            return [f"<B>… {len(elided)} more steps …</B>", f"t={elided[0]}..{elided[-1]}"]
        if unit.kind == "step":
            gates = list(dict.fromkeys(n.prov.gate for n in unit.members if n.prov.gate))
            lines = [f"<B>t={unit.step}</B>", f"{len(unit.members)} ops"]
            return lines + ([_html("gates " + " ".join(gates))] if gates else [])
        if unit.kind == "layer":
            steps = [n.prov.step for n in unit.members if n.prov.step is not None]
            lines = [f"<B>{_html(_group_title(unit.group, self.runs))}</B>", f"{len(unit.members)} ops"]
            return lines + ([f"t={min(steps)}..{max(steps)}"] if steps else [])
        title, op = self._title(first)
        lines = [f"<B>{title}</B>"] + ([op] if op else [])
        if show_shapes:
            lines.append(_html(_shape_text(first)))
        return lines

    def _emit_unit(self, dot: graphviz.Digraph, unit: _Unit, show_shapes: bool, scale: _GradScale | None,
                   show_values: bool) -> None:
        attrs = dict(_KIND_STYLES[unit.kind])
        attrs["style"] = "filled,dashed" if unit.kind == "elided" else "filled,rounded"
        norm = unit.grad_norm(self.norms) if scale is not None else None
        lines = self._unit_lines(unit, show_shapes)
        if scale is not None:
            fill, dark = scale.colour(norm)
            attrs["fillcolor"] = fill
            if dark:
                attrs["fontcolor"] = "white"
            lines.append("‖g‖ " + ("not recorded" if norm is None else f"{norm:.3g}"))
        first = unit.members[0]
        if show_values and len(unit.members) == 1:
            label = _values_table(lines, *self._values(first))
        else:
            label = _label(*lines)
        if len(unit.members) == 1 and first.prov is not None and str(first.prov):
            attrs["tooltip"] = _plain(first.prov)
        dot.node(unit.id, label, **attrs)

    def _values(self, node: Node) -> tuple[str, str]:
        """(data, grad) texts of a tiny node: values where the tensor is still reachable."""
        tensor = self.roots.get(id(node), (None, None))[1]
        if tensor is None and node.tensor is not None:
            tensor = node.tensor()
        data = _array_text(tensor.data) if tensor is not None else "—"
        if tensor is not None and tensor.grad is not None:
            grad = _array_text(tensor.grad.data)
        elif id(node) in self.norms:
            grad = f"‖g‖ {self.norms[id(node)]:.4g}"
        else:
            grad = "—"
        return data, grad

    def _emit_edges(self, dot: graphviz.Digraph, group_clusters: dict[tuple, str], show_shapes: bool,
                    scale: _GradScale | None) -> None:
        """Every edge, except that a unit feeding (or collecting from) ``BUNDLE_FROM`` or more steps
        of one group gets one edge to that group's box of steps."""
        times: dict[tuple, set] = {}
        for source, target, *_ in self.edges.values():
            key = _fan_key(source, target)
            if key is not None:
                times.setdefault(key, set()).add(target.time if key[0] == "into" else source.time)
        bundles: dict[tuple, list[list]] = {}
        for edge in self.edges.values():
            key = _fan_key(edge[0], edge[1])
            if key is not None and len(times[key]) >= BUNDLE_FROM:
                bundles.setdefault(key, []).append(edge)
            else:
                self._emit_edge(dot, *edge, show_shapes, scale)
        for key, edges in bundles.items():
            roles = dict.fromkeys(_role(via, user, source, target, "t")
                                  for source, target, via, _, user in edges)
            label = _label(*[role for role in roles if role], "every step")
            if key[0] == "into":
                head = min((edge[1] for edge in edges), key=lambda unit: unit.time)
                dot.edge(edges[0][0].id, head.id, label=label, lhead=f"{group_clusters[head.group]}_steps")
            else:
                tail = max((edge[0] for edge in edges), key=lambda unit: unit.time)
                dot.edge(tail.id, edges[0][1].id, label=label, ltail=f"{group_clusters[tail.group]}_steps")

    def _emit_edge(self, dot: graphviz.Digraph, source: _Unit, target: _Unit, via: Node, count: int,
                   user: Node | None, show_shapes: bool, scale: _GradScale | None) -> None:
        attrs: dict[str, str] = {}
        # a step reading one slice of the tensor: the shape and gradient norm of that slice
        shown = user if target.kind == "step" and _slices(user, via) else via
        norm = self.norms.get(id(shown)) if scale is not None else None
        role = _role(via, user, source, target) if self.level != "op" else None
        if count > 1:  # tensors between elided steps and one unit
            attrs["label"] = f"{count} tensors"
        elif role or (self.level != "op" and not via.is_leaf):
            texts = [role] if role else [_html(via.name)] if via.name else []
            if show_shapes:
                texts.append(_html(_shape_text(shown)))
            if norm is not None:
                texts.append(f"‖g‖ {norm:.2g}")
            if texts:
                attrs["label"] = _label(*texts)
        if norm is not None:
            attrs["tooltip"] = f"grad norm {norm:.4g}"
        if (source.group is not None and source.group == target.group and source.time is not None
                and target.time is not None and source.time > target.time):
            attrs["constraint"] = "false"  # a reverse recurrence points back in time; anchors order steps
        dot.edge(source.id, target.id, **attrs)

    def _emit_legend(self, dot: graphviz.Digraph, scale: _GradScale | None) -> None:
        kinds = [kind for kind in _KIND_STYLES if any(u.kind == kind for u in self.units.values())]
        with dot.subgraph(name="cluster_legend") as legend:
            legend.attr(label="legend", style="rounded", color="#9aa7b5")
            for kind in kinds:
                attrs = dict(_KIND_STYLES[kind], style="filled,rounded")
                if scale is not None:
                    attrs["fillcolor"] = "#ffffff"
                legend.node(f"legend_{kind}", _label(_html(_KIND_DESCRIPTIONS[kind])), **attrs)
            if scale is not None:
                legend.node("legend_grads", scale.legend_label(), shape="plain", style="")
                if scale.missing:  # its own node: a long line in the table would stretch the scale
                    lines = [_html(part) for part in f"ops: no norms: {scale.missing}".split("; ")]
                    legend.node("legend_no_norms", _label(*lines), shape="plain", style="")


def _role(via: Node, user: Node | None, source: _Unit, target: _Unit, step: str | None = None) -> str | None:
    """What a tensor is to the cell steps it joins: a step's output by the name its layer gave
    it (h_t, c_t), or x_t: the input its recurrence prepared before the loop, a tensor the step
    slices (``x[t]`` in the user's loop), or one made at the same step outside the cell; ``user``:
    the op of the target using it; ``step`` replaces the step number (``"t"`` for an edge
    standing for every step)."""
    if source.kind == "step" and via.name:
        return f"{_html(via.name)}<SUB>{source.step if step is None else step}</SUB>"
    prepared = source.group == target.group and source.time is None
    sliced = source.time is None and _slices(user, via)
    same_step = source.group != target.group and source.step == target.step
    if target.kind == "step" and (prepared or sliced or same_step):
        return f"x<SUB>{target.step if step is None else step}</SUB>"
    return None


def _slices(user: Node | None, via: Node) -> bool:
    """Whether ``user`` reads part of ``via`` (a step's x_t out of all steps): an indexing op, or a
    recurrent layer's step adding its rows of the input projection (``addmm(rows=)``: an addmm whose
    input has more rows than its result, which broadcasting never gives)."""
    if user is None or user.parents[0] is not via:
        return False
    rows_of_via = user.op == "addmm" and len(via.shape) == 2 and via.shape[0] > user.shape[0]
    return user.op == "getitem" or rows_of_via


def _fan_key(source: _Unit, target: _Unit) -> tuple | None:
    """Edges with the same key connect one unit with many steps of one group: ("into", source id,
    group) for a unit feeding steps from outside them, ("from", group, target id) for one collecting."""
    if target.time is not None and (source.time is None or source.group != target.group):
        return "into", source.id, target.group
    if source.time is not None and (target.time is None or target.group != source.group):
        return "from", source.group, target.id
    return None


def _shape_text(node: Node) -> str:
    shape = "(" + ", ".join(str(n) for n in node.shape) + ("," if len(node.shape) == 1 else "") + ")"
    return shape if node.dtype == np.float32 else f"{shape} {node.dtype}"


def _array_text(array: np.ndarray) -> str:
    array = np.asarray(array)
    if array.ndim == 0:
        return f"{array.item():.4g}"
    return np.array2string(array, separator=", ", threshold=8, formatter={"float_kind": "{:.4g}".format})


def _values_table(lines: list[str], data: str, grad: str) -> str:
    """A micrograd-style record: title | data | grad."""
    cells = ["<BR/>".join(lines), f"data {_html(data)}", f"grad {_html(grad)}"]
    row = "".join(f"<TD>{cell}</TD>" for cell in cells)
    return f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4"><TR>{row}</TR></TABLE>>'


class _GradScale:
    """log10 gradient norm -> one of ``_GRAD_COLOURS``, over the range of the drawn norms."""

    def __init__(self, units: Iterable[_Unit], norms: dict[int, float], missing: str | None) -> None:
        logs = [math.log10(n) for n in (u.grad_norm(norms) for u in units) if n]
        self.low = math.floor(min(logs)) if logs else 0
        self.high = max(math.ceil(max(logs)) if logs else 1, self.low + 1)
        self.missing = missing  # why the ops have no norms (only leaves, from .grad), or None

    def colour(self, norm: float | None) -> tuple[str, bool]:
        """(fill colour, needs white text)."""
        if norm is None:
            return "#ffffff", False
        if norm == 0:
            return _ZERO_GRAD_COLOUR, False
        fraction = (math.log10(norm) - self.low) / (self.high - self.low)
        index = min(max(int(fraction * len(_GRAD_COLOURS)), 0), len(_GRAD_COLOURS) - 1)
        return _GRAD_COLOURS[index], index >= _DARK_FROM

    def legend_label(self) -> str:
        cells = "".join(f'<TD BGCOLOR="{colour}" WIDTH="14"> </TD>' for colour in _GRAD_COLOURS)
        return (f'<<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="2">'
                f'<TR><TD COLSPAN="11">fill: gradient norm ‖g‖ (log scale)</TD></TR>'
                f'<TR><TD>1e{self.low}</TD>{cells}<TD>1e{self.high}</TD></TR>'
                f'<TR><TD BGCOLOR="{_ZERO_GRAD_COLOUR}">0</TD><TD COLSPAN="10" ALIGN="LEFT">'
                f'zero gradient</TD></TR>'
                f'<TR><TD BORDER="1"> </TD><TD COLSPAN="10" ALIGN="LEFT">white: no gradient '
                f'recorded</TD></TR></TABLE>>')


# ---------------------------------------------------------------------------------------------
# Public API


class PictureTooLargeError(ValueError):
    """``draw``'s node-count guard: the picture would have more than ``max_nodes`` nodes."""

    def __init__(self, level: str, nodes: int, limit: int, max_steps: int | None,
                 stepped: bool = True) -> None:
        self.level, self.nodes, self.limit, self.max_steps = level, nodes, limit, max_steps
        self.stepped = stepped  # whether any op has a time step: else no level or max_steps shrinks it
        self.arguments = (level, nodes, limit, max_steps, stepped)
        super().__init__(f"draw: the {level}-level picture has {nodes} nodes (limit max_nodes={limit}); "
                         f"graphviz would take minutes and the result would be unreadable. {self.advice()}.")

    def __reduce__(self) -> tuple:  # (picklable and copyable, as an exception crossing processes must be)
        return type(self), self.arguments

    def advice(self, flags: bool = False) -> str:
        """Only what would still shrink this picture, spelled as ``draw``'s arguments or, with ``flags``,
        as the command line's options (which draw at most ``max_nodes`` nodes)."""
        def spell(option: str, value: object) -> str:
            return f"--{option.replace('_', '-')} {value}" if flags else f"{option}={value!r}"

        if not self.stepped:
            hints = ["give the graph time steps to box and elide (wrap each step of your loop in "
                     "`with ts.scope(step=t):`, or use an RNN / LSTM / GRU layer)"]
        else:
            hints = {"op": [f"use {spell('level', 'cell')} or {spell('level', 'layer')}"],
                     "cell": [f"use {spell('level', 'layer')}"], "layer": []}[self.level]
        if self.stepped and self.level != "layer":  # a layer box holds all its steps: nothing to elide
            if self.max_steps is None:
                hints.append(f"elide the middle of long sequences with {spell('max_steps', 10)}")
            elif self.max_steps > 2:
                hints.append(f"keep fewer steps (now {spell('max_steps', self.max_steps)}; "
                             f"try {spell('max_steps', self.max_steps // 2)})")
        if not flags:
            hints.append("pass max_nodes=None to draw it anyway")
        if not hints:
            return "Draw it from Python with ts.viz.draw(..., max_nodes=None)"
        *others, last = hints
        advice = f"{', '.join(others)}, or {last}" if others else last
        return advice[0].upper() + advice[1:]


def draw(*roots: Any, level: str = "op", show_shapes: bool = True, show_grads: bool | None = None,
         show_values: bool | None = None, max_steps: int | None = None, rankdir: str = "LR",
         params: Iterable[tuple[str, Tensor]] | Mapping[str, Tensor] | None = None,
         max_nodes: int | None = DEFAULT_MAX_NODES, legend: bool = True) -> graphviz.Digraph:
    """The unrolled graph behind ``roots`` as a ``graphviz.Digraph`` (displays inline in notebooks).

    roots: tensors, or what layers return (``(out, (h_n, c_n))``, lists, dicts).
    level: ``"op"`` (every op, a cluster per time step), ``"cell"`` (a box per time step) or
        ``"layer"`` (a box per layer and direction); see the module docstring.
    show_grads: colour nodes by gradient norm (log scale). True: computed by one extra,
        side-effect-free backward when there is one scalar root whose graph is alive; otherwise
        the norms ``record_grad_norms()`` stored, and the leaves' ``.grad`` (the legend says how
        to get the rest); raises if there is nothing to show at all. None: when norms were recorded.
    show_values: micrograd-style ``data | grad`` records; None: for tiny op-level graphs. Data shows
        where the tensor is still reachable (leaves, roots, tensors with ``retain_grad()``), grad
        from ``.grad`` or, failing that, the recorded norm.
    max_steps: keep the first and last steps of each recurrence (at least 2), one box for the rest.
    params: ``model.named_parameters()`` (or a dict): names for parameters instead of the default,
        the module path of the ops using them (``Model.lstm.weight_hh_l0``).
    max_nodes: refuse pictures with more nodes (None: no limit).
    """
    if level not in LEVELS:
        raise ValueError(f"draw: level must be one of {LEVELS}, got {level!r}")
    if max_steps is not None and (not is_integer(max_steps) or max_steps < 2):
        raise ValueError(f"draw: max_steps must be an int >= 2 (the first and last steps are kept), "
                         f"got {max_steps!r}")
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise ValueError(f"draw: rankdir must be 'LR', 'RL', 'TB' or 'BT', got {rankdir!r}")
    picture = _Picture(_root_nodes(roots), level, max_steps, _parameter_names(params))
    stepped = any(_step_of(node) is not None for node in picture.nodes)
    if level != "op" and not stepped:
        warnings.warn(f"draw(level={level!r}): no op in the graph has a time step, so there are no steps "
                      "to box and every op is drawn. Wrap each step of a hand-written loop in "
                      "`with ts.scope(step=t):`, or use an RNN / LSTM / GRU layer.", stacklevel=2)
    if max_nodes is not None and len(picture.units) > max_nodes:
        raise PictureTooLargeError(level, len(picture.units), max_nodes, max_steps, stepped)
    if show_grads is None:
        show_grads = any(node.grad_norm is not None for node in picture.nodes if not node.is_leaf)
    picture.norms, missing = _grad_norms(picture.roots, picture.nodes, bool(show_grads))
    picture.unrolling.norms(picture.norms)
    if show_grads and not any(unit.grad_norm(picture.norms) is not None for unit in picture.units.values()):
        raise ValueError(f"draw(show_grads=True): no gradients to show: {missing}.")
    if show_values is None:
        show_values = level == "op" and len(picture.nodes) <= 30 and all(
            math.prod(node.shape) <= 4 for node in picture.nodes)
    scale = _GradScale(picture.units.values(), picture.norms, missing) if show_grads else None
    return picture.render(show_shapes, scale, bool(show_values), rankdir, legend)


def save(graph_or_roots: Any, path: str | Path, **draw_options: Any) -> Path:
    """Write a picture to ``path``; the suffix picks the format (.svg, .png, .pdf, or .dot/.gv source).

    ``graph_or_roots`` is a Digraph from ``draw`` or roots to draw (with ``draw_options``).
    If ``dot`` cannot render (it is not installed: ``GraphvizNotFoundError``, or it fails), the DOT
    source is first written next to ``path`` (``<stem>.dot``; if a file of that name exists that
    save did not write as such a fallback, ``<stem>.1.dot``, ``<stem>.2.dot``, ...), then one
    ``RenderError`` says where it is and what went wrong.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"save: cannot infer the format from {str(path)!r}; use a suffix from "
                         f"{', '.join('.' + f for f in SAVE_FORMATS)}")
    check_folder(path, "save")  # before drawing and rendering, which can take a while
    if isinstance(graph_or_roots, graphviz.Digraph):
        if draw_options:
            raise TypeError(f"save: draw options {sorted(draw_options)} only apply when passing roots, "
                            "not an already drawn Digraph")
        graph = graph_or_roots
    else:
        graph = draw(graph_or_roots, **draw_options)
    if fmt in ("dot", "gv"):
        atomic_write(path, graph.source.encode("utf-8"))
        return path
    try:
        if shutil.which("dot") is None:
            raise graphviz.ExecutableNotFound(("dot",))
        rendered = graph.pipe(format=fmt)
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError, BrokenPipeError) as err:
        source_path = _fallback_path(path, graph.source)
        fallback = f"{graph.source}{_FALLBACK_MARK}: {_plain(path.name)} could not be rendered\n"
        atomic_write(source_path, fallback.encode("utf-8"))
        saved = (f"The DOT source was written to {str(source_path)!r} instead (render it later with "
                 f"`dot -T{fmt} {source_path} -o {path}`).")
        if isinstance(err, graphviz.ExecutableNotFound):
            raise GraphvizNotFoundError(
                f"save({str(path)!r}): rendering .{fmt} needs the Graphviz 'dot' program, which is not "
                f"on PATH. {saved} {_INSTALL_DOT}") from None
        if isinstance(err, BrokenPipeError):
            reason = "it exited before reading the whole source"
        else:  # pipe() passes bytes
            reason = f"exit status {err.returncode}: " + (
                (err.stderr or b"").decode(errors="replace").strip() or "no message")
        raise RenderError(f"save({str(path)!r}): the Graphviz 'dot' program failed to render .{fmt} "
                          f"({reason}). {saved}") from None
    atomic_write(path, rendered)
    return path


def _fallback_path(path: Path, source: str) -> Path:
    """Where ``save`` writes the DOT source of a picture it cannot render: ``<stem>.dot``, or the
    first of ``<stem>.1.dot``, ``<stem>.2.dot``, ... that is free, an earlier fallback, or holds this
    very source; the user's own files are never overwritten."""
    candidate, number = path.with_suffix(".dot"), 0
    while candidate.exists() and not _overwritable(candidate, source):
        number += 1
        candidate = path.with_suffix(f".{number}.dot")
    return candidate


def _overwritable(candidate: Path, source: str) -> bool:
    """Whether a fallback may replace this existing file: an earlier fallback, or this very source."""
    if not candidate.is_file():
        return False
    text = candidate.read_text(encoding="utf-8", errors="replace")
    return text == source or text.rstrip("\n").rpartition("\n")[2].startswith(_FALLBACK_MARK)
