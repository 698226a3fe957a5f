"""Every numeric, size, device and output option is checked as it is parsed: a bad value ends with
exit code 2 and one line `error: …` naming the option, before any model is built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from transeg.cli import cli, types
from transeg.cli.types import check_output, parse_device
from transeg.errors import TransegError


def run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, *fragments: str) -> None:
    lines = output.splitlines()
    assert code == 2, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for fragment in fragments:
        assert fragment in lines[0], output


BAD_OPTIONS = [
    (["info", "segformer-b0", "--size", "0", "64"], ["--size", "1..8192", "got 0"]),
    (["info", "segformer-b0", "--size", "-5", "64"], ["--size", "got -5"]),
    (["info", "segformer-b0", "--size", "99999", "64"], ["--size", "99999"]),
    (["info", "segformer-b0", "--size", "64"], ["--size"]),
    (["info", "segformer-b0", "--num-classes", "0"], ["--num-classes", "0"]),
    (["info", "segformer-b0", "--decoder-width", "-1"], ["--decoder-width", "-1"]),
    (["bench", "segformer-b0", "--batch", "0"], ["--batch", "0"]),
    (["bench", "segformer-b0", "--batch", "-3"], ["--batch", "-3"]),
    (["bench", "segformer-b0", "--batch", "1000000"], ["--batch", "1000000"]),
    (["bench", "segformer-b0", "--repeats", "10000000"], ["--repeats"]),
    (["info", "segformer-b0", "--num-classes", "1000000"], ["--num-classes", "1000000"]),
    (["info", "segformer-b0", "--decoder-width", "100000"], ["--decoder-width"]),
    (["predict", "segformer-b0", "x.png", "--out", "{t}", "--size-divisor", "100000"], ["--size-divisor"]),
    (["bench", "segformer-b0", "--threads", "0"], ["--threads"]),
    (["bench", "segformer-b0", "--repeats", "0"], ["--repeats"]),
    (["bench", "segformer-b0", "--warmup", "-1"], ["--warmup"]),
    (["bench", "segformer-b0", "--size", "0", "0"], ["--size"]),
    (["bench", "segformer-b0", "--device", "nonsense"], ["--device", "'nonsense'", "cpu, cuda, cuda:N or mps"]),
    (["bench", "segformer-b0", "--device", "cpu:1"], ["--device", "'cpu:1'"]),
    (["export", "segformer-b0", "--out", "{t}/m.onnx", "--size", "0", "64"], ["--size"]),
    (["export", "segformer-b0", "--out", "{t}/m.onnx", "--opset", "5"], ["--opset", "5"]),
    (["export", "segformer-b0", "--out", "{t}/m.onnx", "--opset", "99"], ["--opset", "99"]),
    (["export", "segformer-b0", "--out", "{t}/m.onnx", "--num-classes", "-2"], ["--num-classes"]),
    (["predict", "segformer-b0", "x.png", "--out", "{t}", "--batch-size", "0"], ["--batch-size"]),
    (["predict", "segformer-b0", "x.png", "--out", "{t}", "--alpha", "1.5"], ["--alpha", "1.5"]),
    (["predict", "segformer-b0", "x.png", "--out", "{t}", "--alpha", "nan"], ["--alpha"]),
    (["predict", "segformer-b0", "x.png", "--out", "{t}", "--size-divisor", "0"], ["--size-divisor"]),
    (["predict", "segformer-b0", "x.png", "--out", "{t}", "--crop", "0", "32"], ["--crop"]),
    (["predict", "segformer-b0", "x.png", "--out", "{t}", "--stride", "32", "-1"], ["--stride"]),
    (["predict", "segformer-b0", "x.png", "--out", "{t}", "--scales", "1,-0.5"], ["--scales", "'1,-0.5'"]),
    (["predict", "segformer-b0", "x.png", "--out", "{t}", "--scales", "inf"], ["--scales"]),
    (["erf", "segformer-b0", "x.png", "--out", "{t}", "--limit", "0"], ["--limit"]),
    (["robustness", "segformer-b0", "--dataset", "camvid", "--data-root", "{t}", "--out", "{t}", "--seed", "-1"],
     ["--seed"]),
    (["robustness", "segformer-b0", "--dataset", "camvid", "--data-root", "{t}", "--out", "{t}",
      "--test-scale", "0", "0"], ["--test-scale"]),
    (["eval", "segformer-b0", "--config", "c.yaml", "--test-scale", "0", "512"], ["--test-scale"]),
    (["data", "check", "c.yaml", "--limit", "0"], ["--limit"]),
    (["info"], ["Missing argument 'MODEL'", "info --help'"]),
    (["no-such-command"], ["No such command"]),
    (["--no-such-option"], ["No such option"]),
]


@pytest.mark.parametrize(("args", "fragments"), BAD_OPTIONS, ids=[" ".join(a[:1] + a[2:])[:60] for a, _ in BAD_OPTIONS])
def test_bad_option_is_one_line(tmp_path, args, fragments):
    code, output = run(*(a.replace("{t}", str(tmp_path)) for a in args))
    assert_one_line_error(code, output, *fragments)


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "existing.txt"
    path.write_text("keep me")
    return path


@pytest.mark.parametrize("command", [
    ["predict", "segformer-b0", "x.png", "--out"],
    ["erf", "segformer-b0", "x.png", "--out"],
    ["demo", "--out"],
    ["robustness", "segformer-b0", "--dataset", "camvid", "--data-root", ".", "--out"],
])
def test_output_folder_that_is_a_file_is_refused(a_file, command):
    code, output = run(*command, a_file)
    assert_one_line_error(code, output, "--out", str(a_file), "is a file")
    assert a_file.read_text() == "keep me"


@pytest.mark.parametrize("command", [["export", "segformer-b0", "--out"], ["convert", "x.safetensors", "--out"]])
def test_output_file_below_a_file_or_at_a_folder_is_refused(a_file, command):
    code, output = run(*command, a_file / "model.onnx")
    assert_one_line_error(code, output, "is a file, so nothing can be written below it")
    code, output = run(*command, a_file.parent)
    assert_one_line_error(code, output, "is a folder")


def test_convert_to_hf_needs_a_folder(a_file):
    code, output = run("convert", "x.safetensors", "--to", "hf", "--out", a_file)
    assert_one_line_error(code, output, str(a_file), "is a file, not a folder")


def test_unwritable_location_is_refused(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(types.tempfile, "TemporaryFile", refuse)
    with pytest.raises(TransegError, match="cannot write in .*Permission denied"):
        check_output(str(tmp_path / "new" / "folder"), "dir")
    with pytest.raises(TransegError, match="cannot write in"):
        check_output(str(tmp_path / "model.onnx"), "file")


def test_special_folder_is_refused():
    with pytest.raises(TransegError, match="cannot write in /proc"):
        check_output("/proc/transeg-out", "dir")


def test_full_disk_is_refused_up_front(tmp_path, monkeypatch):
    monkeypatch.setattr(types.shutil, "disk_usage", lambda _: types.shutil._ntuple_diskusage(10**9, 10**9, 10**6))
    with pytest.raises(TransegError, match="only 0 MiB free"):
        check_output(str(tmp_path / "out"), "dir")


def test_usable_locations_pass_and_nothing_is_created(tmp_path):
    assert check_output(str(tmp_path / "a" / "b"), "dir") == tmp_path / "a" / "b"
    assert check_output(str(tmp_path / "m.onnx"), "file") == tmp_path / "m.onnx"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["", "   ", "a\x00b", "x" * 5000])
def test_unusable_names_are_refused(text):
    with pytest.raises(TransegError):
        check_output(text, "dir")


def test_devices():
    assert parse_device("cpu") == "cpu"
    for text in ("gpu", "cuda:x", "cuda:-1", "mps:0", ""):
        with pytest.raises(TransegError, match="expected cpu, cuda, cuda:N or mps"):
            parse_device(text)
    if torch.cuda.is_available():
        assert parse_device("cuda:0") == "cuda:0"
        with pytest.raises(TransegError, match="CUDA device"):
            parse_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(TransegError, match="no CUDA device is available"):
            parse_device("cuda")


@pytest.mark.parametrize(("target", "out"), [("transeg", "{m}"), ("hf", "{d}"), ("hf", "{m}.hf")])
def test_convert_never_replaces_its_source(tmp_path, target, out):
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"not read: the output is refused first")
    if out == "{m}.hf":  # a transformers folder converted into itself
        model = tmp_path / "hf"
        model.mkdir()
        (model / "model.safetensors").write_bytes(b"x")
        out = str(model)
    out = out.replace("{m}", str(model)).replace("{d}", str(tmp_path))
    code, output = run("convert", model, "--to", target, "--out", out)
    assert_one_line_error(code, output, "could replace the input")
