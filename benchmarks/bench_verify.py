"""``verify`` on googlenet_bn at 224: wall time and peak memory of one run, phase by phase.

The user's model is torchvision's GoogLeNet as a user types it in
(``tests/user_nets.py``: ``TorchvisionStyle``), paired by names; the run compares every
stage at 224 x 224 with a batch of 2, without the diagnosis (``--no-diagnosis``), or with
it (``--diagnosis``: the pitfall catalogue replayed once per mistake). Printed: seconds
for importing torch, pairing, the comparison and the diagnosis, and the peak resident
memory of the process (what ``/usr/bin/time -v`` reports as maximum resident set size):

    python benchmarks/bench_verify.py [--input-size 224] [--batch 2] [--diagnosis] [--eps 1e-5]

``--eps 1e-5`` builds the model with PyTorch's default BatchNorm epsilon (a mistake), so
the outputs disagree and the diagnosis has something to find. Fresh BatchNorm statistics
(running variance 1) would hide that mistake from the logits (1e-3 against 1e-5 beside 1
moves them by 3e-6 relative), so the running statistics are drawn as trained ones look
(variance 1e-3 to 1e-2, mean near 0): the whole catalogue then runs, and finds
``bn-eps-gluon``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--diagnosis", action="store_true")
    parser.add_argument("--eps", type=float, default=1e-3)
    args = parser.parse_args()

    started = time.perf_counter()
    import torch

    from conformance.verify import verifying
    from tests import user_nets

    imported = time.perf_counter()
    torch.manual_seed(0)
    model = user_nets.TorchvisionStyle(eps=args.eps)
    drawn = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            mean, var = module.running_mean, module.running_var
            assert mean is not None and var is not None  # track_running_stats, as torchvision's
            var.copy_(torch.rand(var.shape, generator=drawn) * 9e-3 + 1e-3)
            mean.copy_(torch.randn(mean.shape, generator=drawn) * 0.01)
    built = time.perf_counter()
    pairings = verifying.fits(model, "googlenet_bn", None)
    paired = time.perf_counter()
    result, inputs, got = verifying.compare(model, pairings[0], [args.input_size], args.batch, 0)
    compared = time.perf_counter()
    findings = []
    if args.diagnosis and not result.agree:
        findings = verifying.diagnose.diagnose(pairings[0].plan, pairings[0].params, inputs, got)
    diagnosed = time.perf_counter()
    names = [" + ".join(finding.pitfalls) for finding in findings]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"verify googlenet_bn at {args.input_size}, batch {args.batch} (eps {args.eps}):")
    print(f"  agree {result.agree}, first divergence {result.first_divergence}, findings {names}")
    print(f"  import {imported - started:.1f} s, build {built - imported:.1f} s, pairing {paired - built:.1f} s")
    print(f"  comparison {compared - paired:.1f} s, diagnosis {diagnosed - compared:.1f} s")
    print(f"  total {diagnosed - started:.1f} s, peak resident memory {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
