"""Seeded fuzzing of ``port``: valid checkpoints of every format, mutated (truncated,
bytes flipped, declared sizes inflated, dtypes changed, entries added or removed), each
ported. Every run ends with a verified output or one PortError (the CLI's exit 2 with
one message): never another exception (a traceback), a VerificationError (a reader that
let a broken file through), or more than 1 GB of memory.

In CI every (format, mutation) pair runs once in-process and a few random cases run as
command-line subprocesses. For a longer run: ``FUZZ_CASES=500 FUZZ_SEED=1 pytest
tests/test_fuzz.py -s`` (cases drawn at random; ``FUZZ_CLI`` subprocess cases).
"""

from __future__ import annotations

import importlib.util
import os
import re
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, frameworks, spec
from conformance.formats.port import PortError, port
from conformance.formats.registry import FORMATS

from . import caffe_files, hostile
from .conftest import installed
from .fuzz_mutations import SPECIFIC, Mutation, mutate
from .helpers import assert_refused, command

VARIANT = "inception_mnist"
SEED = int(os.environ.get("FUZZ_SEED", "0"))
SUFFIX = {
    "safetensors": ".safetensors",
    "npz": ".npz",
    "torch": ".pth",
    "keras-weights": ".weights.h5",
    "keras": ".keras",
    "mxnet": ".params",
    "caffe": ".caffemodel",
}
FORMAT_VARIANT = {"caffe": "googlenet_lrn"}  # a .caffemodel holds Caffe's network; the others the small one
MUTATIONS = ("truncate", "flip", "inflate", "dtype", "extra", "missing")
TARGETS = ("npz", "safetensors", "mxnet", "torch")
PEAK_GROWTH_MB = 1000


def variant_of(fmt: str) -> str:
    return FORMAT_VARIANT.get(fmt, VARIANT)


def plan(fmt: str = "") -> spec.Plan:
    return spec.resolve(variant_of(fmt), aux_logits=fmt in FORMAT_VARIANT)


def available() -> list[str]:
    have = set(installed())
    protobuf = importlib.util.find_spec("google.protobuf") is not None
    return [f for f in SUFFIX if FORMATS[f].framework in (None, *have) and (f != "caffe" or protobuf)]


# Structural mutations (issue 24): each makes a file no reader may accept, and each once
# ended in a traceback or gigabytes. Drawn per format like the others, always refused.


def zip_version(data: bytes, rng: np.random.Generator) -> bytes:
    record = int(rng.integers(0, data.count(hostile.CENTRAL)))
    return hostile.zip_version_needed(data, record, int(rng.integers(0x40, 0x100)))


def _cycle_name(rng: np.random.Generator) -> str:
    return "L" * int(rng.choice([1, 100, 10_000]))


def h5_cycle(data: bytes, rng: np.random.Generator) -> bytes:
    return hostile.h5_linked_to_root(data, _cycle_name(rng))


def keras_cycle(data: bytes, rng: np.random.Generator) -> bytes:
    name = _cycle_name(rng)
    return hostile.keras_member_edited(data, "model.weights.h5", lambda h5: hostile.h5_linked_to_root(h5, name))


def onnx_nodes(data: bytes, rng: np.random.Generator) -> bytes:
    """More empty nodes than the bound (16 per budgeted tensor: 1,888 for inception_mnist),
    within the file size the variant admits, so the count, not the size, refuses it."""
    return hostile.onnx_empty_nodes(int(rng.integers(2_000, 1_000_000)), data)


def onnx_duplicate(data: bytes, rng: np.random.Generator) -> bytes:
    import onnx

    names = sorted(i.name for i in onnx.load_from_string(data).graph.initializer if i.data_type == 1)
    return hostile.onnx_duplicate_initializer(data, names[int(rng.integers(0, len(names)))])


# What the refusal of each structural mutation says: refused for its own reason, not by
# an earlier check it happens to trip.
STRUCTURAL_REASON = {
    "zip-version": "zip file version",
    "h5-cycle": "second link to an object|path is 10,00",
    "nodes": "nodes; this network's graph needs far fewer",
    "duplicate": "two initializers are named",
}
STRUCTURAL: dict[str, dict[str, Mutation]] = {
    "npz": {"zip-version": zip_version},
    "torch": {"zip-version": zip_version},
    "keras": {"zip-version": zip_version, "h5-cycle": keras_cycle},
    "keras-weights": {"h5-cycle": h5_cycle},
    "onnx": {"nodes": onnx_nodes, "duplicate": onnx_duplicate},
}


# Running the cases
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    """A valid inception_mnist file of every available format, written as each
    framework's users write it (safetensors by the suite, a googlenet_lrn .caffemodel as
    Caffe 2014 wrote bvlc_googlenet's, by the tests' schema)."""
    p = plan()
    params = canonical.random_params(p, SEED)
    d = tmp_path_factory.mktemp("originals")
    backends = installed()
    writers: dict[str, Callable[[Path], object]] = {
        "safetensors": lambda path: canonical.save(params, path, p),
        "npz": lambda path: np.savez(path, **params),
    }

    def native(name: str, save: Callable[[object, Path], object]) -> Callable[[Path], object]:
        def write(path: Path) -> None:
            model = backends[name].build(VARIANT)
            backends[name].from_canonical(model, params)
            save(model, path)

        return write

    if "torch" in backends:
        import torch

        writers["torch"] = native("torch", lambda m, path: torch.save(m.state_dict(), path))
    if "keras" in backends:
        writers["keras-weights"] = native("keras", lambda m, path: m.save_weights(str(path)))
        writers["keras"] = native("keras", lambda m, path: m.save(str(path)))
    if "mxnet" in backends:
        writers["mxnet"] = native("mxnet", lambda m, path: m.save_parameters(str(path)))
    writers["caffe"] = lambda path: caffe_files.write(path, canonical.random_params(plan("caffe"), SEED), v1=True)
    out = {}
    for fmt in available():
        path = d / f"original{SUFFIX[fmt]}"
        writers[fmt](path)
        out[fmt] = path.read_bytes()
    return out


def peak_growth_mb(run: Callable[[], object]) -> float | None:
    """Peak resident memory above the start, while ``run`` runs (Linux: /proc's peak is
    reset first); None where it cannot be measured."""
    status = Path("/proc/self/status")

    def field(name: str) -> float:
        line = next(line for line in status.read_text().splitlines() if line.startswith(name))
        return int(line.split()[1]) / 1024

    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        run()
        return None
    before = field("VmRSS:")
    run()
    return field("VmHWM:") - before


def cases(count: int, rng: np.random.Generator, formats: list[str]) -> list[tuple[str, str]]:
    every = [(f, m) for f in formats for m in MUTATIONS]
    if count <= len(every):
        return every[:count]
    return every + [every[int(i)] for i in rng.integers(0, len(every), count - len(every))]


def outcome(src: Path, dst: Path, variant: str) -> str:
    """ "pass" (verified), "refused" (one PortError line) or what went wrong."""
    try:
        result = port(src, dst, variant)
    except PortError as e:
        message = str(e)
        if not message or "\n" in message:
            return f"PortError of {message.count(chr(10)) + 1} lines: {message[:300]!r}"
        return "refused"
    except Exception:  # noqa: BLE001 - what the fuzzing looks for: any other exception is a bug
        return "EXCEPTION " + traceback.format_exc()[-1500:]
    return "pass" if result.passed and dst.exists() else f"port returned unverified: {result}"


def test_mutated_checkpoints_are_ported_or_refused_in_one_message(originals, tmp_path, capsys):
    rng = np.random.default_rng(SEED)
    have = installed()
    targets = [t for t in TARGETS if FORMATS[t].framework in (None, *have)]
    count = int(os.environ.get("FUZZ_CASES", len(originals) * len(MUTATIONS)))
    tally: Counter = Counter()
    failures = []
    for i, (fmt, kind) in enumerate(cases(count, rng, list(originals))):
        src = tmp_path / f"case{i}{SUFFIX[fmt]}"
        src.write_bytes(mutate(fmt, kind, originals[fmt], rng))
        dst = tmp_path / f"out{i}{SUFFIX[targets[i % len(targets)]]}"
        got: list[str] = []
        variant = variant_of(fmt)
        grown = peak_growth_mb(lambda src=src, dst=dst, got=got, v=variant: got.append(outcome(src, dst, v)))
        result = got[0]
        tally[(fmt, kind, result if result in ("pass", "refused") else "FAILED")] += 1
        if result not in ("pass", "refused") or (grown is not None and grown > PEAK_GROWTH_MB):
            failures.append(f"case {i} ({fmt}, {kind}, seed {SEED}): {result}; peak growth {grown} MB")
        leftover = [p.name for p in tmp_path.iterdir() if ".conformance-tmp" in p.name]
        assert not leftover, (i, fmt, kind, leftover)
        src.unlink()
        dst.unlink(missing_ok=True)
    with capsys.disabled():
        print(f"\nfuzz: {sum(tally.values())} cases, seed {SEED}")
        for (fmt, kind, result), n in sorted(tally.items()):
            print(f"  {fmt:<14} {kind:<9} {result:<8} {n}")
    assert not failures, "\n\n".join(failures[:5])


def test_mutated_checkpoints_on_the_command_line(originals, tmp_path, capsys):
    """A few random cases as users run them: exit 0 or 2, one message, no traceback,
    under 1 GB peak memory (of the whole process, imports included)."""
    rng = np.random.default_rng(SEED + 1)
    count = int(os.environ.get("FUZZ_CLI", "3"))
    for i in range(count):
        fmt = list(originals)[int(rng.integers(0, len(originals)))]
        kind = MUTATIONS[int(rng.integers(0, len(MUTATIONS)))]
        src = tmp_path / f"cli{i}{SUFFIX[fmt]}"
        src.write_bytes(mutate(fmt, kind, originals[fmt], rng))
        m = hostile.run_measured(command("port", str(src), str(tmp_path / f"cli{i}.npz"), "--variant", variant_of(fmt)))
        with capsys.disabled():
            print(f"\nfuzz cli {fmt} {kind}: exit {m.returncode}, peak {m.peak_mb:.0f} MB, {m.seconds:.1f} s")
        assert m.returncode in (0, 2), (fmt, kind, m.returncode, m.stderr[-3000:])
        assert "Traceback" not in m.stderr, (fmt, kind, m.stderr[-3000:])
        if m.returncode == 2:
            assert m.stderr.count("error:") == 1, m.stderr
        else:
            assert m.stdout.strip().endswith("PASS")
        assert m.peak_mb < 1000, (fmt, kind, m.peak_mb)


@pytest.fixture(scope="module")
def structural_originals(originals) -> dict[str, bytes]:
    """The originals the structural mutations edit, with an ONNX file of the network
    where onnx and its exporter are installed."""
    out = {fmt: originals[fmt] for fmt in STRUCTURAL if fmt in originals}
    if all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript")) and "torch" in installed():
        data, _ = FORMATS["onnx"].write(canonical.random_params(plan(), SEED), plan())
        assert isinstance(data, bytes)
        out["onnx"] = data
    return out


def refusal(src: Path, dst: Path) -> str:
    """The PortError ``port`` raises for ``src``, or what happened instead."""
    try:
        port(src, dst, VARIANT)
    except PortError as e:
        return str(e)
    except Exception:  # noqa: BLE001 - a traceback is what the structural fuzzing looks for
        return "EXCEPTION " + traceback.format_exc()[-1500:]
    return "PORTED: accepted a file no reader may accept"


def test_structural_mutations_are_refused_in_one_message(structural_originals, tmp_path, capsys):
    """Issue 24, rows 1, 2, 4 and 5: a zip "version needed" no reader implements, an HDF5
    hard link back to the root, an ONNX graph of more empty nodes than the network has,
    two initializers of one name. Each is refused (never ported) in one line, within
    1 GB; seeded, two draws of each."""
    rng = np.random.default_rng(SEED)
    failures, seen = [], []
    for fmt, mutations in STRUCTURAL.items():
        if fmt not in structural_originals:
            continue
        suffix = SUFFIX.get(fmt, ".onnx")
        for kind, edit in mutations.items():
            for draw in range(2):
                src = tmp_path / f"{fmt}-{kind}-{draw}{suffix}"
                src.write_bytes(edit(structural_originals[fmt], rng))
                got: list[str] = []
                grown = peak_growth_mb(lambda src=src, got=got: got.append(refusal(src, tmp_path / "out.npz")))
                seen.append((fmt, kind))
                reason = re.search(STRUCTURAL_REASON[kind], got[0]) and "\n" not in got[0]
                if not reason or (grown is not None and grown > PEAK_GROWTH_MB):
                    failures.append(f"{fmt} {kind} draw {draw}: {got[0][:1500]}; peak growth {grown} MB")
                assert not (tmp_path / "out.npz").exists()
    with capsys.disabled():
        print(f"\nstructural fuzz: {len(seen)} cases, seed {SEED}, formats {sorted({f for f, _ in seen})}")
    assert seen, "no format of the structural mutations is installed"
    assert not failures, "\n\n".join(failures)


def test_structural_mutations_on_the_command_line(structural_originals, tmp_path):
    """One drawn structural case as a user runs it: exit 2, one line, under 1 GB."""
    rng = np.random.default_rng(SEED + 2)
    pairs = [(f, k) for f, m in STRUCTURAL.items() if f in structural_originals for k in m]
    fmt, kind = pairs[int(rng.integers(0, len(pairs)))]
    src = tmp_path / f"cli{SUFFIX.get(fmt, '.onnx')}"
    src.write_bytes(STRUCTURAL[fmt][kind](structural_originals[fmt], rng))
    m = hostile.run_measured(command("port", str(src), str(tmp_path / "cli.npz"), "--variant", VARIANT))
    assert_refused(m)
    assert m.stderr.startswith("error:"), m.stderr
    assert m.peak_mb < 1000, (fmt, kind, m.peak_mb)


def test_the_fuzzer_covers_every_format_and_mutation():
    assert set(SPECIFIC) == set(SUFFIX) and all(
        set(v) == set(MUTATIONS) - {"truncate", "flip"} for v in SPECIFIC.values()
    )
    assert set(frameworks.FRAMEWORKS) >= {FORMATS[f].framework for f in SUFFIX} - {None}
    assert set(STRUCTURAL) <= set(SUFFIX) | {"onnx"} and all(STRUCTURAL.values())
