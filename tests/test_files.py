"""Writes never destroy what a path names: /dev/null stays a device, a symlink stays a link
and its target gets the data, a FIFO gets the data, modes are kept, a failed write leaves the
old file intact; outputs that are inputs are found through links."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from graphc.errors import GraphcError, UsageError
from graphc.files import check_not_an_input, same_file, write_atomic


def test_a_new_file_gets_the_data_and_no_temporary_file_remains(tmp_path: Path) -> None:
    path = tmp_path / "out.onnx"
    write_atomic(path, b"graphc")
    assert path.read_bytes() == b"graphc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@pytest.mark.skipif(not os.access("/dev/null", os.W_OK), reason="/dev/null is not writable")
def test_dev_null_stays_a_character_device() -> None:
    before = os.stat("/dev/null")
    write_atomic("/dev/null", b"x" * 1000)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_rdev, after.st_mode) == \
        (before.st_ino, before.st_rdev, before.st_mode)


def test_a_symlink_stays_a_link_and_its_target_gets_the_data(tmp_path: Path) -> None:
    real = tmp_path / "data" / "model.onnx"
    real.parent.mkdir()
    real.write_bytes(b"old")
    real.chmod(0o640)
    link = tmp_path / "link.onnx"
    link.symlink_to(real)
    write_atomic(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    # The temporary file lived in the target's folder, and is gone.
    assert sorted(p.name for p in real.parent.iterdir()) == ["model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "link.onnx"]


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target.bin")
    write_atomic(link, b"abc")
    assert link.is_symlink() and (tmp_path / "target.bin").read_bytes() == b"abc"


def test_a_fifo_gets_the_data_and_stays_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []

    def reader() -> None:
        with open(fifo, "rb") as f:
            received.append(f.read())

    thread = threading.Thread(target=reader)
    thread.start()
    write_atomic(fifo, b"through the pipe")
    thread.join()
    assert received == [b"through the pipe"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_the_mode_of_an_existing_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "script.sh"
    path.write_bytes(b"old")
    path.chmod(0o750)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o750


def test_a_failed_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"the original")

    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"the original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_is_one_clear_error_and_the_file_stays(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "model.onnx"
    path.write_bytes(b"the original")
    folder.chmod(0o500)
    try:
        with pytest.raises(GraphcError, match="cannot write .*model.onnx"):
            write_atomic(path, b"new")
    finally:
        folder.chmod(0o700)
    assert path.read_bytes() == b"the original"


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GraphcError, match="expected a regular file, a FIFO or a character "
                                          "device, got a folder"):
        write_atomic(tmp_path, b"x")
    assert tmp_path.is_dir()


def test_same_file_resolves_symlinks_and_hard_links(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("x = 1\n")
    hard = tmp_path / "hard.py"
    os.link(a, hard)
    soft = tmp_path / "soft.py"
    soft.symlink_to(a)
    other = tmp_path / "b.py"
    other.write_text("x = 1\n")
    assert same_file(a, hard) and same_file(a, soft) and same_file(soft, hard)
    assert same_file(a, tmp_path / "." / "a.py")
    assert not same_file(a, other)
    # A path that does not exist yet is the same file only as its own resolved path.
    assert same_file(tmp_path / "new.onnx", tmp_path / "sub" / ".." / "new.onnx")
    assert not same_file(tmp_path / "new.onnx", a)


def test_check_not_an_input_refuses_an_output_that_is_an_input(tmp_path: Path) -> None:
    model = tmp_path / "m.py"
    model.write_text("x = 1\n")
    link = tmp_path / "out.onnx"
    link.symlink_to(model)
    check_not_an_input(tmp_path / "m.onnx", [model, None])
    with pytest.raises(UsageError) as info:
        check_not_an_input(link, [None, model], option="--onnx")
    assert str(info.value) == (
        f"--onnx {str(link)!r} would overwrite an input; expected an output path that is none "
        f"of the inputs, got the same file as {str(model)!r}. Write the output to another file.")
    check_not_an_input("/dev/null", ["/dev/null"])
