"""The ``tinygrad-seq`` command line (also ``python -m tinygrad_seq``).

Every subcommand reports bad options or paths as one line on stderr and exits with code 2:
option values are checked by argparse's types, and the library's ValueError / OSError raised by
what the user supplied (a path, a prime string, a picture too big to draw) become a ``CliError``
at the call that consumed that input; sizes too big for memory and Ctrl-C are one line too.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

import tinygrad_seq as ts

from .charlm import (
    RECURRENT_LAYERS,
    CharModel,
    DivergedError,
    encode,
    generate,
    load_checkpoint,
    progress_printer,
    save_checkpoint,
    train,
    vocabulary,
    zen_of_python,
)
from .nn import LSTM
from .progress import Progress

DEFAULT_OUT = "tinygrad_seq_out"
CHECKPOINT_NAME = "char_model.safetensors"  # what `train` writes and `sample` reads by default
DEMO_CHECKPOINT_NAME = "demo_char_lstm.safetensors"
CELLS = tuple(RECURRENT_LAYERS)
DEFAULT = " (default: %(default)s)"  # appended to option help
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class CliError(Exception):
    """A problem the user can fix; printed as one line, never a traceback."""


@contextmanager
def user_input(what: str) -> Iterator[None]:
    """Turn the ValueError / OSError that ``what`` (an input the user chose) raises into a CliError."""
    try:
        yield
    except OSError as err:
        raise CliError(f"{what}: {_reason(err)}") from err
    except (ValueError, ts.viz.RenderError) as err:
        raise CliError(f"{what}: {err}") from err


def _reason(err: OSError) -> str:
    return f"{err.strerror}: {err.filename}" if err.strerror and err.filename else str(err)


def error_table(report: Any) -> list[str]:
    """A gradcheck report's per-input rows: name, max abs error, max rel error, ok/WRONG."""
    width = max([len("tensor"), *(len(name) for name, *_ in report.per_tensor)])
    lines = [f"{'tensor':{width}s}  max abs error  max rel error"]
    lines += [f"{name:{width}s}  {max_abs:13.2e}  {max_rel:13.2e}  {'ok' if passed else 'WRONG'}"
              for name, max_abs, max_rel, passed in report.per_tensor]
    return lines


def command() -> str:
    """How to run this command line from the current folder, for the hints it prints.

    ``make demo`` installs the script into .venv/bin, which is not on PATH unless the venv is
    activated: then the hint names the script by its path (relative when under the current folder).
    Without an installed script, ``python -m`` with this interpreter works.
    """
    script = shutil.which("tinygrad-seq", path=sysconfig.get_path("scripts"))
    on_path = shutil.which("tinygrad-seq")
    if script and on_path and Path(on_path).resolve() == Path(script).resolve():
        return "tinygrad-seq"
    return _from_here(script) if script else f"{_from_here(sys.executable)} -m tinygrad_seq"


def _from_here(path: str) -> str:
    absolute = Path(os.path.abspath(path))  # not resolve(): a venv's python is a symlink to the base one
    return str(absolute.relative_to(Path.cwd())) if absolute.is_relative_to(Path.cwd()) else str(absolute)


# -- option types: argparse reports their errors as one line after the usage --------------------


def _number(convert: Callable[[str], Any], minimum: float, inclusive: bool, what: str
            ) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        # math.isfinite cannot take an int beyond a float's range: no count needs one anyway
        unbounded = abs(value) > sys.maxsize if isinstance(value, int) else not math.isfinite(value)
        if unbounded or not (value >= minimum if inclusive else value > minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1, True, "a positive integer")
non_negative_int = _number(int, 0, True, "an integer >= 0")
positive_float = _number(float, 0.0, False, "a finite number > 0")


def _at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2 (the first and last steps are kept), "
                                         f"got {text!r}")
    return value


def _non_empty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("expected at least one character to start from, got ''")
    return text


# -- shared pieces ---------------------------------------------------------------------------------


def _output_dir(path: str) -> Path:
    """Create the output folder now, so an unwritable one fails before any training."""
    out = Path(path)
    with user_input(f"cannot create the output folder {path!r}"):
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".tinygrad_seq_write_test"
        probe.touch()
        probe.unlink()
    return out


def _recurrent_layer(args: argparse.Namespace, batch_first: bool = False, bias: bool = True) -> Any:
    return RECURRENT_LAYERS[args.cell](args.input_size, args.hidden, num_layers=args.layers, bias=bias,
                                       batch_first=batch_first, bidirectional=args.bidirectional)


def _layer_inputs(layer: Any, steps: int, batch: int, batch_first: bool, dtype: type
                  ) -> tuple[Any, list[Any]]:
    """A random input sequence and random initial states (h0, and c0 for an LSTM), named."""
    rng = np.random.default_rng(0)
    shape = (batch, steps, layer.input_size) if batch_first else (steps, batch, layer.input_size)
    x = ts.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True).named("input")
    slots = layer.num_layers * (2 if layer.bidirectional else 1)
    states = [ts.tensor(0.5 * rng.standard_normal((slots, batch, layer.hidden_size)).astype(dtype),
                        requires_grad=True).named(name)
              for name in (("h0", "c0") if isinstance(layer, LSTM) else ("h0",))]
    return x, states


def _layer_call(layer: Any, each_call: Callable[[], None] = lambda: None) -> Callable[..., tuple[Any, Any]]:
    """``layer`` as a function of (x, h0) or (x, h0, c0): gradcheck passes it exactly as many
    tensors as it has positional parameters, the layer's parameters reach it as attributes.
    ``each_call`` runs before every call (gradcheck's progress)."""
    if isinstance(layer, LSTM):
        def lstm(x: Any, h0: Any, c0: Any) -> tuple[Any, Any]:
            each_call()
            return layer(x, (h0, c0))

        return lstm

    def rnn_or_gru(x: Any, h0: Any) -> tuple[Any, Any]:
        each_call()
        return layer(x, h0)

    return rnn_or_gru


# -- subcommands: each returns the exit code -------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # here, not at the top: the demo imports error_table from this module

    _output_dir(args.out)
    run_demo(out_dir=args.out, steps=args.steps, seed=args.seed)
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.text is None:
        text, source = zen_of_python(), "the Zen of Python"
    else:
        with user_input(f"cannot read --text {args.text!r}"):
            text = Path(args.text).read_text(encoding="utf-8")
        source = args.text
    needed = args.batch + 1
    if len(text) < needed:
        raise CliError(f"{source} has {len(text)} characters; --batch {args.batch} streams need at least "
                       f"{needed}")
    out = _output_dir(args.out)
    ts.manual_seed(args.seed)
    vocab = vocabulary(text)
    model = CharModel(len(vocab), args.hidden, cell=args.cell, layers=args.layers, embed=args.embed,
                      fused=args.fused)
    optimizer = ts.optim.Adam(model.parameters(), lr=args.lr)
    print(f"training a char-{args.cell.upper()} ({sum(p.size for p in model.parameters())} parameters) on "
          f"{source} ({len(text)} characters, {len(vocab)} distinct): {args.steps} steps of truncated BPTT "
          f"over {args.window} characters, {args.batch} streams, Adam lr={args.lr:g}, clip={args.clip:g}",
          flush=True)
    every = max(1, min(50, args.steps // 10))
    try:
        losses = train(model, encode(text, vocab), args.steps, window=args.window, batch=args.batch,
                       clip=args.clip, on_progress=progress_printer(args.steps, every), optimizer=optimizer)
    except DivergedError as err:
        raise CliError(f"the loss is {err.loss} at step {err.step}: training diverged, so nothing was "
                       f"saved; try a smaller --lr (now {args.lr:g}) or --clip (now {args.clip:g})") from err
    path = out / CHECKPOINT_NAME
    first_word = text.split(maxsplit=1)[0][:20] if text.strip() else text[0]  # `sample`'s default prime
    config = {"steps": args.steps, "window": args.window, "batch": args.batch, "lr": args.lr,
              "clip": args.clip, "seed": args.seed, "fused": args.fused, "text": source, "prime": first_word,
              "final_loss": losses[-1]}
    with user_input(f"cannot write {str(path)!r}"):
        save_checkpoint(path, model, optimizer, vocab, config)
    print(f"wrote {path}; generate text with: {command()} sample --checkpoint {path}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    if args.checkpoint == f"{DEFAULT_OUT}/{CHECKPOINT_NAME}" and not Path(args.checkpoint).exists():
        raise CliError(f"no checkpoint at {args.checkpoint!r} yet: train one with `{command()} train`, or "
                       f"pass --checkpoint {DEFAULT_OUT}/{DEMO_CHECKPOINT_NAME} (the demo's)")
    with user_input(f"cannot load --checkpoint {args.checkpoint!r}"):
        model, vocab, config = load_checkpoint(args.checkpoint)
    prime = args.prime if args.prime is not None else config.get("prime", vocab[0])
    with user_input("--prime"):
        characters = generate(model, vocab, prime, args.length, args.temperature,
                              np.random.default_rng(args.seed))
    print(prime, end="", flush=True)
    try:
        for character in characters:  # as they are drawn: a long sample shows its progress by growing
            print(character, end="", flush=True)
    except ValueError as err:  # a model whose weights are not finite (an OSError is stdout's: main's)
        raise CliError(f"--checkpoint {args.checkpoint!r}: {err}") from err
    print()
    return 0


def _gradcheck(args: argparse.Namespace) -> int:
    layer = _recurrent_layer(args, batch_first=args.batch_first, bias=not args.no_bias).double()
    x, states = _layer_inputs(layer, args.steps, args.batch, args.batch_first, np.float64)
    for name, param in layer.named_parameters():
        param.name = name
    inputs = [x, *states, *layer.parameters()]
    # the forward runs twice per central difference (per entry, or per tensor in fast mode) and twice
    # more for the analytic pass (a test keeps this count exact): large configurations take a while
    runs = 2 * (len(inputs) if args.fast else sum(tensor.size for tensor in inputs)) + 2
    with Progress(runs, desc="gradcheck", unit="run") as progress:
        report = ts.gradcheck(_layer_call(layer, progress.step), inputs, fast_mode=args.fast,
                              raise_exception=False)
    print(f"gradcheck {layer!r} on input {x.shape} ({report.settings})")
    print("\n".join(error_table(report)))
    if report:
        print(f"passed: backward agrees with finite differences for all {len(report.per_tensor)} inputs")
        return 0
    print(report)
    return 1


def _graph(args: argparse.Namespace) -> int:
    output = Path(args.output or f"{DEFAULT_OUT}/unrolled_{args.cell}.svg")
    layer = _recurrent_layer(args)
    x, states = _layer_inputs(layer, args.steps, 1, False, np.float32)
    output_seq, _ = _layer_call(layer)(x, *states)
    loss = (output_seq * output_seq).mean().named("loss")
    if args.grads:
        with ts.viz.record_grad_norms():
            loss.backward()
    with user_input(f"cannot draw the {args.level}-level picture"):
        try:
            picture = ts.viz.draw(loss, level=args.level, max_steps=args.max_steps, show_grads=args.grads,
                                  params=layer.named_parameters(prefix=args.cell))
        except ts.viz.PictureTooLargeError as err:  # advise this command's own options
            raise CliError(f"the {args.level}-level picture would have {err.nodes} nodes (at most "
                           f"{err.limit} are drawn): {err.advice(flags=True)}") from err
    _output_dir(str(output.parent))
    with user_input(f"cannot write --output {str(output)!r}"):
        ts.viz.save(picture, output)
    print(f"wrote {output}: {layer!r} unrolled over {args.steps} steps, {args.level} level"
          + (", coloured by gradient norm" if args.grads else ""))
    return 0


# -- the parser ------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is reported in one line like every other error (the usage it
    would print first is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_layer_options(parser: argparse.ArgumentParser, hidden: int, input_size: int, steps: int) -> None:
    parser.add_argument("--cell", choices=CELLS, default="lstm", help="recurrent cell" + DEFAULT)
    parser.add_argument("--layers", type=positive_int, default=1, help="stacked layers" + DEFAULT)
    parser.add_argument("--bidirectional", action="store_true", help="run each layer both ways")
    parser.add_argument("--hidden", type=positive_int, default=hidden, help="hidden size" + DEFAULT)
    parser.add_argument("--input-size", type=positive_int, default=input_size,
                        help="input features" + DEFAULT)
    parser.add_argument("--steps", type=positive_int, default=steps, help="time steps" + DEFAULT)


def _add_seed(parser: argparse.ArgumentParser) -> None:
    # numpy's generators take only integers >= 0: a negative seed is an option error, not a traceback
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed" + DEFAULT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinygrad-seq", description="Train, sample, check and draw small recurrent "
                                                      "networks; `demo` shows all of it in a minute.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="train a small recurrent net, check its gradients, show BPTT",
                               description="Train a character-level LSTM on embedded text, check its "
                                           "gradients against finite differences, and show how the "
                                           "gradient flows back through time.")
    demo.add_argument("--out", default=DEFAULT_OUT, help="folder for outputs" + DEFAULT)
    demo.add_argument("--steps", type=positive_int, default=300, help="training steps" + DEFAULT)
    _add_seed(demo)
    demo.set_defaults(run=_demo)

    train = commands.add_parser("train", help="train a character-level language model on a text file",
                                description="Train a character-level language model with truncated BPTT, "
                                            f"Adam and gradient clipping; writes OUT/{CHECKPOINT_NAME}.")
    train.add_argument("--text", help="UTF-8 text file to learn (default: the Zen of Python, built in)")
    train.add_argument("--cell", choices=CELLS, default="lstm", help="recurrent cell" + DEFAULT)
    train.add_argument("--hidden", type=positive_int, default=64, help="hidden size" + DEFAULT)
    train.add_argument("--layers", type=positive_int, default=1, help="stacked layers" + DEFAULT)
    train.add_argument("--embed", type=positive_int, default=16,
                       help="character embedding size" + DEFAULT)
    train.add_argument("--steps", type=positive_int, default=300, help="optimizer steps" + DEFAULT)
    train.add_argument("--window", type=positive_int, default=32,
                       help="truncated-BPTT window in characters" + DEFAULT)
    train.add_argument("--batch", type=positive_int, default=4,
                       help="parallel streams of the text" + DEFAULT)
    train.add_argument("--fused", action="store_true",
                       help="run each layer as one node with a hand-written BPTT: the same numbers, faster")
    train.add_argument("--lr", type=positive_float, default=1e-2, help="Adam learning rate" + DEFAULT)
    train.add_argument("--clip", type=positive_float, default=1.0,
                       help="max gradient norm" + DEFAULT)
    _add_seed(train)
    train.add_argument("--out", default=DEFAULT_OUT, help="folder for the checkpoint" + DEFAULT)
    train.set_defaults(run=_train)

    sample = commands.add_parser("sample", help="generate text from a trained checkpoint",
                                 description="Generate text from a checkpoint written by `train` or `demo`.")
    sample.add_argument("--checkpoint", default=f"{DEFAULT_OUT}/{CHECKPOINT_NAME}",
                        help="checkpoint to load" + DEFAULT)
    sample.add_argument("--temperature", type=positive_float, default=0.8,
                        help="softmax temperature: lower is safer, higher more varied" + DEFAULT)
    sample.add_argument("--prime", type=_non_empty,
                        help="text to start from (default: the start of the training text)")
    sample.add_argument("--length", type=non_negative_int, default=200,
                        help="characters to generate after the prime" + DEFAULT)
    _add_seed(sample)
    sample.set_defaults(run=_sample)

    gradcheck = commands.add_parser("gradcheck", help="check a recurrent layer's gradients numerically",
                                    description="Compare backward() of a float64 recurrent layer with "
                                                "central finite differences, for the input, the initial "
                                                "state and every parameter; exit 1 if any disagree.")
    _add_layer_options(gradcheck, hidden=3, input_size=2, steps=3)
    gradcheck.add_argument("--batch", type=positive_int, default=2, help="batch size" + DEFAULT)
    gradcheck.add_argument("--batch-first", action="store_true", help="input shaped (batch, steps, features)")
    gradcheck.add_argument("--no-bias", action="store_true", help="layers without biases")
    gradcheck.add_argument("--fast", action="store_true",
                           help="one random directional derivative per tensor instead of every entry")
    gradcheck.set_defaults(run=_gradcheck)

    graph = commands.add_parser("graph", help="draw an unrolled recurrent layer to a file",
                                description="Draw the unrolled graph of a recurrent layer on a random "
                                            "sequence (Graphviz's `dot` renders .svg/.png/.pdf; .dot "
                                            "writes the source).")
    _add_layer_options(graph, hidden=4, input_size=3, steps=4)
    graph.add_argument("--level", choices=("op", "cell", "layer"), default="cell",
                       help="detail: every op, a box per time step, or a box per layer" + DEFAULT)
    graph.add_argument("--max-steps", type=_at_least_two,
                       help="keep only the first and last steps, one box for the rest")
    graph.add_argument("--output", help="picture file; the suffix picks the format: .svg, .png, .pdf or .dot "
                                        f"(default: {DEFAULT_OUT}/unrolled_<cell>.svg)")
    graph.add_argument("--grads", action="store_true", help="run backward and colour by gradient norm")
    graph.set_defaults(run=_graph)
    for subparser in commands.choices.values():
        subparser.set_defaults(parser=subparser)  # so main() reports stray arguments against their command
    return parser


def _blas_threads() -> AbstractContextManager[Any]:
    """One BLAS thread unless the user chose a number (the THREAD_VARIABLES): on the command line's
    small matrices extra threads only wait on each other (on 2 cores the demo took 20 s, not 8).
    threadpoolctl comes with the ``cli`` extra; without it BLAS keeps its default."""
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(1)


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        with _blas_threads():
            return args.run(args)
    except CliError as err:
        print(f"tinygrad-seq {args.command}: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:  # sizes the user chose: --hidden, --layers, --steps, --batch ...
        print(f"tinygrad-seq {args.command}: out of memory ({err}); choose smaller sizes", file=sys.stderr)
        return 2
    except OSError as err:  # writing the outputs: a full disk, say (each file is written whole or not at all)
        print(f"tinygrad-seq {args.command}: could not write the outputs: {_reason(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinygrad-seq {args.command}: interrupted", file=sys.stderr)
        return 130  # the shell's code for Ctrl-C
