"""``check``'s frameworks at once (conformance.check.parallel): results in the order
asked for whatever order they ran in, the slowest started first, and one at a time
unless every framework has a process of its own."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from conformance.check import parallel, results


def test_each_answers_in_order_and_starts_in_the_order_given():
    started: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> str:
        with lock:
            started.append(name)
        time.sleep(0.2)
        return name.upper()

    with parallel.each(work, ["a", "b", "c"], 2, first=["c", "a", "b"]) as done:
        assert list(done) == [("a", "A"), ("b", "B"), ("c", "C")]
    assert set(started[:2]) == {"c", "a"} and started[2] == "b"  # b waits for a free worker


def test_each_runs_in_this_thread_one_after_another_with_one_worker():
    threads: list[str] = []

    def work(name: str) -> str:
        threads.append(threading.current_thread().name)
        return name

    with parallel.each(work, ["a", "b"], 1, first=["b", "a"]) as done:
        assert list(done) == [("a", "a"), ("b", "b")]
    assert threads == [threading.current_thread().name] * 2


def test_the_slowest_so_far_goes_first():
    timer = results.Timer()
    timer.seconds = {"torch": {"build": 1.0, "forward 224": 2.0}, "keras": {"import": 4.0}, "mxnet": {}}
    assert parallel.longest_first(["torch", "keras", "mxnet", "jax"], timer) == ["keras", "torch", "mxnet", "jax"]


def test_at_once_only_when_every_framework_has_a_process_of_its_own(monkeypatch):
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    child, module = SimpleNamespace(in_own_process=True), SimpleNamespace()
    assert parallel.at_once({"torch": child, "keras": child}, ["torch", "keras"]) == 2
    assert parallel.at_once({"torch": child, "keras": module}, ["torch", "keras"]) == 1
