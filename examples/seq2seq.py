"""Sequence to sequence: an encoder-decoder GRU learns to reverse a sequence of digits.

The encoder reads "3 1 4 1 5" and its final state is the whole input squeezed into one
vector. The decoder starts from that state and a <start> token and emits one digit per step
until it emits <end>, so output lengths need not be known in advance.

Training uses teacher forcing: the decoder's input at step t is the TRUE token t-1
("<start> 5 1 4 1 3" in, "5 1 4 1 3 <end>" expected out), so all steps train in one pass.
At test time there is no truth to feed: greedy decoding feeds back the decoder's own most
likely token, one step at a time, and a single early mistake can derail the rest; exact-match
accuracy (every digit and the <end> right) measures that.

Inputs of different lengths are padded; the encoder gets ``lengths=`` so its final state is
each sequence's own, and padded targets are skipped by the loss with ``ignore_index``.

    python examples/seq2seq.py          # about 30 s
    python examples/seq2seq.py --fast   # what CI runs
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads would only wait

import numpy as np

import tinygrad_seq as ts
from tinygrad_seq import nn
from tinygrad_seq.progress import Progress

PAD, START, END = 0, 1, 2
TOKENS = ["<pad>", "<start>", "<end>"] + [str(d) for d in range(10)]  # digit d has id d + 3


def make_batch(rng: np.random.Generator, size: int, shortest: int, longest: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random digit sequences (time-major, padded with PAD), their lengths, the decoder's
    teacher-forcing inputs "<start> reversed" and its targets "reversed <end>"."""
    lengths = rng.integers(shortest, longest + 1, size)
    source = np.full((longest, size), PAD)
    decoder_in = np.full((longest + 1, size), PAD)
    decoder_out = np.full((longest + 1, size), PAD)
    for b, length in enumerate(lengths):
        digits = rng.integers(0, 10, length) + 3
        source[:length, b] = digits
        decoder_in[:length + 1, b] = [START, *digits[::-1]]
        decoder_out[:length + 1, b] = [*digits[::-1], END]
    return source, lengths, decoder_in, decoder_out


class Seq2Seq(nn.Module):
    """Shared token embedding; GRU encoder; GRU decoder started from the encoder's final state."""

    def __init__(self, hidden: int, embed: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(TOKENS), embed, padding_idx=PAD)
        self.encoder = nn.GRU(embed, hidden)
        self.decoder = nn.GRU(embed, hidden)
        self.head = nn.Linear(hidden, len(TOKENS))

    def encode(self, source: np.ndarray, lengths: np.ndarray) -> ts.Tensor:
        _, final_state = self.encoder(self.embed(source), lengths=lengths)
        return final_state  # (1, B, hidden)

    def decode_step(self, tokens: np.ndarray, state: ts.Tensor) -> tuple[ts.Tensor, ts.Tensor]:
        """Logits (T, B, vocabulary) for decoder inputs (T, B), and the state after them."""
        outputs, state = self.decoder(self.embed(tokens), state)
        return self.head(outputs), state

    def forward(self, source: np.ndarray, lengths: np.ndarray, decoder_in: np.ndarray) -> ts.Tensor:
        """Teacher forcing: every decoder step at once, fed the true previous tokens."""
        logits, _ = self.decode_step(decoder_in, self.encode(source, lengths))
        return logits

    def greedy(self, source: np.ndarray, lengths: np.ndarray, max_steps: int) -> list[list[int]]:
        """Feed back the most likely token until every sequence has emitted <end> (or max_steps);
        each output runs up to and including its first <end>."""
        with ts.no_grad():
            state = self.encode(source, lengths)
            tokens = np.full((1, source.shape[1]), START)
            emitted = []
            for _ in range(max_steps):
                logits, state = self.decode_step(tokens, state)
                tokens = logits.numpy().argmax(-1)  # (1, B)
                emitted.append(tokens[0])
                if np.all(np.any(np.array(emitted) == END, axis=0)):
                    break
        outputs = []
        for row in np.array(emitted).T.tolist():
            outputs.append(row[:row.index(END) + 1] if END in row else row)
        return outputs


def as_text(ids: list[int]) -> str:
    return " ".join(TOKENS[i] for i in ids)


def main(fast: bool = False) -> dict:
    ts.manual_seed(0)
    rng = np.random.default_rng(0)
    shortest, longest = 3, 6
    steps, hidden = (300, 48) if fast else (1200, 64)
    model = Seq2Seq(hidden)
    optimizer = ts.optim.Adam(model.parameters(), lr=0.01)
    print(f"reversing {shortest} to {longest} digits: GRU encoder -> GRU decoder (hidden {hidden}), "
          f"teacher forcing, {steps} steps of 64 fresh random sequences")
    with Progress(steps, desc="seq2seq") as progress:
        for step in range(1, steps + 1):
            source, lengths, decoder_in, decoder_out = make_batch(rng, 64, shortest, longest)
            logits = model(source, lengths, decoder_in)
            loss = nn.functional.cross_entropy(logits.reshape(-1, len(TOKENS)), decoder_out.reshape(-1),
                                               ignore_index=PAD)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            progress.step(loss=loss.item())
            if step % (steps // 6) == 0:
                progress.log(f"  step {step:4d}  loss {loss.item():.4f}")

    source, lengths, _, _ = make_batch(rng, 500, shortest, longest)
    decoded = model.greedy(source, lengths, max_steps=longest + 2)
    inputs = [source[:length, b].tolist() for b, length in enumerate(lengths)]
    right = [out == [*seq[::-1], END] for out, seq in zip(decoded, inputs, strict=True)]
    accuracy = float(np.mean(right))
    print(f"greedy decoding of 500 new sequences: exact-match accuracy {accuracy:.1%}")
    examples = list(zip(inputs, decoded, right, strict=True))
    mistakes = [example for example in examples if not example[2]]
    for seq, out, ok in examples[:6] + mistakes[:3]:  # the first few, then a few mistakes
        print(f"  {as_text(seq):12s} -> <start> {as_text(out):18s} {'right' if ok else 'WRONG'}")
    by_length = {n: float(np.mean([r for r, s in zip(right, inputs, strict=True) if len(s) == n]))
                 for n in range(shortest, longest + 1)}
    print("  exact match by input length: " + ", ".join(f"{n}: {a:.0%}" for n, a in by_length.items()))
    return {"last_loss": loss.item(), "exact_match": accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer steps, smaller model (what CI runs)")
    main(parser.parse_args().fast)
