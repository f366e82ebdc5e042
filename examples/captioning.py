"""One-to-many: a feature vector in, a caption out ("<start> big red circle <end>").

In image captioning a CNN turns the picture into a feature vector and a recurrent decoder turns
that vector into words. Here the "CNN features" are made up with a known relation to the
caption: the picture's attributes (a colour, a shape, maybe a size) are one-hot coded, mixed by a
fixed random matrix (the "camera") into 24 numbers, and blurred with noise. The decoder never
sees the attributes, only the 24 numbers.

The features enter once, at the start: a Linear layer maps them to the LSTM decoder's initial
hidden state. From there the decoder emits one word per step, fed its previous word (the true
one while training, teacher forcing; its own greedy choice at test time) until it emits <end>.
Captions have 2 or 3 words (small / big / no size), so the decoder also decides when to stop.

A few colour-shape pairs are left out of training entirely. The features of a "blue star" say
blue and star plainly, yet the decoder mostly gets these wrong: all it ever heard after "blue"
were the other shapes, and that learned language prior outvotes the evidence. Real captioners
fail the same way (describing what usually goes together rather than what is in the picture).

    python examples/captioning.py          # about 5 s
    python examples/captioning.py --fast   # what CI runs
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads would only wait

import numpy as np

import tinygrad_seq as ts
from tinygrad_seq import nn
from tinygrad_seq.progress import Progress

COLOURS = ["red", "green", "blue", "yellow", "black", "white"]
SHAPES = ["circle", "square", "triangle", "star", "heart", "cross"]
SIZES = ["small", "big", ""]  # "": no size word in the caption
WORDS = ["<pad>", "<start>", "<end>"] + SIZES[:2] + COLOURS + SHAPES
PAD, START, END = 0, 1, 2
UNSEEN = {("blue", "star"), ("green", "circle"), ("yellow", "triangle"), ("black", "heart"),
          ("white", "cross")}  # colour-shape pairs never in training
FEATURES = 24

Picture = tuple[str, str, str]  # colour, shape, size ("" for none)


def caption_of(picture: Picture) -> list[str]:
    colour, shape, size = picture
    return ([size] if size else []) + [colour, shape]


def make_pictures(rng: np.random.Generator, count: int, unseen: bool) -> list[Picture]:
    """Random pictures whose colour-shape pair is in UNSEEN if ``unseen``, else is not."""
    pictures: list[Picture] = []
    while len(pictures) < count:
        picture = (str(rng.choice(COLOURS)), str(rng.choice(SHAPES)), str(rng.choice(SIZES)))
        if (picture[:2] in UNSEEN) == unseen:
            pictures.append(picture)
    return pictures


def features_of(pictures: list[Picture], camera: np.ndarray, rng: np.random.Generator,
                noise: float = 0.3) -> ts.Tensor:
    """The stand-in CNN features: camera @ one-hot attributes + Gaussian noise, (B, FEATURES)."""
    attributes = np.zeros((len(pictures), len(COLOURS) + len(SHAPES) + len(SIZES)), np.float32)
    for b, (colour, shape, size) in enumerate(pictures):
        attributes[b, [COLOURS.index(colour), len(COLOURS) + SHAPES.index(shape),
                       len(COLOURS) + len(SHAPES) + SIZES.index(size)]] = 1.0
    return ts.tensor((attributes @ camera.T + noise * rng.standard_normal((len(pictures), FEATURES)))
                     .astype(np.float32))


def teacher_forcing_batch(pictures: list[Picture]) -> tuple[np.ndarray, np.ndarray]:
    """Decoder inputs "<start> words" and targets "words <end>", time-major, padded with PAD."""
    steps = 1 + max(len(caption_of(p)) for p in pictures)
    inputs, targets = np.full((steps, len(pictures)), PAD), np.full((steps, len(pictures)), PAD)
    for b, picture in enumerate(pictures):
        ids = [WORDS.index(w) for w in caption_of(picture)]
        inputs[:len(ids) + 1, b] = [START, *ids]
        targets[:len(ids) + 1, b] = [*ids, END]
    return inputs, targets


class Captioner(nn.Module):
    """features -> Linear -> tanh -> the LSTM's initial h (c starts at 0); then word by word."""

    def __init__(self, hidden: int, embed: int = 12) -> None:
        super().__init__()
        self.init_state = nn.Linear(FEATURES, hidden)
        self.embed = nn.Embedding(len(WORDS), embed, padding_idx=PAD)
        self.lstm = nn.LSTM(embed, hidden)
        self.head = nn.Linear(hidden, len(WORDS))

    def initial_state(self, features: ts.Tensor) -> tuple[ts.Tensor, ts.Tensor]:
        h0 = self.init_state(features).tanh()[None]  # (1, B, hidden): one layer
        return h0, ts.zeros(*h0.shape)

    def forward(self, words: np.ndarray, state: tuple[ts.Tensor, ts.Tensor]) -> tuple[ts.Tensor, tuple]:
        """Logits (T, B, vocabulary) for input words (T, B), and the state after them."""
        outputs, state = self.lstm(self.embed(words), state)
        return self.head(outputs), state

    def caption(self, features: ts.Tensor, max_words: int = 5) -> list[list[str]]:
        """Greedy decoding: start from <start>, feed back the likeliest word until <end>."""
        with ts.no_grad():
            state = self.initial_state(features)
            words, emitted = np.full((1, features.shape[0]), START), []
            for _ in range(max_words + 1):
                logits, state = self(words, state)
                words = logits.numpy().argmax(-1)
                emitted.append(words[0])
        captions = []
        for row in np.array(emitted).T.tolist():
            captions.append([WORDS[i] for i in (row[:row.index(END)] if END in row else row)])
        return captions


def exact_match(model: Captioner, pictures: list[Picture], features: ts.Tensor) -> float:
    captions = model.caption(features)
    return float(np.mean([c == caption_of(p) for c, p in zip(captions, pictures, strict=True)]))


def main(fast: bool = False) -> dict:
    ts.manual_seed(0)
    rng = np.random.default_rng(0)
    camera = rng.standard_normal((FEATURES, len(COLOURS) + len(SHAPES) + len(SIZES))).astype(np.float32)
    steps, hidden = (150, 32) if fast else (400, 48)
    model = Captioner(hidden)
    optimizer = ts.optim.Adam(model.parameters(), lr=0.01)
    print(f"{len(COLOURS) * len(SHAPES) - len(UNSEEN)} colour-shape pairs x {len(SIZES)} sizes in training "
          f"({', '.join(' '.join(pair) for pair in sorted(UNSEEN))} held out); {FEATURES} noisy features "
          f"-> Linear -> LSTM decoder (hidden {hidden}), teacher forcing, {steps} steps of 64 pictures")
    with Progress(steps, desc="captioner") as progress:
        for step in range(1, steps + 1):
            pictures = make_pictures(rng, 64, unseen=False)
            inputs, targets = teacher_forcing_batch(pictures)
            logits, _ = model(inputs, model.initial_state(features_of(pictures, camera, rng)))
            loss = nn.functional.cross_entropy(logits.reshape(-1, len(WORDS)), targets.reshape(-1),
                                               ignore_index=PAD)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            progress.step(loss=loss.item())
            if step % (steps // 5) == 0:
                progress.log(f"  step {step:4d}  loss {loss.item():.4f}")

    seen, unseen = make_pictures(rng, 400, unseen=False), make_pictures(rng, 100, unseen=True)
    seen_features, unseen_features = features_of(seen, camera, rng), features_of(unseen, camera, rng)
    seen_accuracy = exact_match(model, seen, seen_features)
    unseen_accuracy = exact_match(model, unseen, unseen_features)
    print(f"exact-match of greedy captions for new feature vectors: {seen_accuracy:.1%} on pairs seen in "
          f"training, {unseen_accuracy:.1%} on the held-out pairs\n"
          "  (the decoder learned which shapes follow each colour in its training captions, and that "
          "prior beats the features)")
    for pictures, features in ((seen[:4], seen_features[:4]), (unseen[:3], unseen_features[:3])):
        for picture, caption in zip(pictures, model.caption(features), strict=True):
            truth = " ".join(caption_of(picture))
            print(f"  picture of a {truth:22s} -> <start> {' '.join(caption)} <end>"
                  + ("" if caption == caption_of(picture) else "   WRONG"))
    return {"last_loss": loss.item(), "exact_match_seen": seen_accuracy,
            "exact_match_unseen": unseen_accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer steps, smaller model (what CI runs)")
    main(parser.parse_args().fast)
