"""Record torchvision's GoogLeNet as test fixtures (run where torchvision is installed).

torchvision is not a dependency of the suite (0.29.1 needs torch 2.14.1, a large CUDA
build), so its facts are recorded once into ``tests/data``:

* ``torchvision_googlenet_keys.json``: every state_dict key and shape of
  ``googlenet(aux_logits=True)``, ``num_batches_tracked`` included;
* ``torchvision_googlenet_outputs.npz``: torchvision's own logits and aux logits, in
  eval mode with ``transform_input=True``, after loading its state_dict with seeded
  canonical weights (``conformance.canonical.random_params``), for seeded inputs.

Usage (from the repository root)::

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1 \
        "numpy<2" safetensors
    PYTHONPATH=. /tmp/tv/bin/python scripts/make_torchvision_reference.py [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch
import torchvision

from conformance import canonical, spec

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SEED = 7
SIZES = (224, 97)
BATCH = 2


def params_digest(params: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key, value in params.items():
        h.update(key.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def reference_input(size: int) -> np.ndarray:
    return np.random.default_rng([SEED, size]).standard_normal((BATCH, 3, size, size)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--force", action="store_true", help="overwrite existing fixtures")
    args = parser.parse_args()

    model = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True).eval()
    state = model.state_dict()
    keys = {k: list(v.shape) for k, v in state.items()}

    p = spec.resolve("googlenet_bn", aux_logits=True, transform_input=True)
    params = canonical.random_params(p, SEED)
    full = {k: (torch.from_numpy(params[k]) if k in params else v) for k, v in state.items()}
    model.load_state_dict(full, strict=True)  # proves the canonical names are torchvision's

    taps: dict[str, torch.Tensor] = {}
    model.inception4a.register_forward_hook(lambda m, i, o: taps.__setitem__("4a", o))
    model.inception4d.register_forward_hook(lambda m, i, o: taps.__setitem__("4d", o))
    outputs: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for size in SIZES:
            logits = model(torch.from_numpy(reference_input(size)))
            outputs[f"logits_{size}"] = logits.numpy()
            outputs[f"aux1_{size}"] = model.aux1(taps["4a"]).numpy()  # eval: no dropout
            outputs[f"aux2_{size}"] = model.aux2(taps["4d"]).numpy()

    buffer = io.BytesIO()
    np.savez(
        buffer,
        **outputs,
        params_sha256=np.array(params_digest(params)),
        torchvision=np.array(torchvision.__version__),
        torch=np.array(torch.__version__),
    )
    canonical.atomic_write(DATA / "torchvision_googlenet_outputs.npz", buffer.getvalue(), args.force)
    lines = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in keys.items())
    canonical.atomic_write(DATA / "torchvision_googlenet_keys.json", f"{{\n{lines}\n}}\n".encode(), args.force)
    print(f"recorded torchvision {torchvision.__version__} (torch {torch.__version__}) into {DATA}")


if __name__ == "__main__":
    main()
