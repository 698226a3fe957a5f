"""Resuming: a changed config is refused with the differing keys named; a corrupt newest checkpoint gives way."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from transeg.data.synthetic import write_synthetic_dataset
from transeg.engine.checkpoint import list_checkpoints
from transeg.engine.recipe import TrainConfig, parse_config
from transeg.engine.resume import config_differences
from transeg.engine.train import Trainer, train
from transeg.errors import TransegError


def _config(root: Path, out: Path, **sections) -> TrainConfig:
    data = {"model": {"name": "segformer-b0"},
            "data": {"dataset": "folder", "root": str(root), "crop_size": [32, 32], "scale": [32, 32],
                     "test_scale": None, "num_workers": 0, "val_split": None},
            "schedule": {"iterations": 2, "warmup_iters": 0},
            "train": {"batch_size": 2, "log_interval": 1, "checkpoint_interval": 1, "keep_checkpoints": 5},
            "output_dir": str(out)}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_config(data)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A dataset and a finished two-iteration run with checkpoints at iterations 1 and 2."""
    root = write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), num_train=4, num_val=1, size=(32, 32))
    out = tmp_path_factory.mktemp("run")
    train(_config(root, out), show_progress=False)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["iter_0000001.pt", "iter_0000002.pt"]
    return root, out


@pytest.fixture
def run(finished, tmp_path) -> tuple[Path, Path]:
    root, out = finished
    shutil.copytree(out, tmp_path / "run")
    return root, tmp_path / "run"


def test_config_differences_name_what_changes_the_run_only():
    saved = _config(Path("data"), Path("a")).model_dump(mode="json")
    current = _config(Path("other"), Path("b"), model={"name": "segformer-b1", "num_classes": 4},
                      train={"batch_size": 4, "log_interval": 7, "keep_checkpoints": 1},
                      schedule={"iterations": 10}, data={"num_workers": 3},
                      eval={"mode": "slide", "crop": [16, 16], "stride": [8, 8]}).model_dump(mode="json")
    assert config_differences(saved, current) == [
        "data.root: 'data' -> 'other'", "model.name: 'segformer-b0' -> 'segformer-b1'",
        "model.num_classes: None -> 4", "schedule.iterations: 2 -> 10", "train.batch_size: 2 -> 4"]
    assert config_differences(saved, saved) == []


@pytest.mark.parametrize("sections,key", [
    ({"train": {"batch_size": 4}}, "train.batch_size: 2 -> 4"),
    ({"schedule": {"iterations": 3}}, "schedule.iterations: 2 -> 3"),
    ({"model": {"name": "segformer-b1"}}, "model.name: 'segformer-b0' -> 'segformer-b1'"),
    ({"data": {"options": {"classes_yaml": "three.yaml"}}}, "data.options: {} -> {'classes_yaml': 'three.yaml'}"),
    ({"data": {"crop_size": [48, 48]}}, "data.crop_size: [32, 32] -> [48, 48]"),
])
def test_a_changed_config_is_refused_with_the_keys_named(run, sections, key, monkeypatch):
    root, out = run
    monkeypatch.chdir(out)
    Path("three.yaml").write_text("classes: [a, b, c]\n")  # other classes for the same files
    trainer = Trainer(_config(root, out, **sections))
    with pytest.raises(TransegError, match=r"iter_0000002\.pt was made under another training config") as info:
        trainer.resume()
    assert key in str(info.value) and "--resume-anyway" in str(info.value)
    assert trainer.iteration == 0


def test_resume_anyway_continues_under_the_new_config(run):
    root, out = run
    result = train(_config(root, out, schedule={"iterations": 3}, train={"batch_size": 4}), resume=True,
                   show_progress=False, resume_anyway=True)
    assert result.iteration == 3


def test_resume_anyway_with_other_weights_is_one_clear_error(run):
    root, out = run
    (out / "three.yaml").write_text("classes: [a, b, c]\n")
    trainer = Trainer(_config(root, out, data={"options": {"classes_yaml": str(out / "three.yaml")}}))
    with pytest.raises(TransegError, match=r"iter_0000002\.pt: weights do not fit the model: shape mismatch"):
        trainer.resume(resume_anyway=True)


def test_free_keys_may_change(run):
    root, out = run
    trainer = Trainer(_config(root, out, train={"log_interval": 9, "keep_checkpoints": 2}, data={"num_workers": 1}))
    assert trainer.resume() and trainer.iteration == 2


@pytest.mark.parametrize("damage", ["truncate", "not a checkpoint", "incomplete"])
def test_a_corrupt_newest_checkpoint_falls_back_with_one_warning(run, damage):
    root, out = run
    newest = out / "checkpoints" / "iter_0000002.pt"
    if damage == "truncate":
        newest.write_bytes(newest.read_bytes()[:200])
    elif damage == "not a checkpoint":
        newest.write_text("hello")
    else:
        torch.save({"iteration": 2, "model": {}}, newest)
    trainer = Trainer(_config(root, out))
    with pytest.warns(UserWarning, match=r"resuming from .*iter_0000001\.pt; .*iter_0000002\.pt") as record:
        assert trainer.resume()
    assert len([w for w in record if "resuming from" in str(w.message)]) == 1
    assert trainer.iteration == 1
    # set aside: the next save at iteration 2 and the deletion of old checkpoints never meet it
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["iter_0000001.pt"]
    assert (out / "checkpoints" / "iter_0000002.pt.unusable").is_file()


def test_no_usable_checkpoint_names_every_file(run):
    root, out = run
    for path in list_checkpoints(out / "checkpoints"):
        path.write_bytes(b"\x80\x02garbage")
    trainer = Trainer(_config(root, out))
    with warnings.catch_warnings(), pytest.raises(TransegError, match="no checkpoint to resume from is usable") as info:
        warnings.simplefilter("error")  # nothing is passed over silently: the error says it all
        trainer.resume()
    assert "iter_0000001.pt" in str(info.value) and "iter_0000002.pt" in str(info.value)
