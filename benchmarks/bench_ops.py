"""Per-op cost (forward + backward, microseconds, tiny arrays) and a 10,000-step tanh chain,
side by side with HIPS autograd and PyTorch when they are installed, in one process.

    python benchmarks/bench_ops.py [--repeat 7] [--threads 1|default]

Numbers are medians of repeated runs; read the ratio columns, not the absolute times: the
machine is shared and noisy, but the frameworks are measured in the same run, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import checkout  # noqa: F401  (first: the package of this checkout, not the venv's)
import numpy as np

import tinygrad_seq as ts

SHAPE = (4, 8)
CHAIN_STEPS = 10_000


def median_seconds(fn: Callable[[], object], repeat: int, inner: int) -> float:
    """Median over ``repeat`` runs of the mean time of ``inner`` calls."""
    fn()  # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


# Each op: (name, number of inputs, our version, HIPS autograd's (given autograd.numpy as
# ``anp``), torch's). Inputs are positive, so every op is defined and away from kinks.
OPS = [
    ("add", 2, lambda a, b: a + b, lambda anp, a, b: a + b, lambda a, b: a + b),
    ("mul", 2, lambda a, b: a * b, lambda anp, a, b: a * b, lambda a, b: a * b),
    ("div", 2, lambda a, b: a / b, lambda anp, a, b: a / b, lambda a, b: a / b),
    ("matmul", 2, lambda a, b: a @ b.T, lambda anp, a, b: a @ b.T, lambda a, b: a @ b.T),
    ("exp", 1, lambda a: a.exp(), lambda anp, a: anp.exp(a), lambda a: a.exp()),
    ("tanh", 1, lambda a: a.tanh(), lambda anp, a: anp.tanh(a), lambda a: a.tanh()),
    ("sigmoid", 1, lambda a: a.sigmoid(), lambda anp, a: 1 / (1 + anp.exp(-a)), lambda a: a.sigmoid()),
    ("relu", 1, lambda a: a.relu(), lambda anp, a: anp.maximum(a, 0), lambda a: a.relu()),
    ("sum(dim=1)", 1, lambda a: a.sum(1), lambda anp, a: anp.sum(a, 1), lambda a: a.sum(1)),
    ("getitem[:, 2:6]", 1, lambda a: a[:, 2:6], lambda anp, a: a[:, 2:6], lambda a: a[:, 2:6]),
    ("reshape", 1, lambda a: a.reshape(8, 4), lambda anp, a: anp.reshape(a, (8, 4)),
     lambda a: a.reshape(8, 4)),
    ("softmax", 1, lambda a: a.softmax(1), None, lambda a: a.softmax(1)),
]


def bench_ours(fn: Callable, n_inputs: int, repeat: int) -> float:
    rng = np.random.default_rng(0)
    xs = [ts.tensor(rng.random(SHAPE) + 0.5, requires_grad=True) for _ in range(n_inputs)]
    g = None

    def step() -> None:
        nonlocal g
        y = fn(*xs)
        if g is None:
            g = np.ones(y.shape)
        y.backward(g)

    return median_seconds(step, repeat, 2000)


def bench_hips(fn: Callable, n_inputs: int, repeat: int) -> float:
    import autograd
    import autograd.numpy as anp

    rng = np.random.default_rng(0)
    xs = [rng.random(SHAPE) + 0.5 for _ in range(n_inputs)]
    gradient = autograd.grad(lambda *a: anp.sum(fn(anp, *a)), argnum=list(range(n_inputs)))
    return median_seconds(lambda: gradient(*xs), repeat, 500)


def bench_torch(torch, fn: Callable, n_inputs: int, repeat: int) -> float:  # noqa: ANN001
    rng = np.random.default_rng(0)
    xs = [torch.tensor(rng.random(SHAPE) + 0.5, requires_grad=True) for _ in range(n_inputs)]
    g = None

    def step() -> None:
        nonlocal g
        y = fn(*xs)
        if g is None:
            g = torch.ones_like(y)
        y.backward(g)

    return median_seconds(step, repeat, 2000)


def chain_ours() -> None:
    x = ts.tensor(np.full(16, 0.5), requires_grad=True)
    h = x
    for _ in range(CHAIN_STEPS):
        h = h.tanh()
    h.sum().backward()


def chain_hips() -> None:
    import autograd
    import autograd.numpy as anp

    def f(x):  # noqa: ANN001, ANN202
        for _ in range(CHAIN_STEPS):
            x = anp.tanh(x)
        return anp.sum(x)

    autograd.grad(f)(np.full(16, 0.5))


def chain_torch(torch) -> None:  # noqa: ANN001
    x = torch.full((16,), 0.5, dtype=torch.float64, requires_grad=True)
    h = x
    for _ in range(CHAIN_STEPS):
        h = h.tanh()
    h.sum().backward()


def optional(name: str):  # noqa: ANN201
    try:
        return __import__(name)
    except ImportError:
        return None


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:9.1f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:6.2f}x"


def run(repeat: int) -> None:
    torch = optional("torch")
    hips = optional("autograd")
    print(f"per-op forward+backward on float64 {SHAPE}, microseconds (median of {repeat}); "
          f"ratios are ours / theirs, lower is better")
    print(f"{'op':18s} {'ours':>9s} {'autograd':>9s} {'torch':>9s} {'vs autograd':>11s} {'vs torch':>9s}")
    for name, n, ours, hips_fn, torch_fn in OPS:
        t_ours = bench_ours(ours, n, repeat)
        t_hips = bench_hips(hips_fn, n, repeat) if hips is not None and hips_fn is not None else None
        t_torch = bench_torch(torch, torch_fn, n, repeat) if torch is not None else None
        print(f"{name:18s} {fmt(t_ours)} {fmt(t_hips)} {fmt(t_torch)} {ratio(t_ours, t_hips):>11s} "
              f"{ratio(t_ours, t_torch):>9s}")
    t_ours = median_seconds(chain_ours, repeat, 1)
    t_hips = median_seconds(chain_hips, repeat, 1) if hips is not None else None
    t_torch = median_seconds(lambda: chain_torch(torch), repeat, 1) if torch is not None else None
    print(f"\n{CHAIN_STEPS}-step tanh chain (forward + backward), milliseconds:")
    print(f"  ours {t_ours * 1e3:.1f}   autograd {'-' if t_hips is None else f'{t_hips * 1e3:.1f}'}"
          f"   torch {'-' if t_torch is None else f'{t_torch * 1e3:.1f}'}   "
          f"ours/autograd {ratio(t_ours, t_hips)}   ours/torch {ratio(t_ours, t_torch)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", choices=["1", "default"], default="1",
                        help="BLAS threads: 1 (small shapes usually run faster) or the library default")
    args = parser.parse_args()
    if args.threads == "1":
        from threadpoolctl import threadpool_limits

        torch = optional("torch")
        if torch is not None:
            torch.set_num_threads(1)
        with threadpool_limits(1):
            run(args.repeat)
    else:
        run(args.repeat)


if __name__ == "__main__":
    main()
