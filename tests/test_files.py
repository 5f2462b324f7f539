"""``conformance.files``: how every file the suite writes is written."""

from __future__ import annotations

import pytest

from conformance import files


def test_atomic_write_missing_directory_and_failed_write(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        files.atomic_write(tmp_path / "nope" / "x.bin", b"data")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match=r"disk full"):
        files.atomic_write(tmp_path / "x.bin", b"data")
    assert not list(tmp_path.iterdir())  # neither the target nor the temporary file
