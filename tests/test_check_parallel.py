"""``check``'s frameworks at once (conformance.check.parallel): results in the order
asked for whatever order they ran in, the slowest started first, and one at a time
unless every framework has a process of its own."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from conformance import limits, spec
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
    work = limits.Work(spec.resolve("inception_mnist"), 28, 2)
    assert parallel.at_once({"torch": child, "keras": child}, ["torch", "keras"], work) == 2
    assert parallel.at_once({"torch": child, "keras": module}, ["torch", "keras"], work) == 1


def test_at_once_no_more_than_the_memory_holds(monkeypatch):
    """--batch was checked against the memory for one run; runs at once share it."""
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)
    child = SimpleNamespace(in_own_process=True)
    backends, names = dict.fromkeys(["torch", "keras", "mxnet"], child), ["torch", "keras", "mxnet"]
    work = limits.Work(spec.resolve("inception_mnist"), 28, 64)
    monkeypatch.setattr(limits, "machine_memory", lambda: 2 * work.bytes + 1)
    assert parallel.at_once(backends, names, work) == 2
    monkeypatch.setattr(limits, "machine_memory", lambda: work.bytes)
    assert parallel.at_once(backends, names, work) == 1  # the one run check_work admitted
