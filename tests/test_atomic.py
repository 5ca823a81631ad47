"""Atomic writes: all or nothing, no temporary files left behind."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from graphgrad._atomic import atomic_open, atomic_write_bytes, atomic_write_text, sha256_file


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_bytes_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert _leftovers(tmp_path) == []


def test_write_text_utf8_and_newlines_untranslated(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "héllo\nwörld\r\n")
    assert target.read_bytes() == "héllo\nwörld\r\n".encode()


def test_exception_leaves_original_untouched(tmp_path: Path) -> None:
    target = tmp_path / "keep.bin"
    target.write_bytes(b"original")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target) as f:
        f.write(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"original"
    assert _leftovers(tmp_path) == []


def test_exception_on_new_file_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    with pytest.raises(KeyError), atomic_open(target, "wb") as f:
        f.write(b"x")
        raise KeyError("stop")
    assert list(tmp_path.iterdir()) == []


def test_failed_replace_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_temp_file_is_in_same_directory(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    with atomic_open(target, "w") as f:
        f.write("data")
        assert len(_leftovers(tmp_path)) == 1
        assert not target.exists()
    assert target.read_text() == "data"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_permissions_kept_and_umask_respected(tmp_path: Path) -> None:
    target = tmp_path / "script.sh"
    target.write_text("old")
    target.chmod(0o751)
    atomic_write_text(target, "new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o751
    old = os.umask(0o027)
    try:
        fresh = tmp_path / "fresh.txt"
        atomic_write_text(fresh, "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640


def test_bad_mode_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        atomic_open(tmp_path / "a", "ab")  # type: ignore[call-overload]
    with (
        pytest.raises(FileNotFoundError, match="does not exist"),
        atomic_open(tmp_path / "no" / "such" / "file"),
    ):
        pass


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 123)  # spans several read chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()


def test_a_target_that_cannot_be_a_file_is_named_not_its_temporary(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    cases = {
        tmp_path: (IsADirectoryError, errno.EISDIR, "it is a directory, not a file"),
        tmp_path / "no" / "x": (FileNotFoundError, errno.ENOENT, f"the folder {tmp_path / 'no'}"),
        a_file / "x": (NotADirectoryError, errno.ENOTDIR, f"{a_file} is a file, not a folder"),
    }
    for target, (kind, code, why) in cases.items():
        with pytest.raises(kind) as info:
            atomic_write_text(target, "new")
        assert info.value.errno == code and why in str(info.value.strerror)
        assert info.value.filename == str(target) and info.value.filename2 is None
    assert sorted(os.listdir(tmp_path)) == ["a_file"] and a_file.read_text() == "mine"
