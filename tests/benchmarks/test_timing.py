"""``benchmarks/timing.py``: calls taken in turn, warm-up rounds untimed, medians."""

import time

import pytest

from benchmarks.timing import interleaved_medians, interleaved_times, median_step_seconds, recording
from tests.engine.test_heap import PAGES, printed_by_a_fresh_process
from transeg.engine.heap import heap_retention_available


def test_calls_take_turns_and_warmup_is_not_timed():
    order: list[str] = []
    times = interleaved_times({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=3, warmup=2)
    assert order == ["a", "b"] * 5
    assert [len(t) for t in times.values()] == [3, 3]


def test_medians_rank_a_slow_call_above_a_fast_one():
    medians = interleaved_medians({"slow": lambda: time.sleep(0.02), "fast": lambda: None}, rounds=3)
    assert medians["slow"] >= 0.02 > medians["fast"]


def test_recording_keeps_the_result_and_one_time_per_call():
    times: list[float] = []
    double = recording(lambda x, scale=2: x * scale, times)
    assert double(3) == 6 and double(3, scale=3) == 9
    assert len(times) == 2 and all(t >= 0 for t in times)


def test_median_step_seconds_leaves_out_the_warmup_step():
    class Trainer:
        pauses = iter([0.0, 0.0, 0.0, 0.05, 0.05])  # with the first step counted, the median would be 0

        def _step(self) -> None:
            time.sleep(next(self.pauses))

        def fit(self, show_progress: bool) -> None:
            for _ in range(5):
                self._step()

    assert median_step_seconds(Trainer()) >= 0.05


def test_median_step_seconds_leaves_out_every_warmup_step():
    class Trainer:
        pauses = iter([0.05, 0.05, 0.05, 0.0, 0.0, 0.0])  # slow while warming up

        def _step(self) -> None:
            time.sleep(next(self.pauses))

        def fit(self, show_progress: bool) -> None:
            for _ in range(6):
                self._step()

    assert median_step_seconds(Trainer(), warmup=3) < 0.05


def test_a_setting_wraps_its_call_but_stays_out_of_the_timed_span():
    import contextlib

    inside: list[str] = []

    @contextlib.contextmanager
    def slow_setting():
        time.sleep(0.05)  # entering and leaving are not timed
        inside.append("entered")
        yield
        time.sleep(0.05)

    medians = interleaved_medians({"set": lambda: inside.append("call"), "plain": lambda: None}, rounds=2,
                                  settings={"set": slow_setting})
    assert inside == ["entered", "call"] * 3
    assert medians["set"] < 0.05


def test_heap_policy_maps_large_blocks_for_one_contender_and_retains_them_for_the_other():
    if not heap_retention_available():
        pytest.skip("glibc's mallopt only")
    mapped, kept = printed_by_a_fresh_process("""
from benchmarks.timing import heap_policy
from transeg.engine.heap import retained_heap
with retained_heap():
    with heap_policy(retain=False):  # no free block in a fresh heap fits: a new mapping each time
        mapped = [fresh() for _ in range(2)]
    with heap_policy(retain=True):
        for _ in range(3):
            fresh()
        kept = sum(fresh() for _ in range(3))
print(min(mapped), kept)
""")
    assert mapped > PAGES // 2 and kept < PAGES // 20
