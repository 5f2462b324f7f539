"""A port's two paths, each resolved once before any work into the object every later
step takes: the source (:func:`source`: what it is, its format, the file checked) and
the destination (:func:`destination`: its format, writable under that name, not SRC)."""

from __future__ import annotations

import os
from pathlib import Path

from .. import files
from . import orbax_files, registry, staging, tfcheckpoint
from .base import Destination, Format, PortError, Source


def source(src: str | Path, src_format: str | None, option: str = "--from") -> Source:
    """``src`` resolved: probed once for a TensorFlow checkpoint (then the prefix is read
    and its ``.index`` checked), checked to be a readable regular file, and its format
    taken from ``src_format`` or the name (``option`` names the choice in messages)."""
    path = Path(src)
    if path.is_dir() and orbax_files.looks_like(path):  # a checkpoint that is a directory: its _METADATA checked
        fmt = registry.format_of(path, src_format or "orbax", option, False)
        return Source(path, fmt, path / orbax_files.METADATA, False)
    prefix = tfcheckpoint.prefix(path)
    read_path, checked = (path, path) if prefix is None else (prefix, tfcheckpoint.index(prefix))
    _check_source(checked)
    fmt = registry.format_of(read_path, src_format, option, prefix is not None)
    return Source(read_path, fmt, checked, prefix is not None)


def _check_source(src: Path) -> None:
    if not src.exists():
        raise PortError(f"SRC {src}: no such file" + (" (a symbolic link to nothing)" if src.is_symlink() else ""))
    if src.is_dir():
        raise PortError(
            f"SRC {src}: a directory; give a checkpoint file "
            f"(or an Orbax checkpoint directory, which holds a {orbax_files.METADATA})"
        )
    if not src.is_file():
        raise PortError(f"SRC {src}: {files.kind(src.stat().st_mode)}, not a regular file; give a checkpoint file")
    try:
        with open(src, "rb"):
            pass
    except OSError as e:
        raise PortError(f"SRC {src}: not readable ({e.strerror})") from None


def destination(dst: str | Path, dst_format: str | None, src: Source | None, force: bool) -> Destination:
    """``dst`` resolved: its format (``--to`` or the name), writable under a name its
    framework loads, and not SRC (None: there is no source file, as for ``init``)."""
    path = Path(dst)
    return check_destination(path, registry.infer(path, dst_format, "--to"), src, force)


def check_destination(path: Path, fmt: Format, src: Source | None, force: bool) -> Destination:
    """:func:`destination` of a path whose format is known (``init`` says its other
    options' errors between the two)."""
    if not fmt.writable:
        raise PortError(
            f"DST {path}: {fmt.description} files are read here, not written; write another format "
            f"(.pth, .safetensors, .weights.h5, .params, ...)"
        )
    src_path = None if src is None else src.path
    if src_path is not None and os.path.lexists(path) and path.resolve() == src_path.resolve():
        raise PortError(f"DST {path} is SRC: write the port to another file")
    if fmt.names and not path.name.endswith(fmt.names):
        wanted = " or ".join(fmt.names)
        known = sorted((s for f in registry.FORMATS.values() for s in f.suffixes), key=len, reverse=True)
        stem = next((path.name[: -len(s)] for s in known if path.name.endswith(s)), path.name.removesuffix(path.suffix))
        raise PortError(
            f"DST {path}: {fmt.framework} loads {fmt.description} only from a name ending in {wanted} "
            f"(it refuses others); name it e.g. {stem}{fmt.names[0]}"
        )
    suffix = next((s for s in fmt.suffixes if path.name.endswith(s)), path.suffix)
    if fmt.layout == "directory":
        staging.check_directory_output(path)
        return Destination(path, fmt, suffix, force)
    try:
        for output in staging.outputs(path, fmt.layout):
            if src_path is not None and output.exists() and output.resolve() == src_path.resolve():
                raise PortError(f"DST {output} is SRC: write the port to another file")
            files.check_output(output, force, "DST", suffix=suffix)
    except files.OutputError as e:
        raise PortError(str(e)) from None
    return Destination(path, fmt, suffix, force)
