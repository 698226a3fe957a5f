"""The parts the training loop delegates to: its cadence, its stopping conditions, its step reports."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
import torch

from transeg.engine.cadence import Cadence
from transeg.engine.progress import TrainingProgress
from transeg.engine.stopping import Stopping, interrupt_flag
from transeg.engine.training_log import TrainingLog


def test_cadence_every_n_iterations_and_at_the_last():
    cadence = Cadence(iterations=10, log_interval=3, eval_interval=4, checkpoint_interval=5)
    steps = range(1, 11)
    assert [i for i in steps if cadence.logs_at(i)] == [3, 6, 9, 10]
    assert [i for i in steps if cadence.evaluates_at(i)] == [4, 8, 10]
    assert [i for i in steps if cadence.checkpoints_at(i)] == [5, 10]
    without_validation = Cadence(iterations=10, log_interval=3, eval_interval=None, checkpoint_interval=5)
    assert not any(without_validation.evaluates_at(i) for i in steps)


def test_stopping_budget_and_time_limit():
    flag = threading.Event()
    assert [Stopping(3, None, flag).budget_left(i) for i in range(5)] == [True, True, True, False, False]
    assert Stopping(3, None, flag).time_limit_reached() is None
    assert Stopping(3, 60.0, flag).time_limit_reached() is None
    short = Stopping(3, 1e-6, flag)
    time.sleep(0.01)
    assert short.time_limit_reached() == "time limit of 1e-06 minutes"


def test_stopping_turns_the_interrupt_flag_into_keyboard_interrupt():
    flag = threading.Event()
    stopping = Stopping(3, None, flag)
    stopping.raise_if_interrupted()
    flag.set()
    with pytest.raises(KeyboardInterrupt):
        stopping.raise_if_interrupted()


def test_ctrl_c_only_sets_the_flag_and_the_handler_is_restored():
    previous = signal.getsignal(signal.SIGINT)
    with interrupt_flag() as interrupted:
        assert not interrupted.is_set()
        signal.raise_signal(signal.SIGINT)  # a KeyboardInterrupt here would fail the test
        assert interrupted.is_set()
    assert signal.getsignal(signal.SIGINT) is previous


def test_interrupt_flag_off_the_main_thread_installs_nothing():
    previous = signal.getsignal(signal.SIGINT)
    seen = []

    def body() -> None:
        with interrupt_flag() as interrupted:
            seen.append((interrupted.is_set(), signal.getsignal(signal.SIGINT)))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [(False, previous)]


def test_progress_records_the_asked_steps_with_their_loss_terms(tmp_path):
    log = TrainingLog(tmp_path, enabled=True)
    with TrainingProgress(log, batch_size=4, iterations=4, done=0, lr=1e-3, show=False) as progress:
        for iteration in range(1, 5):
            progress.step(iteration, torch.tensor(float(iteration)), {"loss_seg": torch.tensor(0.5)}, 1e-3,
                          skipped_steps=iteration // 3, record=iteration % 2 == 0)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [list(r) for r in records] == [["iter", "loss", "lr", "imgs_per_s", "loss_seg", "skipped_steps"]] * 2
    assert [(r["iter"], r["loss"], r["loss_seg"], r["skipped_steps"]) for r in records] == [(2, 2.0, 0.5, 0),
                                                                                         (4, 4.0, 0.5, 1)]
    assert all(r["imgs_per_s"] > 0 for r in records)


def test_a_disabled_log_writes_nothing(tmp_path):
    TrainingLog(tmp_path, enabled=False).write({"iter": 1, "loss": 1.0})
    assert not (tmp_path / "log.jsonl").exists()
