"""The README's worked example runs as written: a Label Studio export -> data import -> data check ->
train (class-weighted loss) -> eval -> predict --format labelstudio, line by line from README.md, in
a fresh folder holding only what the repository ships (the example export and its config).

By default the lines run with one change, a 2-iteration schedule appended to the ``train`` line
(the ``--set`` options below), so the suite stays fast; ``-m slow`` runs them exactly and checks the
mIoU the README states."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from transeg.cli import cli
from transeg.data.annotations.brush import decode_mask

REPO = Path(__file__).resolve().parents[1]
HEADING = "## Worked example: your labels, end to end"
FAST = ("--set", "schedule.iterations=2", "--set", "schedule.warmup_iters=0")


def readme_lines() -> list[str]:
    """The commands of the first fenced block under ``HEADING`` in README.md."""
    text = (REPO / "README.md").read_text()
    assert HEADING in text, f"README.md lost its heading {HEADING!r}"
    block = re.search(r"```bash\n(.*?)```", text.split(HEADING, 1)[1], re.S)
    assert block, "no ```bash block under the worked example's heading"
    lines = [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert all(line.startswith("transeg ") for line in lines), lines
    return lines


def run_lines(folder: Path, monkeypatch, fast: bool) -> dict[str, str]:
    """Copy what the example needs from the repository into ``folder`` and run each README line
    there (in-process, as the ``transeg`` command would); returns each command's output by subcommand."""
    shutil.copytree(REPO / "examples" / "labelstudio-shapes", folder / "examples" / "labelstudio-shapes")
    shutil.copytree(REPO / "configs" / "examples", folder / "configs" / "examples")
    monkeypatch.chdir(folder)
    outputs = {}
    for line in readme_lines():
        args = shlex.split(line, comments=True)[1:]
        if fast and args[0] == "train":
            args = [*args, *FAST]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        outputs[args[0] if args[0] != "data" else f"data {args[1]}"] = result.output
    return outputs


def check_outputs(folder: Path, outputs: dict[str, str]) -> None:
    """What each step must leave: the imported split, the auto class weights in use, the eval table
    and a Label Studio task per val image with brush pre-annotations of the known classes."""
    assert sorted(p.name for p in (folder / "shapes-data" / "images" / "val").iterdir()) != []
    assert "class_weight auto" in outputs["data check"] and "triangle" in outputs["data check"]
    weights = json.loads((folder / "runs" / "labelstudio-shapes" / "class_weights.json").read_text())
    assert weights["class_weight"][0] == min(weights["class_weight"])  # the background, most pixels, least weight
    assert "mIoU" in outputs["eval"]
    classes = {"background", "disc", "square", "stripes", "dots", "triangle"}
    tasks = json.loads((folder / "shapes-predictions" / "labelstudio.json").read_text())
    val_images = sorted(p.name for p in (folder / "shapes-data" / "images" / "val").iterdir())
    assert sorted(Path(t["data"]["image"]).name.split("=")[-1] for t in tasks) == val_images
    for task in tasks:
        for result in task["predictions"][0]["result"]:
            assert result["type"] == "brushlabels" and set(result["value"]["brushlabels"]) <= classes
            decode_mask(result["value"]["rle"], result["original_height"], result["original_width"])


def test_readme_lines_run_with_a_short_schedule(tmp_path, monkeypatch):
    outputs = run_lines(tmp_path, monkeypatch, fast=True)
    check_outputs(tmp_path, outputs)
    assert "trained to iteration 2" in outputs["train"]


@pytest.mark.slow
def test_readme_lines_run_as_written_and_reach_the_stated_miou(tmp_path, monkeypatch):
    outputs = run_lines(tmp_path, monkeypatch, fast=False)
    check_outputs(tmp_path, outputs)
    stated = re.search(r"reaches val mIoU \*\*([\d.]+)\*\*", (REPO / "README.md").read_text())
    assert stated, "README.md does not state the example's mIoU"
    measured = json.loads((tmp_path / "runs" / "labelstudio-shapes" / "metrics.json").read_text())["mIoU"] * 100
    assert abs(measured - float(stated.group(1))) < 5.0, (measured, stated.group(1))
