"""Only regular files are opened as records, checkpoints or data (issue 15): a FIFO would block a read
forever, a device never ends, a symlink loop or a directory is not "no such file". Each is one line naming
what the path really is."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pflnas.errors import ConfigError, PflnasError
from pflnas.utils_io import check_regular_file, open_regular, read_regular_bytes, read_regular_text


def _fifo(p: Path) -> Path:
    os.mkfifo(p)
    return p


def _loop(p: Path) -> Path:
    other = p.with_name(p.name + ".other")
    other.symlink_to(p)
    p.symlink_to(other)
    return p


def _socket(p: Path) -> Path:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()
    return p


def _broken(p: Path) -> Path:
    p.symlink_to(p.with_name("nowhere"))
    return p


NOT_FILES = {
    "fifo": (_fifo, "FIFO"),
    "directory": (lambda p: (p.mkdir(), p)[1], "directory"),
    "symlink_loop": (_loop, "symlink loop"),
    "char_device": (lambda p: Path("/dev/zero"), "character device"),
    "socket": (_socket, "socket"),
    "broken_link": (_broken, "broken symlink"),
    "missing": (lambda p: p, "no such file"),
    "under_a_file": (lambda p: (p.write_text("x"), p / "child")[1], "no such file"),
}


@pytest.mark.skipif(os.name != "posix", reason="FIFOs, sockets and /dev/zero are POSIX")
@pytest.mark.parametrize("reader", [check_regular_file, open_regular, read_regular_bytes, read_regular_text])
@pytest.mark.parametrize("case", sorted(NOT_FILES))
def test_a_path_that_is_not_a_regular_file_is_one_line_naming_it(tmp_path, case, reader):
    make, words = NOT_FILES[case]
    path = make(tmp_path / "checkpoint.pt")
    with pytest.raises(PflnasError) as info:
        reader(path, "checkpoint")
    message = str(info.value)
    assert words in message and str(path) in message and message.startswith("checkpoint ")
    assert "\n" not in message


def test_regular_files_and_links_to_them_are_read(tmp_path):
    target = tmp_path / "found.json"
    target.write_text("{}")
    (tmp_path / "link.json").symlink_to(target)
    assert read_regular_text(tmp_path / "link.json", "record") == "{}"
    with open_regular(target, "record") as fh:
        assert fh.read() == b"{}"


def test_the_error_class_is_the_callers(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        check_regular_file(tmp_path, "config", ConfigError)
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_regular_text(tmp_path / "bad.yaml", "config", ConfigError)
