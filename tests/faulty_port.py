"""PyTorch's backend with one fault, chosen by ``FAULTY_PORT`` when the module is
imported (in the framework's own process, which inherits the variable): ``exit`` and
``kill`` end the process in ``stages`` after a last line on stderr, ``hang`` sleeps
there, ``skew`` returns one stage 1% off; ``train-kill`` ends it in the first training
step of a process, and of that process only (a marker file beside its stderr says it
died once). tests/test_check_processes.py checks it as a
plug-in by its module path."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import numpy as np

from impl_torch import *  # noqa: F403 - the whole interface, then one name replaced
from impl_torch import (
    INTERFACE_VERSION,  # noqa: F401 - the contract it speaks
    __all__,  # noqa: F401 - the same names, this module's own
)
from impl_torch import Trainer as _Trainer
from impl_torch import stages as _stages

name = "faulty"
FAULT = os.environ.get("FAULTY_PORT", "")


def stages(model: Any, x: np.ndarray, mode: str = "channels_last") -> dict[str, np.ndarray]:
    if FAULT in ("exit", "kill", "hang"):
        print(f"faulty port: about to {FAULT} in stages (pid {os.getpid()})", file=sys.stderr, flush=True)
    if FAULT == "exit":
        os._exit(3)
    if FAULT == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if FAULT == "hang":
        time.sleep(600)
    out = _stages(model, x, mode=mode)
    if FAULT == "skew":
        out["conv2"] = out["conv2"] * np.float32(1.01)
    return out


class Trainer(_Trainer):
    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        if FAULT == "train-kill" and not _died_before():
            print(f"faulty port: about to be killed in training (pid {os.getpid()})", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().step(x, y)


def _died_before() -> bool:
    """Whether an earlier process of this check died here: a file of that name, made
    now, beside the process's stderr (the check's temporary directory)."""
    marker = os.path.join(os.path.dirname(os.readlink("/proc/self/fd/2")), "faulty-died-in-training")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return True
    return False
