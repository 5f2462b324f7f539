"""PyTorch's backend with one fault, chosen by ``FAULTY_PORT`` when the module is
imported (in the framework's own process, which inherits the variable): ``exit`` and
``kill`` end the process in ``stages`` after a last line on stderr, ``hang`` sleeps
there, ``skew`` returns one stage 1% off. tests/test_check_processes.py checks it as a
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
