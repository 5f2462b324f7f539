"""Regenerate ``conformance/formats/caffe_pb2.py`` (and its type stub) from
``conformance/formats/caffe.proto`` with grpcio-tools' protoc.

grpcio-tools is not a dependency of the suite; install it where you run this:

    pip install grpcio-tools==1.62.3
    python scripts/make_caffe_pb2.py

1.62.3 bundles protoc 25.1, whose Python code runs on protobuf 4.25 and every later
release (newer protoc versions write code that refuses an older protobuf runtime), so
the ``caffe`` extra can ask for ``protobuf>=4.25``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ROOT / "conformance" / "formats"
PROTOC = "25.1"  # the compiler the committed file was made with


def main() -> int:
    try:
        from grpc_tools import protoc  # noqa: F401 - only to say how to install it
    except ImportError:
        print("grpcio-tools is not installed: pip install grpcio-tools==1.62.3", file=sys.stderr)
        return 2
    version = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "--version"], check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    if version != PROTOC:
        print(f"protoc {version}: expected {PROTOC} (pip install grpcio-tools==1.62.3)", file=sys.stderr)
        return 2
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT}",  # the schema is then "conformance/formats/caffe.proto", never a real Caffe's "caffe.proto"
            f"--python_out={ROOT}",
            f"--pyi_out={ROOT}",
            "conformance/formats/caffe.proto",
        ],
        check=True,
        cwd=ROOT,
    )
    print(f"wrote {FORMATS / 'caffe_pb2.py'} and caffe_pb2.pyi (protoc {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
