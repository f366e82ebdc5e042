"""Many-to-one: a tanh RNN reads a review word by word and classifies it from its last state.

The reviews are generated here, with rules in which word order matters:
  - "not" flips the word after it: "the plot was good" is positive, "the plot was not good"
    negative and "the plot was not bad" positive;
  - after "but" only the second clause counts: "the plot was bad but the acting was good" is
    positive, and the same words in the other order are negative.
A bag-of-words model gets the same input for both orders of a "but" review, and "not" would have
to flip whichever adjective follows it, which no weighting of word counts can do: it is trained
alongside as the baseline that shows why the order matters.

Words are one-hot vectors over the vocabulary; a padded batch plus ``lengths=`` lets the RNN's
final state come from each review's own last word. Two heads on the same kind of network:
  - positive / negative: one logit, a sigmoid, binary cross-entropy on the logit
    (``binary_cross_entropy_with_logits``, stable where a sigmoid then a log would not be);
  - positive / neutral / negative: three logits, a softmax, cross-entropy.

    python examples/sentiment.py          # about 10 s
    python examples/sentiment.py --fast   # what CI runs
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads would only wait

import numpy as np

import tinygrad_seq as ts
from tinygrad_seq import nn
from tinygrad_seq.progress import Progress

SUBJECTS = ["the movie", "the plot", "the acting", "the ending", "this film"]
POSITIVE = ["good", "great", "fun", "clever"]
NEGATIVE = ["bad", "boring", "awful", "dull"]
NEUTRAL = ["okay", "average"]
INTENSIFIERS = ["", "very", "really"]
CLASSES = ["negative", "neutral", "positive"]  # the 3-way label is polarity + 1
SHOWCASE = {"the movie was good": 1, "the movie was not good": -1, "the movie was bad": -1,
            "the movie was not bad": 1, "the plot was bad but the acting was good": 1,
            "the acting was good but the plot was bad": -1}  # same words, opposite labels, in pairs
NEUTRAL_SHOWCASE = {"the ending was not great but the acting was okay": 0, "this film was okay": 0}

Review = tuple[list[str], int]  # words and polarity: -1 negative, 0 neutral, +1 positive
LossFn = Callable[[ts.Tensor, np.ndarray], ts.Tensor]  # (logits, polarity) -> loss


def make_clause(rng: np.random.Generator, polarity: int) -> list[str]:
    """A clause with the given polarity; a polar one is negated half of the time ("not bad" is +1)."""
    negated = polarity != 0 and rng.random() < 0.5
    pool = NEUTRAL if polarity == 0 else (POSITIVE if polarity * (-1 if negated else 1) > 0 else NEGATIVE)
    words = [*str(rng.choice(SUBJECTS)).split(), str(rng.choice(["was", "is"]))]
    words += ["not"] if negated else [w for w in [str(rng.choice(INTENSIFIERS))] if w]
    return words + [str(rng.choice(pool))]


def make_reviews(rng: np.random.Generator, count: int, with_neutral: bool) -> list[Review]:
    """``count`` distinct reviews: one clause, or two joined by "but" (the second sets the label)."""
    polarities = [-1, 0, 1] if with_neutral else [-1, 1]
    reviews: dict[str, Review] = {}
    while len(reviews) < count:
        polarity = int(rng.choice(polarities))
        words = make_clause(rng, polarity)
        if rng.random() < 0.5:  # "<clause with another polarity> but <clause>"
            other = int(rng.choice([p for p in [-1, 0, 1] if p != polarity]))
            words = make_clause(rng, other) + ["but"] + words
        reviews[" ".join(words)] = (words, polarity)
    return list(reviews.values())


class OneHot:
    """Words to one-hot vectors; a padded position is the zero vector."""

    def __init__(self) -> None:
        phrases = SUBJECTS + POSITIVE + NEGATIVE + NEUTRAL + INTENSIFIERS + ["was", "is", "not", "but"]
        self.words = sorted({word for phrase in phrases for word in phrase.split()})

    def __call__(self, sentences: list[list[str]]) -> tuple[ts.Tensor, np.ndarray]:
        """A time-major batch (T, B, vocabulary) and each sentence's length."""
        lengths = np.array([len(s) for s in sentences])
        batch = np.zeros((lengths.max(), len(sentences), len(self.words)), np.float32)
        for b, sentence in enumerate(sentences):
            batch[np.arange(len(sentence)), b, [self.words.index(w) for w in sentence]] = 1.0
        return ts.tensor(batch), lengths


class SentimentRNN(nn.Module):
    """One-hot words -> tanh RNN -> the final state -> ``outputs`` logits."""

    def __init__(self, vocabulary: int, hidden: int, outputs: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(vocabulary, hidden, nonlinearity="tanh")
        self.head = nn.Linear(hidden, outputs)

    def forward(self, words: ts.Tensor, lengths: np.ndarray) -> ts.Tensor:
        _, last_state = self.rnn(words, lengths=lengths)  # (1, B, H): each review's own last step
        return self.head(last_state[0])


class BagOfWords(nn.Module):
    """The baseline: a linear model of the word counts, blind to order."""

    def __init__(self, vocabulary: int, outputs: int) -> None:
        super().__init__()
        self.head = nn.Linear(vocabulary, outputs)

    def forward(self, words: ts.Tensor, lengths: np.ndarray) -> ts.Tensor:
        return self.head(words.sum(0))


def binary_loss(logits: ts.Tensor, polarity: np.ndarray) -> ts.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], (polarity > 0).astype(np.float32))


def three_way_loss(logits: ts.Tensor, polarity: np.ndarray) -> ts.Tensor:
    return nn.functional.cross_entropy(logits, polarity + 1)


def predicted_polarity(logits: ts.Tensor) -> np.ndarray:
    """One logit: its sign (sigmoid > 0.5); three: the class with the largest softmax probability."""
    scores = logits.numpy()
    return np.where(scores[:, 0] > 0, 1, -1) if scores.shape[1] == 1 else scores.argmax(1) - 1


def train(model: nn.Module, loss_fn: LossFn, data: tuple, steps: int, name: str) -> None:
    """Full-batch Adam on (one-hot words, lengths, polarity)."""
    words, lengths, polarity = data
    optimizer = ts.optim.Adam(model.parameters(), lr=0.01)
    with Progress(steps, desc=name) as progress:
        for step in range(1, steps + 1):
            loss = loss_fn(model(words, lengths), polarity)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            progress.step(loss=loss.item())
            if step % (steps // 3) == 0:
                progress.log(f"  {name:14s} step {step:4d}  loss {loss.item():.4f}")


def accuracy(model: nn.Module, data: tuple) -> float:
    words, lengths, polarity = data
    with ts.no_grad():
        return float(np.mean(predicted_polarity(model(words, lengths)) == polarity))


def run_task(with_neutral: bool, one_hot: OneHot, rng: np.random.Generator, steps: int, hidden: int
             ) -> tuple[SentimentRNN, float, float]:
    """Train the RNN and the bag-of-words baseline on fresh reviews; test on reviews never seen."""
    reviews = make_reviews(rng, 900, with_neutral)
    train_set, test_set = reviews[:600], reviews[600:]
    train_data, test_data = ((*one_hot([w for w, _ in part]), np.array([p for _, p in part]))
                             for part in (train_set, test_set))
    outputs, loss_fn = (3, three_way_loss) if with_neutral else (1, binary_loss)
    vocabulary = len(one_hot.words)
    model, baseline = SentimentRNN(vocabulary, hidden, outputs), BagOfWords(vocabulary, outputs)
    train(model, loss_fn, train_data, steps, "tanh RNN")
    train(baseline, loss_fn, train_data, steps, "bag of words")
    rnn_accuracy, bow_accuracy = accuracy(model, test_data), accuracy(baseline, test_data)
    print(f"  test accuracy on {len(test_set)} unseen reviews: tanh RNN {rnn_accuracy:.1%}, "
          f"bag of words {bow_accuracy:.1%}")
    return model, rnn_accuracy, bow_accuracy


def show(model: SentimentRNN, one_hot: OneHot, three_way: bool) -> float:
    """Classify the order-sensitive reviews, print the probabilities; returns the fraction right."""
    examples = {**SHOWCASE, **NEUTRAL_SHOWCASE} if three_way else SHOWCASE
    words, lengths = one_hot([s.split() for s in examples])
    with ts.no_grad():
        logits = model(words, lengths)
    probs = logits.softmax(-1).numpy() if three_way else logits.sigmoid().numpy()
    verdicts = predicted_polarity(logits)
    for (sentence, polarity), row, verdict in zip(examples.items(), probs, verdicts, strict=True):
        detail = ("  ".join(f"{name[:3]} {p:.2f}" for name, p in zip(CLASSES, row, strict=True))
                  if three_way else f"P(positive) = {row[0]:.2f}")
        mark = "right" if verdict == polarity else "WRONG"
        print(f"    {sentence:50s} {CLASSES[verdict + 1]:9s} {mark}  {detail}")
    return float(np.mean(verdicts == np.array(list(examples.values()))))


def main(fast: bool = False) -> dict:
    ts.manual_seed(0)
    rng = np.random.default_rng(0)
    one_hot = OneHot()
    steps, hidden = (120, 24) if fast else (300, 32)
    print(f"vocabulary of {len(one_hot.words)} words: {' '.join(one_hot.words)}")
    print("[1/2] positive / negative: one logit, sigmoid, binary cross-entropy")
    binary_model, binary_accuracy, binary_bow = run_task(False, one_hot, rng, steps, hidden)
    binary_showcase = show(binary_model, one_hot, three_way=False)
    print("[2/2] positive / neutral / negative: three logits, softmax, cross-entropy")
    three_model, three_accuracy, three_bow = run_task(True, one_hot, rng, steps, hidden)
    three_showcase = show(three_model, one_hot, three_way=True)
    return {"binary_accuracy": binary_accuracy, "binary_bag_of_words_accuracy": binary_bow,
            "binary_showcase_right": binary_showcase, "three_way_accuracy": three_accuracy,
            "three_way_bag_of_words_accuracy": three_bow, "three_way_showcase_right": three_showcase}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer steps, smaller model (what CI runs)")
    main(parser.parse_args().fast)
