"""A character-level language model: the one ``tinygrad-seq demo`` and ``tinygrad-seq train`` share.

Text becomes ids over a *vocabulary* (the sorted distinct characters, kept as one string so a
checkpoint stores it as plain metadata). ``CharModel`` predicts the next character; ``train``
runs truncated BPTT over contiguous streams of the text with Adam and gradient clipping;
``sample`` generates text at a temperature; ``save_checkpoint`` / ``load_checkpoint`` keep the
model, the optimizer, the vocabulary and the hyper-parameters in one safetensors file.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import nn, optim
from .autograd import no_grad
from .checkpoint import PathLike, load, save
from .checks import is_integer
from .nn.module import StateDictError
from .progress import Progress
from .tensor import Tensor

RECURRENT_LAYERS: dict[str, type[nn.Module]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
ARCHITECTURE_KEYS = ("cell", "hidden", "layers", "embed")

# on_progress(step, losses so far): called after every optimizer step.
ProgressCallback = Callable[[int, Sequence[float]], None]


class DivergedError(FloatingPointError):
    """``train``'s loss stopped being finite: the weights are nan or inf from then on, so training
    stops at once rather than run on (and save) a model that can only output nan."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"train: the loss is {loss} at step {step}: the run diverged; lower the learning "
                         "rate or clip the gradient norm")
        self.step, self.loss = step, loss


def zen_of_python() -> str:
    """The embedded default text: ``import this`` prints it, so capture that."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        import this  # noqa: F401
    return printed.getvalue() or _decode_this()


def _decode_this() -> str:  # `this` prints only on its first import in a process
    import codecs
    import this

    return codecs.decode(this.s, "rot13")


def vocabulary(text: str) -> str:
    """The sorted distinct characters of ``text``: position i is the character with id i."""
    return "".join(sorted(set(text)))


def encode(text: str, vocab: str) -> np.ndarray:
    """Ids of ``text``'s characters; a ValueError names the characters ``vocab`` lacks."""
    index = {char: i for i, char in enumerate(vocab)}
    unknown = sorted(set(text) - index.keys())
    if unknown:
        raise ValueError(f"characters not in the model's vocabulary: {', '.join(map(repr, unknown))} "
                         f"(it knows {len(vocab)} characters: {vocab!r})")
    return np.array([index[char] for char in text], dtype=np.int64)


class CharModel(nn.Module):
    """Characters -> embedding -> recurrent layers (``cell``: "lstm", "gru" or tanh "rnn") -> logits
    over the next character. ``fused``: the layers' fast path (the same numbers; not saved as part of
    the architecture, since the parameters do not depend on it)."""

    def __init__(self, vocab: int, hidden: int, cell: str = "lstm", layers: int = 1, embed: int = 16,
                 fused: bool = False) -> None:
        super().__init__()
        if cell not in RECURRENT_LAYERS:
            raise ValueError(f"CharModel: unknown cell {cell!r}; expected one of "
                             f"{', '.join(RECURRENT_LAYERS)}")
        self.cell = cell
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = RECURRENT_LAYERS[cell](embed, hidden, num_layers=layers, fused=fused)
        self.head = nn.Linear(hidden, vocab)

    @property
    def architecture(self) -> dict[str, Any]:
        """The hyper-parameters that rebuild this model (besides the vocabulary size)."""
        return {"cell": self.cell, "hidden": self.rnn.hidden_size, "layers": self.rnn.num_layers,
                "embed": self.embed.embedding_dim}

    def forward(self, ids: Tensor | np.ndarray, state: Any = None) -> tuple[Tensor, Tensor, Any]:
        """ids (T, B) -> (logits (T, B, vocab), hidden states of the top layer (T, B, H), final state)."""
        hidden_states, state = self.rnn(self.embed(ids), state)
        return self.head(hidden_states), hidden_states, state


def train(model: CharModel, text_ids: np.ndarray, steps: int, window: int = 32, batch: int = 4,
          lr: float = 1e-2, clip: float | None = 1.0, on_progress: ProgressCallback | None = None,
          optimizer: optim.Optimizer | None = None) -> list[float]:
    """Train on ``text_ids`` for ``steps`` optimizer steps; returns each step's loss (mean cross-entropy
    per character, nats).

    The text is cut into ``batch`` contiguous streams, walked ``window`` characters at a time; the
    state carries over from window to window but detached, so each backward covers one window
    (truncated BPTT). The gradient norm is clipped to ``clip`` (None: no clipping). ``optimizer``
    continues an existing one (at its own learning rate); by default a fresh Adam at ``lr``.
    """
    if not is_integer(steps) or steps < 1:
        raise ValueError(f"train: steps must be a positive integer, got {steps!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"train: clip must be > 0 (or None for no clipping), got {clip!r}")
    streams, next_ids = nn.sequential_partition(np.asarray(text_ids), batch_size=batch)
    if optimizer is None:
        optimizer = optim.Adam(model.parameters(), lr=lr)
    vocab_size = model.head.out_features
    losses: list[float] = []
    while len(losses) < steps:  # an epoch walks the streams once, from a zero state
        state = None
        for inputs, targets in nn.truncated_bptt(streams, next_ids, window):
            logits, _, state = model(inputs, nn.detach_state(state))  # BPTT stops at the window's start
            loss = nn.functional.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1))
            if not math.isfinite(loss.item()):
                raise DivergedError(len(losses) + 1, loss.item())
            optimizer.zero_grad()
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            losses.append(loss.item())
            if on_progress is not None:
                on_progress(len(losses), losses)
            if len(losses) == steps:
                break
    if not all(np.isfinite(p.data).all() for p in model.parameters()):  # the last update diverged
        raise DivergedError(len(losses) + 1, math.nan)  # what the next step's loss would be
    return losses


def progress_printer(steps: int, every: int = 50, indent: str = "  ") -> ProgressCallback:
    """An ``on_progress`` for ``train`` printing, every ``every`` steps and at the end, the mean loss
    of the last ``every`` steps, its perplexity (exp of the loss: the effective number of equally
    likely next characters) and the time so far; in a terminal with tqdm installed (the ``cli``
    extra) a progress bar with the latest loss runs beneath those lines."""
    progress = Progress(steps, desc="training")

    def report(step: int, losses: Sequence[float]) -> None:
        progress.step(loss=losses[-1])
        if step % every == 0 or step == steps:
            recent = float(np.mean(losses[-every:]))
            try:
                perplexity = math.exp(recent)
            except OverflowError:  # a loss above 709.78: a diverging run
                perplexity = math.inf
            shown = f"{perplexity:6.2f}" if perplexity < 1e6 else f"{perplexity:.3g}"
            progress.log(f"{indent}step {step:4d}  loss {recent:.3f}  perplexity {shown}")
        if step == steps:
            progress.close()

    return report


def sample(model: CharModel, vocab: str, prime: str, length: int, temperature: float,
           rng: np.random.Generator) -> str:
    """``prime`` followed by ``length`` characters drawn one at a time from the model's softmax at
    ``temperature`` (below 1: safer, more repetitive; above 1: more surprising)."""
    return prime + "".join(generate(model, vocab, prime, length, temperature, rng))


def generate(model: CharModel, vocab: str, prime: str, length: int, temperature: float,
             rng: np.random.Generator) -> Iterator[str]:
    """``sample``'s characters after ``prime``, yielded as they are drawn so a long sample can be shown
    as it grows. The arguments are checked now, before the first character is asked for."""
    if not prime:
        raise ValueError("sample: prime must hold at least one character to start from")
    if not temperature > 0:
        raise ValueError(f"sample: temperature must be > 0, got {temperature!r}")
    if not is_integer(length) or length < 0:
        raise ValueError(f"sample: length must be a non-negative integer, got {length!r}")
    return _draw(model, vocab, encode(prime, vocab), length, temperature, rng)


def _draw(model: CharModel, vocab: str, ids: np.ndarray, length: int, temperature: float,
          rng: np.random.Generator) -> Iterator[str]:
    state = None
    for _ in range(length):
        with no_grad():  # per step: the caller's own code runs between the yields
            logits, _, state = model(ids[:, None], state)
        ids = np.array([_next_id(logits[-1, 0].numpy(), temperature, rng)])
        yield vocab[ids[0]]


def _next_id(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A draw from softmax(logits / temperature), in float64: a tiny temperature would overflow
    float32 logits to inf (the limit, at temperatures too small even for float64, is the argmax)."""
    if not np.all(np.isfinite(logits)):
        raise ValueError("sample: the model's outputs are not finite (its weights hold nan or inf: a "
                         "diverged training run?)")
    with np.errstate(over="ignore"):
        scaled = logits.astype(np.float64) / temperature
        if not np.all(np.isfinite(scaled)):
            return int(np.argmax(logits))
        probs = np.exp(scaled - scaled.max())  # (the difference may overflow to -inf: a probability of 0)
    return int(rng.choice(len(probs), p=probs / probs.sum()))


def save_checkpoint(path: PathLike, model: CharModel, optimizer: optim.Optimizer, vocab: str,
                    config: Mapping[str, Any] | None = None) -> None:
    """Write model and optimizer state, the vocabulary and the config to ``path`` (safetensors).

    The saved config is ``config`` (e.g. the training settings, as JSON-able values) plus the
    model's own ``architecture``, which always wins so the file cannot describe another model.
    """
    if len(vocab) != model.embed.num_embeddings:
        raise ValueError(f"save_checkpoint: the vocabulary has {len(vocab)} characters but the model "
                         f"embeds {model.embed.num_embeddings}")
    save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "vocab": vocab,
          "config": {**(config or {}), **model.architecture}}, path)


def load_checkpoint(path: PathLike) -> tuple[CharModel, str, dict[str, Any]]:
    """Rebuild ``(model, vocab, config)`` from ``save_checkpoint``'s file. A missing file raises
    OSError; anything that is not such a checkpoint, a ValueError saying what is wrong."""
    saved = load(path)
    problem = _checkpoint_problem(saved)
    if problem:
        raise ValueError(f"load_checkpoint: {Path(path)} is not a char-model checkpoint: {problem}")
    vocab, config = saved["vocab"], saved["config"]
    try:
        model = CharModel(len(vocab), **{key: config[key] for key in ARCHITECTURE_KEYS})
        model.load_state_dict(saved["model"])
    except (StateDictError, ValueError, TypeError) as err:
        raise ValueError(f"load_checkpoint: {Path(path)} does not match the model its config describes "
                         f"({err})") from None
    return model, vocab, config


def _checkpoint_problem(saved: Any) -> str | None:
    if not isinstance(saved, dict):
        return f"it holds a {type(saved).__name__}, expected a dict"
    missing = [key for key in ("model", "optimizer", "vocab", "config") if key not in saved]
    if missing:
        found = [str(key) for key in saved]
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        return f"missing {', '.join(missing)} (found {shown or 'nothing'})"
    if not isinstance(saved["vocab"], str) or not saved["vocab"]:
        return "its vocab is not a non-empty string"
    if not isinstance(saved["config"], dict):
        return "its config is not a dict"
    missing = [key for key in ARCHITECTURE_KEYS if key not in saved["config"]]
    if missing:
        return f"its config lacks {', '.join(missing)}"
    return None
