"""With all three frameworks imported, in either order, each computes on every core.

MXNet 1.9 takes half the cores on x86 at import and lowers OpenMP's thread limit,
which PyTorch shares: ``torch.get_num_threads()`` fell from 2 to 1 here whichever was
imported first. Each case runs in a fresh interpreter: thread settings are fixed by
the first import in a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.frameworks import usable_cores

from .conftest import installed

ROOT = Path(__file__).resolve().parents[1]


def threads_after(*imports: str) -> dict[str, int]:
    """conformance.frameworks.threads() in a fresh interpreter after these imports."""
    code = "\n".join(
        [
            "import json, numpy",
            "numpy.bool = bool",  # what impl_mxnet restores, for a bare `import mxnet`
            *imports,
            "from conformance.frameworks import threads",
            "print(json.dumps(threads()))",
        ]
    )
    # as a new user's shell has it: without what this process's imports set
    env = {k: v for k, v in os.environ.items() if k not in ("MXNET_OMP_MAX_THREADS", "OMP_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def needs_all_three() -> None:
    if len(installed()) < 3:
        pytest.skip(f"needs all three frameworks, found {sorted(installed())}")


@pytest.mark.parametrize(
    "order",
    [
        ("import impl_torch", "import impl_keras", "import impl_mxnet"),
        ("import impl_mxnet", "import impl_keras", "import impl_torch"),
        ("from conformance import frameworks", "frameworks.load(['mxnet', 'torch', 'keras'])"),
    ],
    ids=["torch first", "mxnet first", "frameworks.load"],
)
def test_every_framework_uses_every_core_whatever_the_import_order(order):
    needs_all_three()
    found = threads_after(*order)
    cores = usable_cores()
    assert found["torch"] == cores, found
    assert found["mxnet"] == cores and found["openmp"] == cores, found
    # 0 is TensorFlow's default: one thread per core
    assert found["tensorflow intra-op"] in (0, cores) and found["tensorflow inter-op"] in (0, cores), found


def test_mxnet_imported_bare_first_would_take_half_the_cores_and_torch_gets_them_back():
    """The control: a bare `import mxnet` (no conformance.frameworks.use_every_core)
    lowers OpenMP's limit, which PyTorch reads; importing impl_torch restores it."""
    needs_all_three()
    if usable_cores() < 2:
        pytest.skip("one core: half of it is still one, nothing to see")
    bare = threads_after("import mxnet", "import torch")
    assert bare["torch"] < usable_cores(), bare  # the bug, as MXNet 1.9 does it
    fixed = threads_after("import mxnet", "import impl_torch")
    assert fixed["torch"] == usable_cores(), fixed
