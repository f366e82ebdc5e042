"""What one hidden unit of a char LSTM tracks, shown as a coloured strip under the text.

After training on the Zen of Python (as in char_rnn.py), the LSTM reads the text once more and
every hidden unit's activation is recorded at every character. Some units turn out to track
something we can name. The example measures a few candidate quantities at each character
(how far into the line, how far into the word, whether a space or line end comes next) and
picks, for each, the unit whose activation correlates best with it. Then it paints the text with
the most telling unit's activation: red for positive, blue for negative, white near zero
(Karpathy's "Visualizing and Understanding Recurrent Networks" did this on larger models).

Output: the strip in the terminal (ANSI background colours; in a log or pipe, or with NO_COLOR
set, a row of + and - marks under each line instead; FORCE_COLOR keeps the colours) and
tinygrad_seq_out/hidden_states.html with one strip per candidate quantity.

    python examples/hidden_states.py          # about 10 s
    python examples/hidden_states.py --fast   # what CI runs
"""

from __future__ import annotations

import argparse
import html
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads would only wait

import numpy as np
from char_rnn import encode, train_char_lstm  # the sibling example: examples/ is on sys.path

import tinygrad_seq as ts
from tinygrad_seq.charlm import zen_of_python

OUT = Path("tinygrad_seq_out")


def candidate_features(text: str) -> dict[str, np.ndarray]:
    """Quantities a unit might track, one value per character of ``text``."""
    line_position, word_position = np.zeros(len(text)), np.zeros(len(text))
    for t in range(1, len(text)):
        line_position[t] = 0 if text[t - 1] == "\n" else line_position[t - 1] + 1
        word_position[t] = 0 if text[t - 1] in " \n" else word_position[t - 1] + 1
    word_ends_next = np.array([float(c in " \n.,") for c in text[1:] + "\n"])
    return {"position in the line": line_position, "position in the word": word_position,
            "a word ends next": word_ends_next}


def best_units(activations: np.ndarray, features: dict[str, np.ndarray]) -> dict[str, tuple[int, float]]:
    """For each feature, the unit whose activation has the largest |Pearson correlation| with it."""
    best = {}
    for name, values in features.items():
        r = np.array([np.corrcoef(unit, values)[0, 1] for unit in activations.T])
        unit = int(np.nanargmax(np.abs(r)))
        best[name] = (unit, float(r[unit]))
    return best


def colour(activation: float) -> tuple[int, int, int]:
    """White at 0, fading to red at +1 and to blue at -1."""
    fade = int(255 * (1 - min(abs(activation), 1.0)))
    return (255, fade, fade) if activation > 0 else (fade, fade, 255)


def use_colour() -> bool:
    """Colours for a terminal, not for a log or pipe; the NO_COLOR / FORCE_COLOR conventions decide first."""
    if os.environ.get("NO_COLOR"):
        return False
    return bool(os.environ.get("FORCE_COLOR")) or sys.stdout.isatty()


def marked_strip(text: str, activations: np.ndarray, threshold: float = 0.5) -> str:
    """The colourless strip: under each line, + where the activation is above ``threshold``, - where
    it is below -``threshold``."""
    rows, start = [], 0
    for line in text.rstrip("\n").split("\n"):
        marks = ["+" if a > threshold else "-" if a < -threshold else " "
                 for a in activations[start:start + len(line)]]
        rows += [line, "".join(marks).rstrip()]
        start += len(line) + 1
    return "\n".join(rows)


def terminal_strip(text: str, activations: np.ndarray) -> str:
    """The text with each character on a background of its activation's colour (24-bit ANSI)."""
    cells = []
    for char, activation in zip(text, activations, strict=True):
        r, g, b = colour(activation)
        shown = "\u21b5" if char == "\n" else char  # a visible line end, then the break itself
        cells.append(f"\x1b[30;48;2;{r};{g};{b}m{shown}\x1b[0m" + ("\n" if char == "\n" else ""))
    return "".join(cells)


def html_strip(title: str, text: str, activations: np.ndarray) -> str:
    spans = [f'<span style="background:rgb{colour(a)}" title="{a:+.2f}">{html.escape(c)}</span>'
             for c, a in zip(text, activations, strict=True)]
    return f"<h2>{html.escape(title)}</h2>\n<pre>{''.join(spans)}</pre>"


def main(fast: bool = False) -> dict:
    ts.manual_seed(0)
    OUT.mkdir(exist_ok=True)
    text = zen_of_python()
    print(f"training a char LSTM on the Zen of Python ({len(text)} characters):")
    model, chars, losses, _ = train_char_lstm(text, steps=150 if fast else 400, hidden=32 if fast else 48)
    with ts.no_grad():
        _, hidden_states, _ = model(encode(text, chars)[:, None])  # (T, 1, hidden)
    activations = hidden_states.numpy()[:, 0, :]
    best = best_units(activations, candidate_features(text))
    for name, (unit, r) in best.items():
        print(f"  '{name}': unit {unit} follows it best (correlation {r:+.2f})")
    name, (unit, r) = max(best.items(), key=lambda item: abs(item[1][1]))
    shown = text[:text.index("\n", 400) + 1]  # whole lines, about 400 characters
    colour_key = "red > 0, blue < 0" if use_colour() else "+ above 0.5, - below -0.5"
    print(f"unit {unit} over the text ({name}, correlation {r:+.2f}; {colour_key}):")
    strip = terminal_strip if use_colour() else marked_strip
    print(strip(shown, activations[:len(shown), unit]))

    strips = [html_strip(f"unit {u}: {feature} (correlation {c:+.2f})", text, activations[:, u])
              for feature, (u, c) in best.items()]
    page = OUT / "hidden_states.html"
    page.write_text("<!doctype html>\n<meta charset='utf-8'><title>char LSTM hidden units</title>\n"
                    "<p>Background: the unit's activation, red positive, blue negative, white near zero "
                    "(hover a character for the value).</p>\n" + "\n".join(strips) + "\n")
    print(f"wrote {page}")
    return {"last_loss": float(np.mean(losses[-10:])), "unit": unit, "feature": name, "correlation": r,
            "correlations": {feature: c for feature, (_, c) in best.items()}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer steps, smaller model (what CI runs)")
    main(parser.parse_args().fast)
