"""Implementations the suite did not write: a package installed as a user installs one
(tests/plugin_demo, with ``pip install --target``) is found through its entry point and
checked like a built-in; the same package with one mistake fails the check that should
catch it; a module that breaks the contract is refused by name before any work."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import impl_torch
from conformance import frameworks, interface

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tests" / "plugin_demo"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The demo plug-in installed into a directory of its own (offline: no build isolation)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", target, DEMO],
        check=True,
        capture_output=True,
        cwd=tmp_path_factory.mktemp("build"),
    )
    return target


def run(site: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    return subprocess.run(
        [sys.executable, *args], check=False, capture_output=True, text=True, env=env, timeout=timeout, cwd=site
    )


def check(site: Path, frameworks: str, *options: str) -> subprocess.CompletedProcess:
    return run(site, "-m", "conformance", "check", "--frameworks", frameworks, "--variant", "googlenet", *options)


def test_an_installed_plugin_is_found_by_its_entry_point_and_passes_the_check(site):
    r = check(site, "torch,demo", "--input-size", "224", "--batch", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo 0.1.0 on torch" in r.stdout and "PASS: all" in r.stdout


def test_a_plugin_with_floor_pooling_fails_the_stage_check(site):
    r = check(site, "torch,demo-floor")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "maxpool1" in r.stdout


def test_a_module_path_is_a_plugin_too(site):
    r = check(site, "torch,googlenet_plugin_demo", "--input-size", "224", "--batch", "1")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("json", "json: not a conformance backend: it has no INTERFACE_VERSION"),
        ("no_such_module_here", "no_such_module_here: cannot import it as a framework (ModuleNotFoundError"),
        ("torch,bad name", "unknown ['bad name']"),
    ],
)
def test_a_module_that_is_not_a_backend_is_refused_in_one_line(site, name, says):
    r = check(site, name)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and "--frameworks" in r.stderr
    assert says in r.stderr, r.stderr


def test_the_plugins_own_tests_from_the_kit_pass_and_catch_its_mistake(site):
    r = run(site, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(DEMO / "demo_tests"), "-o", "addopts=")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed, 5 passed" in r.stdout, r.stdout
    assert "FAILED" in r.stdout and "test_floor[googlenet-stages]" in r.stdout


def _conforming(**changes: object) -> types.SimpleNamespace:
    fields = {name: getattr(impl_torch, name) for name in interface.FUNCTIONS}
    return types.SimpleNamespace(**{"INTERFACE_VERSION": interface.VERSION, **fields, **changes})


def test_the_built_ins_conform():
    backends, _ = frameworks.load(frameworks.FRAMEWORKS)
    assert all(interface.breaches(b) == [] for b in backends.values())


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"INTERFACE_VERSION": 2}, "declares INTERFACE_VERSION = 2, this suite speaks 1"),
        ({"to_onnx": None}, "has a `to_onnx` that is not callable"),
        ({"MODES": ("fast",)}, "has no 'eager' in `MODES`"),
        ({"MODES": []}, "has `MODES` that is not a non-empty tuple of strings"),
        ({"name": ""}, "has a `name` that is not a non-empty string"),
    ],
)
def test_each_breach_of_the_contract_is_named(changes, says):
    found = interface.breaches(_conforming(**changes))
    assert len(found) == 1 and found[0].startswith(says), found


def test_a_missing_function_is_named():
    package = _conforming()
    del package.Trainer
    assert interface.breaches(package) == ["has no `Trainer`"]


def test_an_optional_built_in_that_is_not_installed_is_skipped_with_its_hint(monkeypatch):
    monkeypatch.setitem(frameworks.OPTIONAL, "ghost", ("impl_ghost_not_here", "pip install ghost"))
    assert frameworks.parse("torch,ghost") == ["torch", "ghost"]
    backends, skipped = frameworks.load(["torch", "ghost"])
    assert list(backends) == ["torch"] and "install with: pip install ghost" in skipped["ghost"]
