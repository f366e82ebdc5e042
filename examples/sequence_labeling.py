"""Many-to-many tagging: find street addresses in a sentence, where only LATER words tell.

Every token gets a tag: B-ADDR (an address starts here), I-ADDR (inside one) or O (outside).
The generated sentences contain spans like "12 oak street" (an address) and "12 oak trees"
(not one): the number and the name are the same words in both, and only the last word of the
span decides their tags. A unidirectional GRU reads left to right, so when it must tag "12" it
has not seen "street" yet and can only guess; a bidirectional GRU also reads right to left and
knows what comes next. Both are stacked two layers deep and trained the same way; the example
prints both accuracies, separately on the tokens whose tag depends on the future, and a
sentence tagged by each.

Sentences have different lengths: they are padded, the GRUs get ``lengths=`` (so the reverse
direction starts at each sentence's own last word) and padded positions are left out of the
loss with ``ignore_index``.

    python examples/sequence_labeling.py          # about 20 s
    python examples/sequence_labeling.py --fast   # what CI runs
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads would only wait

import numpy as np

import tinygrad_seq as ts
from tinygrad_seq import nn
from tinygrad_seq.progress import Progress

FILLER = ["please", "send", "it", "to", "we", "met", "near", "i", "saw", "at", "the", "and", "then",
          "left", "yesterday", "with", "some"]
NUMBERS, NAMES = ["7", "12", "48", "103"], ["oak", "elm", "pine", "hill", "river", "main"]
ADDRESS_ENDS, OTHER_ENDS = ["street", "road", "lane", "avenue"], ["trees", "boxes", "apples", "birds"]
TAGS = ["O", "B-ADDR", "I-ADDR"]
PAD, IGNORE = "<pad>", -100  # the padding token (id 0) and the target value the loss skips
VOCABULARY = [PAD] + sorted(set(FILLER + NUMBERS + NAMES + ADDRESS_ENDS + OTHER_ENDS))

Tagged = tuple[list[str], list[str], list[bool]]  # words, tags, "this tag depends on a later word"


def make_sentence(rng: np.random.Generator) -> Tagged:
    """Filler words around one or two spans "<number> <name> [<name>] <end word>"."""
    words, tags, ambiguous = [], [], []

    def filler(most: int) -> None:
        for _ in range(rng.integers(0, most + 1)):
            words.append(str(rng.choice(FILLER)))
            tags.append("O")
            ambiguous.append(False)

    filler(3)
    for _ in range(rng.integers(1, 3)):
        span = [str(rng.choice(NUMBERS))] + [str(w) for w in rng.choice(NAMES, rng.integers(1, 3))]
        is_address = rng.random() < 0.5
        end = str(rng.choice(ADDRESS_ENDS if is_address else OTHER_ENDS))
        words += span + [end]
        tags += ["B-ADDR"] + ["I-ADDR"] * len(span) if is_address else ["O"] * (len(span) + 1)
        ambiguous += [True] * len(span) + [False]  # the end word itself is unambiguous
        filler(2)
    return words, tags, ambiguous


def has_both_kinds_of_span(sentence: Tagged) -> bool:
    """An address and a look-alike span that is not one: the sentence worth showing."""
    _, tags, ambiguous = sentence
    return "B-ADDR" in tags and any(a and tag == "O" for a, tag in zip(ambiguous, tags, strict=True))


def batch_of(sentences: list[Tagged]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Time-major padded token ids and tag ids (IGNORE where padded), lengths, ambiguity mask."""
    lengths = np.array([len(words) for words, _, _ in sentences])
    ids = np.zeros((lengths.max(), len(sentences)), np.int64)
    tags = np.full(ids.shape, IGNORE)
    ambiguous = np.zeros(ids.shape, bool)
    for b, (words, word_tags, word_ambiguous) in enumerate(sentences):
        ids[:len(words), b] = [VOCABULARY.index(w) for w in words]
        tags[:len(words), b] = [TAGS.index(t) for t in word_tags]
        ambiguous[:len(words), b] = word_ambiguous
    return ids, tags, lengths, ambiguous


class Tagger(nn.Module):
    """Token ids -> embedding -> stacked GRU (optionally bidirectional) -> tag logits per token."""

    def __init__(self, hidden: int, bidirectional: bool, embed: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCABULARY), embed, padding_idx=0)
        self.gru = nn.GRU(embed, hidden, num_layers=2, bidirectional=bidirectional)
        self.head = nn.Linear(2 * hidden if bidirectional else hidden, len(TAGS))

    def forward(self, ids: np.ndarray, lengths: np.ndarray) -> ts.Tensor:
        states, _ = self.gru(self.embed(ids), lengths=lengths)  # (T, B, directions * hidden)
        return self.head(states)  # (T, B, tags)


def train(model: Tagger, sentences: list[Tagged], steps: int, batch_size: int, rng: np.random.Generator,
          name: str) -> None:
    optimizer = ts.optim.Adam(model.parameters(), lr=0.01)
    with Progress(steps, desc=name) as progress:
        for step in range(1, steps + 1):
            ids, tags, lengths, _ = batch_of([sentences[i] for i in rng.choice(len(sentences), batch_size)])
            logits = model(ids, lengths)
            loss = nn.functional.cross_entropy(logits.reshape(-1, len(TAGS)), tags.reshape(-1),
                                               ignore_index=IGNORE)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            progress.step(loss=loss.item())
            if step % (steps // 4) == 0:
                progress.log(f"  {name:15s} step {step:4d}  loss {loss.item():.4f}")


def evaluate(model: Tagger, sentences: list[Tagged]) -> tuple[dict[str, float], np.ndarray]:
    """Accuracy on all tokens, on the tokens whose tag depends on a later word, and on whole
    sentences; plus the predicted tag ids (T, B)."""
    ids, tags, lengths, ambiguous = batch_of(sentences)
    with ts.no_grad():
        predicted = model(ids, lengths).numpy().argmax(-1)
    real = tags != IGNORE
    right = (predicted == tags) | ~real
    return ({"tokens": float(right[real].mean()), "future-dependent tokens": float(right[ambiguous].mean()),
             "sentences": float(right.all(0).mean())}, predicted)


def show(sentence: Tagged, predictions: dict[str, list[int]]) -> None:
    """One sentence with the true tags and each model's tags, one column per word."""
    words, tags, _ = sentence
    rows = {"words": words, "true tags": tags}
    rows.update({name: [TAGS[t] for t in tag_ids] for name, tag_ids in predictions.items()})
    widths = [max(len(row[i]) for row in rows.values()) for i in range(len(words))]
    for label, row in rows.items():
        cells = " ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(f"    {label:15s} {cells.rstrip()}")


def main(fast: bool = False) -> dict:
    ts.manual_seed(0)
    rng = np.random.default_rng(0)
    train_set = [make_sentence(rng) for _ in range(1000)]
    test_set = [make_sentence(rng) for _ in range(300)]
    steps, hidden = (80, 16) if fast else (300, 24)
    example = next(s for s in test_set if has_both_kinds_of_span(s))
    print(f"{len(train_set)} training sentences, e.g. {' '.join(example[0])!r}")
    results, predictions = {}, {}
    for name, bidirectional in (("unidirectional", False), ("bidirectional", True)):
        print(f"[{name}] 2-layer GRU, hidden {hidden} per direction")
        model = Tagger(hidden, bidirectional)
        train(model, train_set, steps, 32, rng, name)
        results[name], predicted = evaluate(model, test_set)
        predictions[name] = predicted[:len(example[0]), test_set.index(example)].tolist()
    print("test accuracy on 300 new sentences:")
    for measure in results["bidirectional"]:
        print(f"  {measure:24s} " + "  ".join(f"{name} {results[name][measure]:6.1%}" for name in results))
    print("  (a unidirectional tagger must guess the tags of '12 oak' before it reads 'street' or 'trees')")
    show(example, predictions)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer steps, smaller model (what CI runs)")
    main(parser.parse_args().fast)
