"""Bad data locations and files: one line naming what the path is, never a hang, a fallback or a download.

A FIFO named ``*.jpg`` would block a plain read forever, so the FIFO cases run the load in a daemon thread
and fail if it has not returned in time (the refusal itself is immediate).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import urllib.error
import warnings
import zlib
from pathlib import Path

import pytest
from _data_fixtures import make_tree

import pflnas.data.load as data_load
import pflnas.data.torchvision_formats as tv_formats
from pflnas.cli.main import main
from pflnas.data import load_dataset
from pflnas.data.cache import data_cache_dir
from pflnas.data.decode import decode_image_bytes
from pflnas.data.specs import get_dataset_spec
from pflnas.errors import ConfigError, DataError

CIFAR = get_dataset_spec("cifar10")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No PFLNAS_DATA unless a test sets one, a private cache, and no download unless a test allows one."""
    monkeypatch.delenv("PFLNAS_DATA", raising=False)
    monkeypatch.setenv("PFLNAS_CACHE", str(tmp_path / "cache"))

    def no_download(root, spec):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(data_load, "download_torchvision", no_download)


def _load_in_thread(*args, **kwargs) -> BaseException | None:
    """``load_dataset(*args)`` in a daemon thread: the exception it raised (None if it returned)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            load_dataset(*args, **kwargs)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert outcome, "load_dataset blocked (a read of a FIFO?)"
    return outcome[0]


def _refused(*args, **kwargs) -> str:
    exc = _load_in_thread(*args, **kwargs)
    assert isinstance(exc, DataError), repr(exc)
    assert "\n" not in str(exc)
    return str(exc)


# --- the location ---------------------------------------------------------------------------------------
def test_empty_data_dir_never_falls_back(tmp_path, monkeypatch):
    make_tree(tmp_path / "other", n_train=1, n_test=1)
    monkeypatch.setenv("PFLNAS_DATA", str(tmp_path / "other"))  # valid data the run must not silently use
    assert "--data-dir is empty" in _refused("cifar10", "")
    assert "--data-dir is empty" in _refused("cifar10", "  ")
    (tmp_path / "empty").mkdir()
    message = _refused("cifar10", tmp_path / "empty")
    assert "holds no cifar10 data" in message and "put cifar10-jpeg.tar.gz" in message


def _specials(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    os.mkfifo(tmp_path / "fifo.tar.gz")
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    os.symlink(tmp_path / "nowhere", tmp_path / "broken")
    return {
        "fifo": (tmp_path / "fifo.tar.gz", "is a FIFO"),
        "device": (Path("/dev/zero"), "is a character device"),
        "loop": (tmp_path / "loop_a", "is a symlink loop"),
        "broken": (tmp_path / "broken", "is a broken symlink"),
    }


@pytest.mark.parametrize("kind", ["fifo", "device", "loop", "broken"])
@pytest.mark.parametrize("where", ["--data-dir", "PFLNAS_DATA"])
def test_special_locations_are_named_not_missing(tmp_path, monkeypatch, kind, where):
    path, words = _specials(tmp_path)[kind]
    if where == "PFLNAS_DATA":
        monkeypatch.setenv("PFLNAS_DATA", str(path))
        message = _refused("cifar10")
    else:
        message = _refused("cifar10", path)
    assert message.startswith(f"{where} {path}") and words in message, message
    assert "no such file" not in message and "not found" not in message


def test_data_cache_that_is_not_a_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("PFLNAS_CACHE", str(tmp_path / "file"))
    with pytest.raises(DataError, match="is a file, not a folder; point PFLNAS_CACHE at a folder"):
        data_cache_dir()
    os.mkfifo(tmp_path / "fifo")
    monkeypatch.setenv("PFLNAS_CACHE", str(tmp_path / "fifo"))
    with pytest.raises(DataError, match="is a FIFO"):
        data_cache_dir()


def test_data_not_found_is_short_and_says_where_to_put_the_files(tmp_path, monkeypatch):
    """The download failure is reduced to its reason: no nested URL error of hundreds of characters."""
    monkeypatch.setattr(data_load, "download_torchvision", tv_formats.download_torchvision)

    def offline(root, train, download):
        url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
        raise RuntimeError(f"Error downloading {url}") from urllib.error.URLError(
            socket.gaierror(-3, "Temporary failure in name resolution")
        )

    def offline_urlerror(root, train, download):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setitem(tv_formats._FACTORIES, "cifar10", offline_urlerror)
    message = _refused("cifar10")
    assert "Temporary failure in name resolution" in message and "http" not in message
    assert "put cifar10-jpeg.tar.gz" in message and len(message) < 400, message
    monkeypatch.setitem(tv_formats._FACTORIES, "cifar10", offline)
    assert len(_refused("cifar10")) < 400


# --- files inside an ImageFolder tree -------------------------------------------------------------------
@pytest.mark.parametrize("kind, words", [("fifo", "is a FIFO"), ("loop", "is a symlink loop")])
def test_special_image_files_are_named(tmp_path, kind, words):
    make_tree(tmp_path / "tree", n_train=1, n_test=1)
    bad = tmp_path / "tree/train/class3/x.jpg"
    if kind == "fifo":
        os.mkfifo(bad)
    else:
        os.symlink(bad, bad)
    message = _refused("cifar10", tmp_path / "tree")
    assert str(bad) in message and words in message, message


def test_imagenet_listing_refuses_a_fifo(tmp_path):
    from pflnas.data.imagenet import _image_folder

    make_tree(tmp_path / "tree", n_train=1, n_test=1)
    os.mkfifo(tmp_path / "tree/train/class0/x.jpg")
    with pytest.raises(DataError, match="x.jpg is a FIFO"):
        _image_folder(tmp_path / "tree/train", transform=lambda x: x)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): what a decoder sees first."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "width, height, words",
    [
        (12_000, 12_000, "image is 12000x12000 but cifar10 needs 32x32"),  # 144 Mpx: PIL would warn
        (20_000, 20_000, "400 megapixels, refused before decoding"),  # PIL's bomb error
        (33, 32, "image is 33x32"),
    ],
)
def test_image_size_is_checked_from_the_header(width, height, words):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        with pytest.raises(DataError, match=words) as info:
            decode_image_bytes(_png_header(width, height), CIFAR, "big.png")
    assert "\n" not in str(info.value)


def test_study_with_an_empty_data_dir(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text("name: s\ngrid: {spaces: [cell_v1], strategies: [darts], seeds: [0]}\n")
    try:
        code = main(["study", str(study), "--data-dir", "", "--dry-run"])
    except ConfigError:  # pragma: no cover - main prints it
        code = 2
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--data-dir is empty" in err[0], err
