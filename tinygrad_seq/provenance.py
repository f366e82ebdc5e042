"""Where each op came from: module path, layer, direction, time step, gate, the user's label.

Modules and ``ts.scope(...)`` set a current ``Provenance``; every op's node keeps a reference
to whichever one is current when it is made.  That is one global read per op, so it costs
next to nothing, and it is what graph pictures, gradcheck reports and anomaly errors use to
say *where* something happened ("lstm.l1.reverse t=7 gate=f") instead of guessing from shapes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

_FIELDS = ("module", "layer", "direction", "step", "gate", "label", "call")
_new_record = object.__new__  # a record made field by field (``Provenance.at``)


class _Fixed:
    """The fields of a record that stay the same over a layer's run: shared by its step and gate records,
    so never written after ``child()`` fills the fresh one it makes."""

    __slots__ = ("module", "layer", "direction", "label", "call")

    def __init__(self, module: str | None, layer: int | None, direction: int | None, label: str | None,
                 call: int | None) -> None:
        self.module, self.layer, self.direction, self.label, self.call = module, layer, direction, label, call


def _fixed_field(name: str) -> property:
    return property(lambda record: getattr(record._fixed, name))


class Provenance:
    """An immutable record; a nested scope makes a new one that inherits unset fields.

    A record holds its step and gate, and the other fields in a ``_Fixed`` part that records made by
    ``at(step=..., gate=...)`` share: a recurrent layer makes one per time step and gate (five per
    LSTM step), at 56 bytes each rather than the 88 of seven fields of their own."""

    __slots__ = ("_fixed", "step", "gate")

    def __init__(self, module: str | None = None, layer: int | None = None,
                 direction: int | None = None, step: int | None = None,
                 gate: str | None = None, label: str | None = None, call: int | None = None) -> None:
        self._fixed = _Fixed(module, layer, direction, label, call)
        self.step, self.gate = step, gate

    module = _fixed_field("module")
    layer = _fixed_field("layer")
    direction = _fixed_field("direction")
    label = _fixed_field("label")
    call = _fixed_field("call")

    def child(self, **fields: object) -> Provenance:
        """This record with ``fields`` overridden; labels and module paths nest with '/' and '.'."""
        fixed = self._fixed
        new = Provenance(fixed.module, fixed.layer, fixed.direction, self.step, self.gate, fixed.label,
                         fixed.call)
        for name, value in fields.items():  # a copy, then only the given fields: every module call makes one
            if name not in _FIELDS:
                raise TypeError(f"scope() got an unknown field {name!r}; expected one of {_FIELDS}")
            if value is None:
                continue
            owner = new if name in ("step", "gate") else new._fixed
            inherited = getattr(owner, name)
            if name == "label" and inherited:
                value = f"{inherited}/{value}"
            elif name == "module" and inherited:
                value = f"{inherited}.{value}"
            setattr(owner, name, value)
        return new

    def at(self, step: int | None = None, gate: str | None = None, layer: int | None = None,
           direction: int | None = None, call: int | None = None) -> Provenance:
        """``child(step=..., ...)`` without the generic field handling, for the recurrent layers'
        calls and loops (several records per time step). None keeps the inherited value."""
        if layer is None and direction is None and call is None:  # a step's or gate's: share the rest
            record = _new_record(Provenance)
            record._fixed = self._fixed
            record.step = self.step if step is None else step
            record.gate = self.gate if gate is None else gate
            return record
        fixed = self._fixed
        return Provenance(fixed.module, fixed.layer if layer is None else layer,
                          fixed.direction if direction is None else direction,
                          self.step if step is None else step, self.gate if gate is None else gate,
                          fixed.label, fixed.call if call is None else call)

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _FIELDS if getattr(self, name) is not None}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Provenance) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, name) for name in _FIELDS))

    def __str__(self) -> str:
        parts = []
        if self.module:
            parts.append(self.module)
        if self.layer is not None:
            parts.append(f"layer={self.layer}")
        if self.direction is not None:
            parts.append("reverse" if self.direction else "forward")
        if self.step is not None:
            parts.append(f"t={self.step}")
        if self.gate is not None:
            parts.append(f"gate={self.gate}")
        if self.label:
            parts.append(f"[{self.label}]")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"Provenance({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"


current: Provenance | None = None

# Each run of a recurrent layer over a sequence takes the next number as its ``call``: a layer
# used twice, or two layers with the same module path, are then two recurrences, not one.
calls = itertools.count()


def run_names(runs: Iterable[tuple[str | None, int | None]]) -> dict[tuple, str | None]:
    """(module path, call) -> how pictures and reports name that run of a recurrence: its module
    path, plus " #k" (k = 1, 2, ... in call order) when the same path ran more than once."""
    by_path: dict[str | None, list] = {}
    for module, call in sorted(set(runs), key=lambda run: -1 if run[1] is None else run[1]):
        by_path.setdefault(module, []).append(call)
    return {(module, call): module if len(path_calls) == 1 else f"{module or ''} #{k}".lstrip()
            for module, path_calls in by_path.items() for k, call in enumerate(path_calls, 1)}


class scope:  # noqa: N801 - used like a function: ``with ts.scope(...):``
    """Label every op made inside: ``with ts.scope("attention"): ...`` or ``scope(step=t)``.

    Fields: module, layer, direction (0 forward, 1 reverse), step, gate, label, and call (the
    number of a recurrent layer's run over a sequence, which the layers assign themselves).
    ``with scope(...) as here`` gives the record now current. (A class, not a generator: cheaper
    to enter and leave.)
    """

    __slots__ = ("fields", "outer")

    def __init__(self, label: str | None = None, **fields: object) -> None:
        fields["label"] = label
        self.fields = fields

    def __enter__(self) -> Provenance:
        global current
        self.outer = current
        current = (self.outer or ROOT).child(**self.fields)
        return current

    def __exit__(self, *exc: object) -> None:
        global current
        current = self.outer


ROOT = Provenance()  # the empty record scopes start from
