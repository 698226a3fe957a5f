"""A property-based fuzzer of the command line, shared by ``tests/cli/test_fuzz.py`` (a short run) and
``benchmarks/fuzz_cli.py`` (a run with a time budget).

Each example is one command with random options and values: out of range, empty, odd unicode,
negative, huge, paths that are files, folders, missing or unwritable, and random or mutated bytes as
images, labels, configs and checkpoints. Whatever it is given, a run ends with exit code 0, or with
exit code 2 and exactly one line starting ``error:`` and no traceback; and no input file changes.
Valid values are drawn small (sizes of a few dozen pixels, one repeat), so that an example that
reaches a model stays cheap; ``demo`` gets only output folders it must refuse (it trains for minutes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from hypothesis import strategies as st
from PIL import Image

import transeg
from transeg.cli import cli
from transeg.data.synthetic import write_synthetic_dataset

# text as argv can carry it: any character but NUL and surrogates
ODD_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
HOSTILE_INTS = st.one_of(st.integers(-(10**12), 0), st.integers(10**6, 10**15)).map(str)
HOSTILE_NUMBERS = st.one_of(HOSTILE_INTS, st.sampled_from(["", "nan", "inf", "-inf", "1e400", "0x10", "1.5",
                                                             "-0", "٣", "2,3"]), ODD_TEXT)


@dataclass(frozen=True)
class Inputs:
    """Small valid files, written once: what the commands read. Their folder is hashed around each run."""

    folder: Path
    image: Path
    thin: Path  # 3 px high: below MiT's 29 px minimum, padded by inference
    label: Path
    config: Path
    dataset: Path
    model: Path
    files: frozenset[str]  # every file and folder under ``folder``, relative to it


def build_inputs(folder: Path) -> Inputs:
    """In ``folder``: a 32x48 and a 3x40 RGB PNG, a 32x48 label PNG of two classes, a folder dataset and
    its YAML config (one iteration, 32x32 crops), and segformer-b0 with 2 classes saved in transeg's format."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    image, label = folder / "image.png", folder / "label.png"
    Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(image)
    thin = folder / "thin.png"
    Image.fromarray(rng.integers(0, 255, (3, 40, 3), dtype=np.uint8)).save(thin)
    Image.fromarray(rng.integers(0, 2, (32, 48), dtype=np.uint8)).save(label)
    dataset = write_synthetic_dataset(folder / "data", num_train=2, num_val=1, size=(32, 32))
    config = folder / "config.yaml"
    config.write_text(
        f"data: {{dataset: folder, root: {dataset}, crop_size: [32, 32], scale: [32, 32], test_scale: null, "
        "num_workers: 0, val_split: val}\n"
        "schedule: {iterations: 1, warmup_iters: 0}\n"
        "train: {batch_size: 1, eval_interval: 1, checkpoint_interval: 1, log_interval: 1}\n"
        f"output_dir: {folder / 'run'}\n")
    # in a folder of its own: no folder the fuzzer names as a model then holds one that loads
    model = transeg.save_model(transeg.create_model("segformer-b0", num_classes=2),
                               folder / "weights" / "model.safetensors")
    files = frozenset(str(p.relative_to(folder)) for p in folder.rglob("*"))
    return Inputs(folder, image, thin, label, config, dataset, model, files)


def mutated(data: st.DataObject, source: bytes) -> bytes:
    """``source`` truncated, with bytes flipped, or with random bytes spliced in; or random bytes."""
    kind = data.draw(st.sampled_from(["truncate", "flip", "splice", "random"]))
    if kind == "random":
        return data.draw(st.binary(max_size=256))
    cut = data.draw(st.integers(0, len(source)))
    if kind == "truncate":
        return source[:cut]
    if kind == "flip":
        flipped = bytearray(source)
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(flipped) - 1))
            flipped[i] ^= data.draw(st.integers(1, 255))
        return bytes(flipped)
    return source[:cut] + data.draw(st.binary(min_size=1, max_size=64)) + source[cut:]


class Example:
    """One fuzzed command: draws its arguments into ``args``, writing the files they name into
    ``scratch/in`` (inputs, hashed with the others) and pointing outputs into ``scratch/out``."""

    def __init__(self, data: st.DataObject, inputs: Inputs, scratch: Path) -> None:
        self.data, self.inputs, self.scratch = data, inputs, scratch
        self.made = scratch / "in"
        self.made.mkdir()
        self.args: list[str] = []
        self.command = ""

    def draw(self, strategy: st.SearchStrategy):
        return self.data.draw(strategy)

    # ----------------------------------------------------------------- values
    def pair(self, low: int, high: int) -> list[str]:
        side = st.one_of(st.integers(low, high).map(str), HOSTILE_NUMBERS)
        return [self.draw(side), self.draw(side)]

    def made_file(self, source: Path, suffix: str) -> str:
        path = self.made / f"m{len(list(self.made.iterdir()))}{suffix}"
        path.write_bytes(mutated(self.data, source.read_bytes()))
        return str(path)

    def input_path(self, valid: list[Path], source: Path, suffixes: list[str]) -> str:
        """A valid input (if any), a mutated copy of ``source``, or a path that is missing, a folder or
        odd text."""
        kind = self.draw(st.sampled_from(["valid"] * bool(valid) + ["mutated", "missing", "folder", "text"]))
        if kind == "valid":
            return str(self.draw(st.sampled_from(valid)))
        if kind == "mutated":
            return self.made_file(source, self.draw(st.sampled_from(suffixes)))
        if kind == "missing":
            return str(self.inputs.folder / f"absent{self.draw(st.sampled_from(suffixes))}")
        if kind == "folder":
            return str(self.draw(st.sampled_from([self.inputs.folder, self.made, self.inputs.dataset])))
        return self.draw(ODD_TEXT)

    def model(self, valid: bool = True) -> str:
        """A zoo name or a checkpoint; with ``valid=False`` never one that loads."""
        if self.draw(st.booleans()):
            return self.draw(st.sampled_from(["segformer-b0"] * valid + ["segformer-b7", "segmenter-nope", ""]))
        return self.input_path([self.inputs.model] * valid, self.inputs.model, [".safetensors", ".pth", ".bin", ""])

    def image(self) -> str:
        return self.input_path([self.inputs.image, self.inputs.thin, self.inputs.label], self.inputs.image,
                               [".png", ".jpg", "", ".mp4"])  # .mp4: mutated bytes read as a video

    def config(self) -> str:
        return self.input_path([self.inputs.config], self.inputs.config, [".yaml", ".yml"])

    def out(self, kind: str) -> str:
        """An output ``kind`` ("dir" or "file"): a new path, or one that is an existing file (an input
        for a folder, which must be refused; a file of no command's input for a file, which may be
        replaced), an existing folder, below a file, in a folder nothing can be written to, or odd text."""
        new = self.scratch / "out" / self.draw(st.sampled_from(["o", "ü ñ", "a/b/c"]))
        existing = self.scratch / "existing.onnx"
        existing.write_bytes(b"an earlier output")
        choice = self.draw(st.sampled_from(["new", "new", "existing file", "folder", "below a file", "special",
                                            "text"]))
        return str({"new": new if kind == "dir" else new.with_suffix(".onnx"),
                    "existing file": self.inputs.image if kind == "dir" else existing,
                    "folder": self.inputs.folder,
                    "below a file": self.inputs.image / "x", "special": Path("/proc/transeg-fuzz"),
                    "text": None}.get(choice) or self.draw(ODD_TEXT))

    def options(self, table: dict[str, object]) -> None:
        """A random subset of ``table``'s options, in random order, each with a value drawn by its entry:
        a strategy of str, a callable returning a list of str, or None for a flag."""
        for name in self.draw(st.lists(st.sampled_from(sorted(table)), max_size=4, unique=True)):
            value = table[name]
            if value is None:
                self.args.append(name)
            elif callable(value):
                self.args += [name, *value()]
            else:
                self.args += [name, self.draw(value)]

    # ----------------------------------------------------------------- commands
    def build(self) -> list[str]:
        self.command = self.draw(st.sampled_from(sorted(COMMANDS)))
        COMMANDS[self.command](self)
        if self.draw(st.integers(0, 9)) == 0:  # now and then a stray token or unknown option
            self.args.insert(self.draw(st.integers(0, len(self.args))), self.draw(st.one_of(ODD_TEXT, st.just("--x"))))
        return self.args


# a device: the CPU, or one this machine may lack (refused in one line), or not a device at all
DEVICES = st.one_of(st.sampled_from(["cpu", "cuda", "cuda:7", "mps", "gpu", "CPU", "cpu:1", ""]), ODD_TEXT)


def _positive(high: int) -> st.SearchStrategy[str]:
    return st.one_of(st.integers(1, high).map(str), HOSTILE_NUMBERS)


def _list(e: Example) -> None:
    e.args = ["list"]


def _info(e: Example) -> None:
    e.args = ["info", e.model()]
    e.options({"--size": lambda: e.pair(32, 96), "--num-classes": _positive(200), "--decoder-width": _positive(64),
               "--json": None})


def _bench(e: Example) -> None:
    e.args = ["bench", e.model(), "--size", "32", "32", "--warmup", "0", "--repeats", "1"]
    e.options({"--size": lambda: e.pair(32, 64), "--batch": _positive(2), "--threads": _positive(2),
               "--repeats": _positive(2), "--warmup": st.one_of(st.integers(0, 1).map(str), HOSTILE_NUMBERS),
               "--device": DEVICES,
               "--precision": st.sampled_from(["fp32", "bf16", "fp16", "fp64"]), "--num-classes": _positive(8),
               "--json": None})


def _export(e: Example) -> None:
    """Models that do not load only: a valid export takes half a minute (tests/inference cover it)."""
    e.args = ["export", e.model(valid=False), "--out", e.out("file")]
    e.options({"--size": lambda: e.pair(32, 64), "--opset": st.one_of(st.integers(17, 23).map(str), HOSTILE_NUMBERS),
               "--num-classes": _positive(8), "--format": st.sampled_from(["onnx", "tflite"]),
               "--embed-preprocess": None, "--output": st.sampled_from(["labels", "probs", "logits", "mask"]),
               "--size-divisor": st.one_of(st.integers(1, 64).map(str), HOSTILE_NUMBERS), "--int8": None,
               "--calib": lambda: [e.image()], "--eval": lambda: [e.config()],
               "--int8-runtime": st.sampled_from(["openvino", "onnxruntime", "tvm"]),
               "--max-drop": st.one_of(st.sampled_from(["0", "0.5", "1"]), HOSTILE_NUMBERS), "--device": DEVICES})


def _convert(e: Example) -> None:
    e.args = ["convert", e.model(), "--out", e.out("file")]
    e.options({"--to": st.sampled_from(["transeg", "hf", "x"])})


def _predict(e: Example) -> None:
    e.args = ["predict", e.model(), *[e.image() for _ in range(e.draw(st.integers(0, 2)))], "--out", e.out("dir"),
              "--backend", "eager"]
    e.options({"--mode": st.sampled_from(["whole", "slide", "ms-flip", "tiles"]), "--crop": lambda: e.pair(16, 48),
               "--stride": lambda: e.pair(8, 48), "--scales": st.one_of(st.sampled_from(["0.5,1", "1", "1,2"]),
                                                                          ODD_TEXT, HOSTILE_NUMBERS),
               "--size-divisor": _positive(64), "--batch-size": _positive(4), "--no-flip": None,
               "--alpha": st.one_of(st.floats(0, 1).map(str), HOSTILE_NUMBERS), "--num-classes": _positive(8),
               "--skip-existing": None, "--no-legend": None,
               "--precision": st.sampled_from(["fp32", "bf16", "fp16", "int8"]),
               "--device": DEVICES, "--save-labels": None,
               "--format": st.sampled_from(["png", "coco", "labelstudio", "cvat", "yolo"]),
               "--probs": st.sampled_from(["png", "npy", "jpg"])})


def _data_import(e: Example) -> None:
    """A COCO export of the input image (one polygon), or a mutated copy, read as any of the formats."""
    export = e.made / "coco.json"
    export.write_text(json.dumps({
        "images": [{"id": 1, "file_name": e.inputs.image.name, "height": 32, "width": 48}],
        "categories": [{"id": 5, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "segmentation": [[2, 2, 30, 4, 10, 25]]}]}))
    e.args = ["data", "import", e.draw(st.sampled_from(["coco"] * 3 + ["cvat", "labelme", "labelstudio", "voc", "x"])),
              e.input_path([export], export, [".json", ".xml", ".zip"]), "--out", e.out("dir"),
              "--images", str(e.inputs.folder)]
    e.options({"--images": lambda: [e.input_path([e.inputs.folder], e.inputs.image, [""])],
               "--val-fraction": st.one_of(st.sampled_from(["0", "0.5", "0.9", "1"]), HOSTILE_NUMBERS),
               "--seed": st.one_of(st.integers(0, 9).map(str), HOSTILE_NUMBERS),
               "--background": st.one_of(st.sampled_from(["background", "thing", ""]), ODD_TEXT),
               "--no-background": None, "--overlap": st.sampled_from(["last", "first", "smaller-on-top", "x"]),
               "--on-bad-annotation": st.sampled_from(["fail", "skip", "x"])})


def _erf(e: Example) -> None:
    e.args = ["erf", e.model(), *[e.image() for _ in range(e.draw(st.integers(0, 2)))], "--out", e.out("dir"),
              "--size", "32", "32"]
    e.options({"--size": lambda: e.pair(32, 48), "--limit": _positive(2), "--num-classes": _positive(8),
               "--scale": st.sampled_from(["log", "sqrt", "linear"]), "--device": DEVICES})


def _attention(e: Example) -> None:
    e.args = ["attention", e.draw(st.sampled_from(["segmenter-t16-mask", e.model()])), e.image(),
              "--patch", "0", "0", "--out", e.out("dir")]
    e.options({"--patch": lambda: e.pair(0, 4), "--layer": st.one_of(st.integers(0, 12).map(str), HOSTILE_NUMBERS),
               "--size": lambda: e.pair(16, 48), "--num-classes": _positive(8), "--device": DEVICES})


def _data_check(e: Example) -> None:
    e.args = ["data", "check", e.config()]
    e.options({"--limit": _positive(3), "--split": st.one_of(st.sampled_from(["train", "val"]), ODD_TEXT),
               "--json": None, "--set": st.sampled_from(["data.crop_size=[8,8]", "x=1", "=", "data.root=/nope"])})


def _eval(e: Example) -> None:
    e.args = ["eval", e.model(), "--config", e.config(), "--backend", "eager"]
    e.options({"--out": lambda: [e.out("dir")], "--test-scale": lambda: e.pair(32, 48),
               "--split": st.one_of(st.sampled_from(["train", "val"]), ODD_TEXT),
               "--mode": st.sampled_from(["whole", "slide", "ms-flip", "x"]), "--by-object-size": None,
               "--size-thresholds": lambda: e.pair(1, 2000),
               "--on-bad-sample": st.sampled_from(["error", "skip", "x"]), "--device": DEVICES,
               "--precision": st.sampled_from(["fp32", "bf16", "fp16", "int8"])})
    if "--out" not in e.args:
        e.args += ["--out", str(e.scratch / "out")]


def _train(e: Example) -> None:
    e.args = ["train", e.config(), "--set", f"output_dir={e.scratch / 'out' / 'run'}",
              "--set", "schedule.iterations=1"]
    e.options({"--on-bad-sample": st.sampled_from(["error", "skip", "ignore"]),
               "--set": st.sampled_from(["train.batch_size=0", "optimizer.lr=-1", "model.name=nope", "x",
                                         "loss=[{type: tversky}]", "loss=[{type: dice, smooth: -1}]",
                                         "loss=[{type: cross_entropy, class_weight: [1]}]", "loss=7",
                                         "loss=[{type: focal, alpha: 0.5}]", "train.precision=fp16",
                                         "loss=[{type: lovasz}, {type: cross_entropy, class_weight: auto}]"])})


def _robustness(e: Example) -> None:
    e.args = ["robustness", e.model(), "--dataset", e.draw(st.sampled_from(["folder", "camvid", "nope"])),
              "--data-root", e.input_path([e.inputs.dataset], e.inputs.image, [""]), "--out", e.out("dir"),
              "--limit", "1", "--severities", "1", "--corruptions", "gaussian_noise"]
    e.options({"--limit": _positive(1), "--seed": st.one_of(st.integers(0, 9).map(str), HOSTILE_NUMBERS),
               "--severities": st.one_of(st.sampled_from(["1", "0", "6", "1,x"]), ODD_TEXT),
               "--corruptions": st.one_of(st.sampled_from(["fog", "nope"]), ODD_TEXT),
               "--device": st.sampled_from(["cpu", "cuda:3", "tpu"]), "--test-scale": lambda: e.pair(32, 48),
               "--mode": st.sampled_from(["whole", "slide"])})


def _serve(e: Example) -> None:
    """Models that do not load only: a valid one would start serving and not return."""
    e.args = ["serve", e.model(valid=False)]
    e.options({"--host": st.one_of(st.sampled_from(["127.0.0.1", "::1", "nowhere.invalid"]), ODD_TEXT),
               "--port": st.one_of(st.integers(0, 70000).map(str), HOSTILE_NUMBERS),
               "--backend": st.sampled_from(["auto", "eager", "onnx", "int8", "tensorrt"]),
               "--device": st.sampled_from(["cpu", "cuda:3", "tpu"]), "--num-classes": _positive(8),
               "--max-batch": _positive(80), "--batch-window": HOSTILE_NUMBERS, "--queue-size": _positive(8),
               "--max-mb": HOSTILE_NUMBERS, "--max-pixels": _positive(10**9), "--timeout": HOSTILE_NUMBERS})


def _demo(e: Example) -> None:
    e.args = ["demo", "--out", e.draw(st.sampled_from([str(e.inputs.image), str(e.inputs.image / "x"),
                                                         "/proc/transeg-fuzz", ""]))]


COMMANDS = {"list": _list, "info": _info, "bench": _bench, "export": _export, "convert": _convert,
            "predict": _predict, "erf": _erf, "data check": _data_check, "data import": _data_import, "eval": _eval,
            "train": _train, "robustness": _robustness, "demo": _demo, "attention": _attention,
            "serve": _serve}


def digest(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class Outcome:
    command: str  # as COMMANDS names it
    args: list[str]
    exit_code: int
    output: str
    traceback: str | None
    inputs_changed: bool
    seconds: float

    @property
    def problem(self) -> str | None:
        """What breaks the contract, or None."""
        errors = [line for line in self.output.splitlines() if line.startswith("error:")]
        if self.traceback is not None or "Traceback" in self.output:
            return f"traceback: {self.traceback or self.output}"
        if self.inputs_changed:
            return "an input file changed"
        if self.exit_code == 0 or (self.exit_code == 1 and self.command == "data check" and not errors):
            return None  # data check exits with 1 when its report finds problems
        if self.exit_code != 2 or len(errors) != 1:
            return f"exit {self.exit_code} with {len(errors)} error: lines"
        return None


def run_example(data: st.DataObject, inputs: Inputs, work: Path,
                announce: Callable[[list[str]], None] | None = None) -> Outcome:
    """Draw one command, run it in-process (``announce`` is told its arguments first), and judge it;
    its scratch folder is removed afterwards."""
    scratch = Path(tempfile.mkdtemp(dir=work))
    try:
        example = Example(data, inputs, scratch)
        args = example.build()
        if announce is not None:
            announce(args)
        before = {**digest(inputs.folder), **digest(example.made)}
        start = time.monotonic()
        with contextlib.chdir(scratch):  # relative outputs (odd text) land in the scratch folder
            result = CliRunner().invoke(cli, args, catch_exceptions=True)
        seconds = time.monotonic() - start
        after = {**digest(inputs.folder), **digest(example.made)}
        traceback = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            traceback = f"{type(result.exception).__name__}: {result.exception}"
        changed = any(after.get(path) != sha for path, sha in before.items())  # new files are outputs
        return Outcome(example.command, args, result.exit_code, result.output, traceback, changed, seconds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        remove_outputs(inputs)


def remove_outputs(inputs: Inputs) -> None:
    """Remove what a command wrote among the inputs (an output folder may be theirs), keeping the inputs."""
    for path in sorted(inputs.folder.rglob("*"), reverse=True):
        if str(path.relative_to(inputs.folder)) not in inputs.files:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
