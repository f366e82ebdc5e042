"""The command line and the demo, run as a user would: in a subprocess, then reading the files.

Slow paths (training, the demo) run once in a subprocess; the many error cases call ``cli.main``
in-process, which is the same code minus the interpreter start-up.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import tinygrad_seq as ts
from tinygrad_seq import charlm, cli
from tinygrad_seq.demo import run_demo
from tinygrad_seq.gradcheck import GradcheckReport
from tinygrad_seq.progress import Progress

HAS_DOT = shutil.which("dot") is not None
PROGRESS = re.compile(r"step +(\d+) +loss ([\d.]+) +perplexity +([\d.]+)")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinygrad_seq", *args], capture_output=True, text=True,
                          timeout=300)


def run_main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """cli.main in-process: (exit code, stdout, stderr), argparse's own exits included."""
    try:
        code = cli.main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, command: str, *fragments: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tinygrad-seq {command}: "), err
    for fragment in fragments:
        assert fragment in lines[0]


# -- demo -------------------------------------------------------------------------------------------


def test_demo_subprocess_writes_its_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = run_cli("demo", "--steps", "60", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "perplexity" in result.stdout and "max abs error" in result.stdout
    assert "passed: backward agrees with finite differences" in result.stdout
    out = tmp_path / "out"
    assert len((out / "demo_sample.txt").read_text()) == len("Beautiful") + 160
    flow = np.loadtxt(out / "demo_gradient_flow.csv", delimiter=",", skiprows=1)
    assert flow.shape == (32, 2) and np.all(flow[:, 1] > 0)
    assert ts.load(out / "demo_char_lstm.safetensors")["model"]["rnn.weight_hh_l0"].shape == (4 * 64, 64)
    model, vocab, config = charlm.load_checkpoint(out / "demo_char_lstm.safetensors")  # `sample` reads it too
    assert vocab == charlm.vocabulary(charlm.zen_of_python()) and config["cell"] == "lstm"
    code, sampled, err = run_main(capsys, "sample", "--checkpoint", str(out / "demo_char_lstm.safetensors"),
                                  "--length", "20")
    assert code == 0 and len(sampled) == len("Beautiful") + 20 + 1, err  # the demo's prime, then a newline
    if HAS_DOT:
        svg = ET.parse(out / "demo_unrolled_lstm.svg").getroot()
        source = (out / "demo_unrolled_lstm.svg").read_text()
        assert svg.tag.endswith("svg") and "t=0" in source and "gradient norm" in source
    else:
        assert "digraph" in (out / "demo_unrolled_lstm.dot").read_text()
    if importlib.util.find_spec("matplotlib"):
        assert (out / "demo_gradient_flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_learns_and_its_gradients_check(tmp_path: Path) -> None:
    result = run_demo(out_dir=str(tmp_path), steps=150, hidden=32)
    assert result["last_loss"] < 0.75 * result["first_loss"]
    assert result["gradcheck_passed"]
    norms = result["grad_norms"]
    assert norms[-1] > norms[0]  # the gradient of a last-step loss fades going back in time


# -- help -------------------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("demo", "train", "sample", "gradcheck", "graph"):
        assert command in result.stdout


@pytest.mark.parametrize("command, option", [("demo", "--steps"), ("train", "--text"), ("sample", "--prime"),
                                             ("gradcheck", "--no-bias"), ("graph", "--level")])
def test_each_command_has_help(capsys: pytest.CaptureFixture, command: str, option: str) -> None:
    code, out, _ = run_main(capsys, command, "--help")
    assert code == 0 and f"usage: tinygrad-seq {command}" in out and option in out


# -- train and sample -------------------------------------------------------------------------------


def test_train_writes_a_checkpoint_that_sample_reads(tmp_path: Path) -> None:
    trained = run_cli("train", "--steps", "40", "--hidden", "24", "--window", "16", "--out", str(tmp_path))
    assert trained.returncode == 0, trained.stderr
    progress = [(int(step), float(loss), float(ppl)) for step, loss, ppl in PROGRESS.findall(trained.stdout)]
    assert [step for step, _, _ in progress] == list(range(4, 41, 4))
    assert all(ppl == pytest.approx(np.exp(loss), rel=5e-3) for _, loss, ppl in progress)
    assert progress[-1][1] < 0.8 * progress[0][1]  # the loss falls

    path = tmp_path / "char_model.safetensors"
    saved = ts.load(path)
    assert set(saved) == {"model", "optimizer", "vocab", "config"}
    assert saved["vocab"] == charlm.vocabulary(charlm.zen_of_python())
    model, vocab, config = charlm.load_checkpoint(path)
    assert {key: config[key] for key in charlm.ARCHITECTURE_KEYS} == {"cell": "lstm", "hidden": 24,
                                                                     "layers": 1, "embed": 16}
    assert config["steps"] == 40 and config["prime"] == "The"
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(array, saved["model"][name])

    sampled = run_cli("sample", "--checkpoint", str(path), "--prime", "Beautiful", "--length", "70",
                      "--temperature", "0.5", "--seed", "3")
    assert sampled.returncode == 0, sampled.stderr
    text = sampled.stdout.removesuffix("\n")
    assert len(text) == len("Beautiful") + 70 and text.startswith("Beautiful")
    assert set(text) <= set(vocab)
    default_prime = run_cli("sample", "--checkpoint", str(path), "--length", "5")
    assert default_prime.stdout.startswith("The") and len(default_prime.stdout) == len("The") + 5 + 1


def test_the_printed_sample_command_runs_with_the_venv_off_path(tmp_path: Path) -> None:
    """After `make demo` the script sits in .venv/bin, not on PATH: the hint must still work as printed."""
    package_root = str(Path(cli.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": package_root,
           "PATH": os.pathsep.join(part for part in os.environ.get("PATH", "").split(os.pathsep)
                                   if shutil.which("tinygrad-seq", path=part) is None)}
    trained = subprocess.run([sys.executable, "-m", "tinygrad_seq", "train", "--steps", "2", "--hidden", "8"],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr
    hint = trained.stdout.rsplit("generate text with: ", 1)[1].strip()
    sampled = subprocess.run(f"{hint} --length 5", shell=True, capture_output=True, text=True, timeout=300,
                             cwd=tmp_path, env=env)
    assert sampled.returncode == 0, (hint, sampled.stderr)
    assert len(sampled.stdout) == len("The") + 5 + 1


def test_command_names_the_script_as_the_user_can_run_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    scripts = tmp_path / ".venv" / "bin"
    scripts.mkdir(parents=True)
    monkeypatch.setattr(cli.sysconfig, "get_path", lambda name: str(scripts))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "")
    assert cli.command() == f"{sys.executable} -m tinygrad_seq"  # no script installed
    (scripts / "tinygrad-seq").write_text("#!/bin/sh\n")
    (scripts / "tinygrad-seq").chmod(0o755)
    assert cli.command() == os.path.join(".venv", "bin", "tinygrad-seq")  # installed, venv not activated
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert cli.command() == str(scripts / "tinygrad-seq")  # from outside the repo: the full path
    monkeypatch.setenv("PATH", str(scripts))
    assert cli.command() == "tinygrad-seq"  # activated


def test_train_on_a_user_text_with_a_gru(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text_file = tmp_path / "abc.txt"
    text_file.write_text("abcd" * 60)
    code, out, err = run_main(capsys, "train", "--text", str(text_file), "--cell", "gru", "--layers", "2",
                              "--hidden", "8", "--embed", "4", "--steps", "5", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert f"on {text_file} (240 characters, 4 distinct)" in out
    model, vocab, config = charlm.load_checkpoint(tmp_path / "o" / "char_model.safetensors")
    assert vocab == "abcd" and isinstance(model.rnn, ts.nn.GRU) and model.rnn.num_layers == 2
    assert config["text"] == str(text_file)


def test_train_fused_learns_the_same_as_composed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    losses = []
    for flags in ([], ["--fused"]):
        out = tmp_path / ("fused" if flags else "composed")
        code, _, err = run_main(capsys, "train", *flags, "--steps", "6", "--hidden", "8", "--embed", "4",
                                "--out", str(out))
        assert code == 0, err
        model, _, config = charlm.load_checkpoint(out / "char_model.safetensors")
        assert config["fused"] == bool(flags) and not model.rnn.fused  # a run-time choice, not architecture
        losses.append(config["final_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)  # float32, six Adam steps apart


def test_charlm_train_learns_a_periodic_text() -> None:
    """'abcd' repeated is fully predictable after one character: the loss must approach zero."""
    ts.manual_seed(0)
    model = charlm.CharModel(4, 16, cell="rnn", embed=4)
    losses = charlm.train(model, np.tile(np.arange(4), 100), steps=60, window=8, batch=4, lr=3e-2)
    assert len(losses) == 60
    assert losses[0] > 1.0 and max(losses[-5:]) < 0.1  # ln 4 = 1.39 at chance


def test_checkpoint_round_trip_predicts_the_same(tmp_path: Path) -> None:
    ts.manual_seed(1)
    model = charlm.CharModel(5, 6, cell="gru", layers=2, embed=3)
    optimizer = ts.optim.Adam(model.parameters(), lr=1e-2)
    charlm.train(model, np.arange(50) % 5, steps=2, window=4, batch=2, optimizer=optimizer)
    charlm.save_checkpoint(tmp_path / "m.safetensors", model, optimizer, "abcde", {"note": "x", "hidden": 99})
    loaded, vocab, config = charlm.load_checkpoint(tmp_path / "m.safetensors")
    ids = np.array([[0], [3], [1]])
    np.testing.assert_array_equal(loaded(ids)[0].numpy(), model(ids)[0].numpy())
    assert vocab == "abcde" and config == {"note": "x", "cell": "gru", "hidden": 6, "layers": 2, "embed": 3}
    assert ts.load(tmp_path / "m.safetensors")["optimizer"]["state"][0]["step"] == 2


def test_load_checkpoint_rejects_a_plain_state_dict(tmp_path: Path) -> None:
    ts.save(charlm.CharModel(3, 4).state_dict(), tmp_path / "flat.safetensors")
    expected = r"not a char-model checkpoint: missing model, optimizer, vocab, config \(found embed.weight, "
    with pytest.raises(ValueError, match=expected + r".* and 3 more\)"):
        charlm.load_checkpoint(tmp_path / "flat.safetensors")


def test_sample_is_reproducible_and_checks_the_prime() -> None:
    ts.manual_seed(2)
    model = charlm.CharModel(3, 5)
    first = charlm.sample(model, "abc", "ab", 12, 1.0, np.random.default_rng(7))
    assert len(first) == 14 and first.startswith("ab") and set(first) <= set("abc")
    assert charlm.sample(model, "abc", "ab", 12, 1.0, np.random.default_rng(7)) == first
    with pytest.raises(ValueError, match="not in the model's vocabulary: 'x', 'z'"):
        charlm.sample(model, "abc", "zax", 3, 1.0, np.random.default_rng(0))


def test_generate_checks_at_once_and_leaves_grad_mode_alone() -> None:
    ts.manual_seed(2)
    model = charlm.CharModel(3, 5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        charlm.generate(model, "abc", "ab", 3, 0.0, np.random.default_rng(0))  # before any next()
    characters = charlm.generate(model, "abc", "ab", 12, 1.0, np.random.default_rng(7))
    first = next(characters)
    assert ts.is_grad_enabled()  # between characters, the caller's code runs with its own grad mode
    assert "ab" + first + "".join(characters) == charlm.sample(model, "abc", "ab", 12, 1.0,
                                                                np.random.default_rng(7))


# -- gradcheck --------------------------------------------------------------------------------------


def test_gradcheck_prints_a_row_per_tensor_and_passes() -> None:
    result = run_cli("gradcheck", "--cell", "lstm", "--layers", "2", "--bidirectional", "--batch-first",
                     "--steps", "2")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.endswith((" ok", " WRONG"))]
    layer = ts.nn.LSTM(2, 3, num_layers=2, bidirectional=True)
    assert [row[0] for row in rows] == ["input", "h0", "c0", *(name for name, _ in layer.named_parameters())]
    assert all(row[-1] == "ok" and float(row[1]) < 1e-6 for row in rows)


def test_gradcheck_fast_without_bias(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_main(capsys, "gradcheck", "--cell", "rnn", "--no-bias", "--fast")
    assert code == 0 and "fast mode" in out
    names = [line.split()[0] for line in out.splitlines() if line.endswith(" ok")]
    assert names == ["input", "h0", "weight_ih_l0", "weight_hh_l0"]


@pytest.mark.parametrize("options", [["--cell", "lstm"], ["--cell", "gru", "--layers", "2", "--fast"]])
def test_gradcheck_progress_bar_counts_every_run(capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch, options: list[str]) -> None:
    """The bar's total is the number of forward runs a passing check makes, so it ends at 100%."""
    bars = []

    class Recorder(Progress):
        def __init__(self, total: int, **kwargs: str) -> None:
            super().__init__(total, **kwargs)
            self.total, self.steps = total, 0
            bars.append(self)

        def step(self, **latest: float) -> None:
            self.steps += 1

    monkeypatch.setattr(cli, "Progress", Recorder)
    code, _, _ = run_main(capsys, "gradcheck", *options)
    assert code == 0 and len(bars) == 1 and bars[0].steps == bars[0].total


def test_gradcheck_failure_exits_1(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(fn, inputs, **options) -> GradcheckReport:
        rows = [("input", 1e-9, 1e-8, True), ("weight_hh_l0", 0.5, 0.9, False)]
        return GradcheckReport(False, [], rows, None, [], "could not localise: test", "fake settings", 2)

    monkeypatch.setattr(ts, "gradcheck", failing)
    code, out, _ = run_main(capsys, "gradcheck", "--cell", "gru", "--fast")
    assert code == 1
    assert re.search(r"weight_hh_l0 +5\.00e-01 +9\.00e-01 +WRONG", out)
    assert "could not localise: test" in out


# -- graph ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's `dot` program is not installed: no SVG to render")
def test_graph_writes_an_svg_coloured_by_gradients(tmp_path: Path) -> None:
    output = tmp_path / "pics" / "gru.svg"
    result = run_cli("graph", "--cell", "gru", "--steps", "5", "--max-steps", "4", "--grads",
                     "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert ET.parse(output).getroot().tag.endswith("svg")
    svg = output.read_text()
    assert "t=0" in svg and "t=4" in svg and "gradient norm" in svg


def test_graph_dot_source_needs_no_graphviz(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "rnn.dot"
    code, out, err = run_main(capsys, "graph", "--cell", "rnn", "--level", "op", "--layers", "2",
                              "--bidirectional", "--steps", "3", "--output", str(output))
    assert code == 0, err
    source = output.read_text()
    assert source.startswith("digraph") and "t=0" in source and "t=2" in source
    assert "rnn.weight_hh_l1" in source


def test_graph_without_dot_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ts.viz.shutil, "which", lambda name: None)
    code, _, err = run_main(capsys, "graph", "--output", str(tmp_path / "lstm.svg"))
    assert_one_line_error(code, err, "graph", "needs the Graphviz 'dot' program")
    assert (tmp_path / "lstm.dot").read_text().startswith("digraph")


# -- bad options and paths --------------------------------------------------------------------------


def test_bad_option_is_one_line_and_nonzero() -> None:
    result = run_cli("demo", "--steps", "many")
    assert_one_line_error(result.returncode, result.stderr, "demo", "--steps", "expected", "--help")


def test_bad_paths_in_a_real_process(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 40)
    result = run_cli("sample", "--checkpoint", str(corrupt))
    assert_one_line_error(result.returncode, result.stderr, "sample", "corrupt.safetensors")
    result = run_cli("train", "--text", str(tmp_path / "missing.txt"))
    assert_one_line_error(result.returncode, result.stderr, "train", "No such file", "missing.txt")


@pytest.mark.parametrize("args, fragments", [
    (["train", "--steps", "-3"], ["--steps", "positive integer", "'-3'"]),
    (["train", "--lr", "0"], ["--lr", "> 0"]),
    (["train", "--lr", "inf"], ["--lr", "finite"]),
    (["train", "--hidden"], ["--hidden", "expected one argument"]),
    (["train", "--colour", "red"], ["unrecognized arguments: --colour red"]),
    (["train", "--cell", "transformer"], ["--cell", "invalid choice"]),
    (["sample", "--temperature", "0"], ["--temperature", "> 0"]),
    (["sample", "--length", "-1"], ["--length", ">= 0"]),
    (["sample", "--length", "9" * 400], ["--length", ">= 0", "9999"]),
    (["train", "--steps", "9" * 400], ["--steps", "positive integer"]),
    (["demo", "--seed", "-1"], ["--seed", ">= 0", "'-1'"]),
    (["train", "--seed", "-1"], ["--seed", ">= 0", "'-1'"]),
    (["sample", "--seed", "-1"], ["--seed", ">= 0", "'-1'"]),
    (["sample", "--prime", ""], ["--prime", "at least one character"]),
    (["gradcheck", "--hidden", "0"], ["--hidden", "positive integer"]),
    (["graph", "--max-steps", "1"], ["--max-steps", ">= 2"]),
    (["graph", "--level", "pixel"], ["--level", "invalid choice"]),
])
def test_bad_option_values(capsys: pytest.CaptureFixture, args: list[str], fragments: list[str]) -> None:
    code, _, err = run_main(capsys, *args)
    assert_one_line_error(code, err, args[0], "error: ", *fragments, f"(see tinygrad-seq {args[0]} --help)")


def test_missing_command_is_one_line(capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_main(capsys)
    assert code == 2 and err == "tinygrad-seq: error: the following arguments are required: COMMAND " \
                                "(see tinygrad-seq --help)\n"


def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # `sample` with no --checkpoint looks in ./tinygrad_seq_out/
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    plain = tmp_path / "plain.safetensors"
    ts.save({"w": np.ones(2, np.float32)}, plain)
    ts.manual_seed(0)
    model = charlm.CharModel(3, 4)
    checkpoint = tmp_path / "abc.safetensors"
    charlm.save_checkpoint(checkpoint, model, ts.optim.Adam(model.parameters()), "abc")
    cases = [
        (["train", "--text", str(a_file)], ["has 0 characters"]),
        (["train", "--batch", "5000"], ["the Zen of Python has", "--batch 5000 streams need at least 5001"]),
        (["train", "--text", str(tmp_path)], ["cannot read --text", "Is a directory"]),
        (["train", "--out", str(a_file / "sub")], ["cannot create the output folder", "Not a directory"]),
        (["demo", "--out", str(a_file / "sub")], ["cannot create the output folder"]),
        (["sample", "--checkpoint", str(tmp_path / "none.safetensors")], ["No such file or directory"]),
        (["sample"], ["no checkpoint at 'tinygrad_seq_out/char_model.safetensors' yet", "tinygrad-seq train",
                      "demo_char_lstm.safetensors"]),
        (["sample", "--checkpoint", str(plain)], ["not a char-model checkpoint", "missing model"]),
        (["sample", "--checkpoint", str(checkpoint), "--prime", "abXYa"], ["--prime", "'X', 'Y'"]),
        (["graph", "--output", str(tmp_path / "p.jpg")], ["cannot infer the format", ".svg"]),
        (["graph", "--output", str(a_file / "p.svg")], ["cannot create the output folder"]),
        (["graph", "--level", "op", "--steps", "300", "--output", str(tmp_path / "big.dot")],
         ["nodes", "Use --level cell or --level layer", "--max-steps 10"]),
    ]
    for args, fragments in cases:
        code, _, err = run_main(capsys, *args)
        assert_one_line_error(code, err, args[0], *fragments)


def test_progress_bar_in_a_terminal_and_plain_lines_in_logs(monkeypatch, capsys) -> None:
    losses = [3.0, 2.0, 1.0, 0.5]
    report = charlm.progress_printer(steps=4, every=2)  # pytest's stderr is not a terminal: lines only
    for step in range(1, 5):
        report(step, losses[:step])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split()[1] for line in lines] == ["2", "4"] and "perplexity" in lines[-1]
    assert re.search(r"\(\d+\.\ds\)$", lines[-1]) and captured.err == ""

    tqdm = pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # where tqdm draws
    with Progress(3, desc="demo") as progress:
        assert isinstance(progress._bar, tqdm.tqdm)
        progress.step(loss=0.5)
        progress.log("a line that stays")
    assert progress._bar is None  # closed: the bar is cleared, the lines stay
    assert "a line that stays" in capsys.readouterr().out


def test_one_blas_thread_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    for name in cli.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with cli._blas_threads() as limiter:
        assert isinstance(limiter, threadpoolctl.threadpool_limits)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with cli._blas_threads() as limiter:
        assert limiter is None


@pytest.mark.parametrize("error, code, message", [
    (MemoryError("596 GiB"), 2, "out of memory (596 GiB); choose smaller sizes"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (OSError(28, "No space left on device", "out/demo_sample.txt"), 2,
     "could not write the outputs: No space left on device: out/demo_sample.txt"),
])
def test_fatal_errors_are_one_line(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                     error: BaseException, code: int, message: str) -> None:
    """Faked: a real 600 GiB request would succeed lazily where memory is overcommitted."""
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(cli, "_recurrent_layer", fail)
    exit_code, _, err = run_main(capsys, "gradcheck", "--hidden", "400000")
    assert (exit_code, err) == (code, f"tinygrad-seq gradcheck: {message}\n")


def test_unwritable_output_folder_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Faked with a PermissionError: as root (CI) a read-only mode does not stop writes."""
    def refuse(path: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "touch", refuse)
    for command in ("demo", "train"):
        code, out, err = run_main(capsys, command, "--out", str(tmp_path / "locked"))
        assert_one_line_error(code, err, command, "cannot create the output folder", "Permission denied")
        assert "step" not in out  # nothing trained


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on the way to nan
def test_a_diverging_run_stops_with_one_line_and_saves_nothing(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_main(capsys, "train", "--steps", "5", "--lr", "1e300", "--hidden", "8",
                              "--embed", "4", "--out", str(tmp_path))
    assert_one_line_error(code, err.splitlines()[-1] + "\n", "train", "the loss is nan at step 2",
                          "nothing was saved", "--lr (now 1e+300)")
    assert not (tmp_path / "char_model.safetensors").exists()
    for steps in (5, 1):  # (one step: its own update made the weights nan, after a finite loss)
        with pytest.raises(charlm.DivergedError, match="the loss is nan at step 2"):
            ts.manual_seed(0)
            charlm.train(charlm.CharModel(4, 8), np.arange(40) % 4, steps=steps, window=4, batch=2, lr=1e300)


def test_progress_shows_a_huge_perplexity_without_overflowing(capsys: pytest.CaptureFixture) -> None:
    report = charlm.progress_printer(2, every=1)
    report(1, [800.0])
    report(2, [800.0, 20.0])
    charlm.progress_printer(1, every=1)(1, [705.0])
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "loss 800.000  perplexity inf" in text and "loss 20.000  perplexity 4.85e+08" in text
    assert "loss 705.000  perplexity 1.51e+306" in text


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on the way to nan
def test_sampling_at_a_tiny_temperature_is_greedy_and_a_nan_model_is_named() -> None:
    """At temperatures whose float32 logits / T overflow, the limit: always the most likely character."""
    ts.manual_seed(3)
    model = charlm.CharModel(4, 6)
    greedy, ids, state = "", np.array([0]), None
    with ts.no_grad():
        for _ in range(10):  # by hand: the argmax of each step's logits
            logits, _, state = model(ids[:, None], state)
            ids = np.array([int(np.argmax(logits.numpy()[-1, 0]))])
            greedy += "abcd"[ids[0]]
    for temperature in (1e-39, 1e-320):
        assert charlm.sample(model, "abcd", "a", 10, temperature, np.random.default_rng(0)) == "a" + greedy
    model.head.bias.data = np.full(4, np.nan, np.float32)
    with pytest.raises(ValueError, match="outputs are not finite"):
        charlm.sample(model, "abcd", "a", 3, 1.0, np.random.default_rng(0))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on the way to nan
def test_sample_of_a_nan_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = charlm.CharModel(3, 4)
    model.head.bias.data = np.full(3, np.nan, np.float32)
    path = tmp_path / "nan.safetensors"
    charlm.save_checkpoint(path, model, ts.optim.SGD(model.parameters(), lr=0.1), "abc")
    code, out, err = run_main(capsys, "sample", "--checkpoint", str(path), "--prime", "a")
    assert_one_line_error(code, err, "sample", "outputs are not finite")
