"""One training step (forward over the sequence + loss + backward to all weights) of RNN / LSTM /
GRU layers: ours, a hand-written numpy BPTT (numpy_bptt.py, the expert's baseline) and PyTorch's
nn.RNN/LSTM/GRU when torch is installed, in one process per row, interleaved; plus peak memory of a step
(ours vs numpy) and whether our cost per time step stays flat from T = 1,000 to T = 10,000 (next to
numpy's, which shows what the caches add at 10,000).

    python benchmarks/bench_rnn.py [--sizes tiny,long] [--cells lstm] [--dtypes float64]
                                   [--repeat N] [--threads 1|default] [--quick]

Times are medians of repeated runs; read the ratio columns, not the absolute times: the machine
may be shared and noisy, but the implementations run in the same rounds, one after another. As in a
training loop, a tiny step is timed after ten untimed ones of its own (ten timed in a row), a medium
one after one (``interleaved_medians`` says why). Each row of the table (and the linearity run) is measured
in a new process of its own (``in_fresh_process`` says why).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, NamedTuple, TypeVar

import checkout  # noqa: F401  (first: the package of this checkout, not the venv's)
import numpy as np
from bench_ops import optional, ratio
from numpy_bptt import BPTT

import tinygrad_seq as ts


class Size(NamedTuple):
    steps: int
    batch: int
    features: int
    hidden: int
    repeat: int  # default number of rounds: fewer for the sizes where one step is slow
    warmup: int  # untimed steps of an implementation before its timed ones, in each round
    burst: int  # timed steps of an implementation in a row, in each round (interleaved_medians)


SIZES = {
    "tiny": Size(8, 1, 10, 16, repeat=150, warmup=10, burst=10),  # a round: tens of milliseconds
    "medium": Size(64, 32, 64, 128, repeat=15, warmup=1, burst=1),
    "large": Size(32, 64, 256, 512, repeat=7, warmup=0, burst=1),
    "long": Size(1000, 4, 16, 32, repeat=7, warmup=0, burst=1),
}
CELLS = {"rnn": (ts.nn.RNN, 1), "lstm": (ts.nn.LSTM, 4), "gru": (ts.nn.GRU, 3)}
DTYPES = ("float32", "float64")
# LSTM, float64; timed in the same rounds at 10x the steps
LINEARITY = Size(1000, 4, 16, 32, repeat=5, warmup=0, burst=1)
LINEARITY_FACTOR = 10
QUICK_REPEAT = 3


class Problem(NamedTuple):
    x: np.ndarray  # (T, B, I)
    out_grad: np.ndarray  # G in loss = sum(out * G)
    weights: dict[str, np.ndarray]  # weight_ih, weight_hh, bias_ih, bias_hh


def make_problem(cell: str, size: Size, dtype: str, seed: int = 0) -> Problem:
    """Random input, G, and weights drawn like PyTorch's init, U(-1/sqrt(H), 1/sqrt(H))."""
    rng = np.random.default_rng(seed)
    rows, bound = CELLS[cell][1] * size.hidden, 1 / np.sqrt(size.hidden)
    shapes = {"weight_ih": (rows, size.features), "weight_hh": (rows, size.hidden),
              "bias_ih": (rows,), "bias_hh": (rows,)}
    weights = {name: rng.uniform(-bound, bound, shape).astype(dtype) for name, shape in shapes.items()}
    x = rng.standard_normal((size.steps, size.batch, size.features)).astype(dtype)
    out_grad = rng.standard_normal((size.steps, size.batch, size.hidden)).astype(dtype)
    return Problem(x, out_grad, weights)


def ours_step(cell: str, problem: Problem, fused: bool = False) -> Callable[[], None]:
    """A training step of our layer holding ``problem``'s weights: the default (composed) layer,
    or with ``fused=True`` the fastest path the library offers."""
    features, hidden = problem.weights["weight_ih"].shape[1], problem.weights["weight_hh"].shape[1]
    layer = CELLS[cell][0](features, hidden, fused=fused).to(problem.x.dtype)
    layer.load_state_dict({f"{name}_l0": value for name, value in problem.weights.items()})
    x, out_grad = ts.tensor(problem.x), ts.tensor(problem.out_grad)

    def step() -> None:
        layer.zero_grad()
        out, _ = layer(x)
        (out * out_grad).sum().backward()

    return step


def numpy_step(cell: str, problem: Problem) -> Callable[[], None]:
    """The hand-written reference; no input gradient, as the other two do not compute one either."""
    bptt = BPTT[cell]
    return lambda: bptt(problem.x, problem.out_grad, **problem.weights, input_grad=False)


def torch_step(torch: Any, cell: str, problem: Problem) -> Callable[[], None]:
    """A training step of torch.nn.RNN/LSTM/GRU holding ``problem``'s weights."""
    features, hidden = problem.weights["weight_ih"].shape[1], problem.weights["weight_hh"].shape[1]
    kind = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    layer = kind(features, hidden, dtype=getattr(torch, problem.x.dtype.name))
    layer.load_state_dict({f"{name}_l0": torch.from_numpy(value) for name, value in problem.weights.items()})
    x, out_grad = torch.from_numpy(problem.x), torch.from_numpy(problem.out_grad)

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        out, _ = layer(x)
        (out * out_grad).sum().backward()

    return step


Key = TypeVar("Key")


def interleaved_medians(steps: dict[Key, Callable[[], None]], repeat: int, warmup: int = 0,
                        burst: int = 1) -> dict[Key, float]:
    """Median seconds per call of each function, over ``repeat`` rounds in which each function in
    turn runs ``warmup`` untimed calls and then ``burst`` timed ones, so a slow patch on a shared
    machine hits all of them alike. Why the warm-up: in a training loop a step runs after steps of
    its own, with the caches and branch predictors they trained, not after another library's. A small
    step is up to 30% faster after one of its own (numpy's tiny one most), and our layers, whose
    Python code is the largest, need about ten: measured on the tiny RNN float32 step, the fused layer's
    ratio to numpy was 1.80-1.84x after one untimed step, 1.66-1.69x after five, 1.50-1.71x after
    ten and 1.62x in blocks of 200 steps of each; numpy's own time moved 3-7%. A large step's time
    does not measurably depend on what ran before it. One untimed call of each first."""
    for fn in steps.values():
        fn()
    times: dict[Key, list[float]] = {name: [] for name in steps}
    for _ in range(repeat):
        for name, fn in steps.items():
            for _ in range(warmup):
                fn()
            for _ in range(burst):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in times.items()}


def peak_bytes(fn: Callable[[], None]) -> int:
    """Peak bytes allocated (numpy buffers and Python objects, via tracemalloc) during one call."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), run in a new Python process. Why: glibc's malloc tunes itself to the arrays a process
    has freed (it raises its mmap threshold to the largest), and a step's page faults depend on that.
    Measured in one process, numpy's GRU medium float32 step ran 19 ms right after the LSTM float64
    row and 22-24 ms before it, while ours and PyTorch's did not move: a row's ratios depended on the
    rows before it. Now a row's allocator has seen only the arrays of that row's shapes and dtype (its
    implementations still share the process, interleaved)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


@contextlib.contextmanager
def thread_count(threads: str) -> Iterator[None]:
    """BLAS (and torch, if imported) threads: "1", or the libraries' default. Set in each measuring
    process: threadpoolctl's and torch's limits do not carry into a spawned process."""
    if threads == "default":
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    with threadpool_limits(1):
        yield


def measure_row(cell: str, size_name: str, dtype: str, runs: int, threads: str) -> tuple[dict, dict]:
    """One table row: median seconds of a step of each implementation, and peak bytes of ours, fused
    and numpy's."""
    torch = optional("torch")
    problem = make_problem(cell, SIZES[size_name], dtype)
    steps = {"ours": ours_step(cell, problem), "fused": ours_step(cell, problem, fused=True),
             "numpy": numpy_step(cell, problem)}
    if torch is not None:
        steps["torch"] = torch_step(torch, cell, problem)
    with thread_count(threads):
        seconds = interleaved_medians(steps, runs, SIZES[size_name].warmup, SIZES[size_name].burst)
        peaks = {name: peak_bytes(steps[name]) for name in ("ours", "fused", "numpy")}
    return seconds, peaks


def run_table(sizes: list[str], cells: list[str], dtypes: list[str], repeat: int | None,
              threads: str) -> None:
    warmed = ", ".join(f"{name} after {size.warmup}" for name, size in SIZES.items() if size.warmup)
    print(f"one training step (forward + loss + backward to all weights), milliseconds, median "
          f"(steps timed after untimed ones of their own, {warmed}; each row in a new process); "
          "ours = the default layer, fused = fused=True; ratios are to the numpy BPTT (and torch), lower is "
          "better; peak = tracemalloc peak of one step, as a ratio to numpy's")
    header = (f"{'cell':5s} {'size':7s} {'dtype':8s} {'ours':>9s} {'fused':>9s} {'numpy':>9s} {'torch':>9s} "
              f"{'ours/np':>8s} {'fused/np':>8s} {'ours/pt':>8s} {'fused/pt':>8s}  {'peak numpy':>10s} "
              f"{'ours':>6s} {'fused':>6s}  runs")
    print(header)
    for size_name in sizes:
        runs = repeat or SIZES[size_name].repeat
        for cell in cells:
            for dtype in dtypes:
                t, peak = in_fresh_process(measure_row, cell, size_name, dtype, runs, threads)
                print(f"{cell:5s} {size_name:7s} {dtype:8s} {ms(t['ours']):>9s} {ms(t['fused']):>9s} "
                      f"{ms(t['numpy']):>9s} {ms(t.get('torch')):>9s} {ratio(t['ours'], t['numpy']):>8s} "
                      f"{ratio(t['fused'], t['numpy']):>8s} {ratio(t['ours'], t.get('torch')):>8s} "
                      f"{ratio(t['fused'], t.get('torch')):>8s}  {peak['numpy'] / 2**20:8.2f}MB "
                      f"{ratio(peak['ours'], peak['numpy']):>6s} {ratio(peak['fused'], peak['numpy']):>6s}  "
                      f"{runs * SIZES[size_name].burst}", flush=True)
    print("sizes (T, B, I, H): " + ", ".join(f"{name} {tuple(SIZES[name][:4])}" for name in sizes))


def linearity_medians(lengths: list[int], runs: int, threads: str) -> dict[tuple[str, int], float]:
    """Median seconds of one training step of our LSTM and of the numpy BPTT at each of ``lengths``
    time steps, all timed in the same rounds. Each sample covers the same number of time steps: a shorter
    sequence's step is timed ``longest // length`` times in a row. Why: this machine's slow patches
    last about a second, and a median of samples ten times shorter than the others' can pick the
    quiet moments between them, which a long sample cannot. Four alternating runs of each read
    0.99-1.19x (median 1.17x) with one step per sample and 1.04-1.13x (median 1.08x) with equal ones;
    ten short steps in a row also warm the caches for each other, as in a training loop."""
    longest = max(lengths)
    steps: dict[tuple[str, int], Callable[[], None]] = {}
    for length in lengths:
        problem = make_problem("lstm", LINEARITY._replace(steps=length), "float64")
        for name, step in (("ours", ours_step("lstm", problem)), ("numpy", numpy_step("lstm", problem))):
            steps[name, length] = _repeated(step, longest // length)
    with thread_count(threads):
        medians = interleaved_medians(steps, runs, LINEARITY.warmup, LINEARITY.burst)
    return {(name, length): seconds / (longest // length) for (name, length), seconds in medians.items()}


def _repeated(step: Callable[[], None], times: int) -> Callable[[], None]:
    """``step`` run ``times`` times in a row, as one call (one timed sample)."""
    if times == 1:
        return step

    def repeated() -> None:
        for _ in range(times):
            step()

    return repeated


def run_linearity(repeat: int | None, quick: bool, threads: str) -> None:
    """Our cost per time step at T and 10 T, and the numpy BPTT's, timed in the same rounds (a slow
    patch of a shared machine hits all alike); a ratio near 1.0 means BPTT is linear in T. numpy's
    says what the machine adds: its per-step arithmetic is the same at both lengths, but at 10 T a
    step's arrays no longer fit in the processor's caches."""
    size = LINEARITY
    print(f"\nLSTM float64 B={size.batch} I={size.features} H={size.hidden}, "
          f"microseconds per time step (forward + backward), ours and the numpy BPTT's:")
    lengths = [size.steps] if quick else [size.steps, size.steps * LINEARITY_FACTOR]
    seconds = in_fresh_process(linearity_medians, lengths, repeat or size.repeat, threads)
    for t in lengths:
        ours, numpy = (seconds[name, t] / t * 1e6 for name in ("ours", "numpy"))
        print(f"  T={t:>6,}: ours {ours:8.1f} us/step, numpy {numpy:8.1f} us/step  "
              f"({seconds['ours', t] * 1e3:.1f} ms per training step of ours)")
    if quick:
        print(f"  T={size.steps * LINEARITY_FACTOR:>6,}: skipped (--quick)")
    else:
        ratios = {name: seconds[name, lengths[1]] / seconds[name, lengths[0]] / LINEARITY_FACTOR
                  for name in ("ours", "numpy")}
        print(f"  ratio T={lengths[1]:,} / T={lengths[0]:,}: ours {ratios['ours']:.2f}, "
              f"numpy {ratios['numpy']:.2f} (1.0 = linear in T)")


def names(choices: Any, what: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated subset of ``choices``, in the order given."""
    def parse(text: str) -> list[str]:
        picked = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in picked if name not in choices]
        if unknown or not picked:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown) or repr(text)}; "
                                             f"expected a comma-separated subset of {', '.join(choices)}")
        return picked
    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=names(SIZES, "size"), default=list(SIZES),
                        help=f"comma-separated, from {','.join(SIZES)} (default: all)")
    parser.add_argument("--cells", type=names(CELLS, "cell"), default=list(CELLS),
                        help=f"comma-separated, from {','.join(CELLS)} (default: all)")
    parser.add_argument("--dtypes", type=names(DTYPES, "dtype"), default=list(DTYPES),
                        help=f"comma-separated, from {','.join(DTYPES)} (default: both)")
    parser.add_argument("--repeat", type=int, default=None,
                        help=f"rounds per measurement (default: per size, fewer for big sizes; a tiny round "
                             f"times {SIZES['tiny'].burst} steps of each implementation after "
                             f"{SIZES['tiny'].warmup} untimed ones)")
    parser.add_argument("--threads", choices=["1", "default"], default="1",
                        help="BLAS and torch threads: 1 (the default) or the libraries' default")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_REPEAT} rounds per measurement; skip the "
                             f"T={LINEARITY.steps * LINEARITY_FACTOR:,} run")
    args = parser.parse_args()
    if args.repeat is not None and args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    repeat = args.repeat or (QUICK_REPEAT if args.quick else None)

    torch = optional("torch")
    print(f"numpy {np.__version__}, torch {torch.__version__ if torch else 'not installed'}, "
          f"threads {args.threads}")
    run_table(args.sizes, args.cells, args.dtypes, repeat, args.threads)
    run_linearity(repeat, args.quick, args.threads)


if __name__ == "__main__":
    main()
