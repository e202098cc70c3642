"""Data layer: finding and decoding data sets, the decode cache, the search split and BatchLoader."""

from __future__ import annotations

import os
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from _data_fixtures import CLASSES, make_archive, make_fashion_mnist_raw, make_tree

import pflnas.data.imagefolder as imagefolder
from pflnas.data import DATASETS, BatchLoader, load_dataset, search_split
from pflnas.data.augment import crop_flip
from pflnas.data.cache import data_cache_dir
from pflnas.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Every test gets its own empty cache and no PFLNAS_DATA."""
    monkeypatch.setenv("PFLNAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PFLNAS_DATA", raising=False)


@pytest.fixture
def tiny(tmp_path):
    """A 10-class 32×32 RGB ImageFolder tree, its .tar.gz and the expected arrays."""
    expected = make_tree(tmp_path / "tree")
    archive = make_archive(tmp_path / "tree", tmp_path / "tiny.tar.gz")
    return tmp_path / "tree", archive, expected


def _check(data, expected, source):
    assert data.name == "cifar10"
    assert data.train_x.shape == (30, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    for t in (data.train_x, data.test_x):
        assert t.dtype == torch.uint8 and t.is_contiguous()
    assert data.train_y.dtype == torch.int64 and data.test_y.dtype == torch.int64
    assert data.classes == CLASSES
    assert data.mean == DATASETS["cifar10"].mean and data.std == DATASETS["cifar10"].std
    assert data.source == str(Path(source).absolute())
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(data, f"{split}_x").numpy(), expected[f"{split}_x"])
        np.testing.assert_array_equal(getattr(data, f"{split}_y").numpy(), expected[f"{split}_y"])


# --- specs -------------------------------------------------------------------------------------------


def test_specs():
    assert set(DATASETS) == {"cifar10", "fashion-mnist"}
    cifar, fashion = DATASETS["cifar10"], DATASETS["fashion-mnist"]
    assert (cifar.num_classes, cifar.channels, cifar.image_size) == (10, 3, 32)
    assert (fashion.num_classes, fashion.channels, fashion.image_size) == (10, 1, 28)
    assert cifar.std == (0.2470, 0.2435, 0.2616) and fashion.mean == (0.2860,)
    assert len(cifar.classes) == len(fashion.classes) == 10


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*cifar10"):
        load_dataset("mnist")


# --- loading and caching -----------------------------------------------------------------------------


@pytest.mark.parametrize("top", [None, "cifar10-jpeg"])
def test_load_archive(tmp_path, tiny, top):
    tree, _, expected = tiny
    archive = make_archive(tree, tmp_path / "other.tgz", top=top)
    _check(load_dataset("cifar10", archive, download=False), expected, archive)


def test_second_load_reads_cache(tiny, monkeypatch):
    _, archive, expected = tiny
    load_dataset("cifar10", archive)
    cached = list((data_cache_dir() / "decoded").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".npz"  # no temporary files left behind

    def fail(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(imagefolder, "decode_image_bytes", fail)
    _check(load_dataset("cifar10", archive), expected, archive)


def test_cache_invalidated_when_source_changes(tmp_path, tiny):
    tree, archive, _ = tiny
    load_dataset("cifar10", archive)
    expected = make_tree(tmp_path / "tree2", seed=1)
    make_archive(tmp_path / "tree2", archive)
    os.utime(archive, ns=(1, 1))  # a different mtime even on coarse-grained file systems
    _check(load_dataset("cifar10", archive), expected, archive)


def test_unreadable_cache_is_rebuilt(tiny):
    _, archive, expected = tiny
    load_dataset("cifar10", archive)
    (entry,) = (data_cache_dir() / "decoded").iterdir()
    entry.write_bytes(b"not a zip file")
    _check(load_dataset("cifar10", archive), expected, archive)


@pytest.mark.parametrize("layout", ["tree", "archive-in-folder", "dataset-subfolder", "archive-in-cache"])
def test_folder_layouts(tmp_path, tiny, layout):
    tree, archive, expected = tiny
    if layout == "tree":
        location, source = tree, tree
    elif layout == "archive-in-folder":
        location = tmp_path / "data"
        location.mkdir()
        source = archive.rename(location / "cifar10-jpeg.tar.gz")
    elif layout == "dataset-subfolder":
        location, source = tmp_path / "root", tmp_path / "root" / "cifar10"
        source.parent.mkdir()
        tree.rename(source)
    else:
        location = None
        data_cache_dir().mkdir(parents=True)
        source = archive.rename(data_cache_dir() / "cifar10.tar.gz")
    _check(load_dataset("cifar10", location, download=False), expected, source)


def test_env_var_and_precedence(tmp_path, tiny, monkeypatch):
    tree, archive, expected = tiny
    monkeypatch.setenv("PFLNAS_DATA", str(archive))
    _check(load_dataset("cifar10", download=False), expected, archive)
    other = make_tree(tmp_path / "explicit", seed=3)
    _check(load_dataset("cifar10", tmp_path / "explicit", download=False), other, tmp_path / "explicit")


def test_grayscale_fashion_mnist_archive(tmp_path):
    expected = make_tree(tmp_path / "tree", size=28, mode="L")
    archive = make_archive(tmp_path / "tree", tmp_path / "fashion.tar.gz")
    data = load_dataset("fashion-mnist", archive)
    assert data.train_x.shape == (30, 1, 28, 28) and data.mean == (0.2860,)
    np.testing.assert_array_equal(data.train_x.numpy(), expected["train_x"])


def test_torchvision_fashion_mnist_layout(tmp_path):
    make_fashion_mnist_raw(tmp_path / "tv")
    data = load_dataset("fashion-mnist", tmp_path / "tv", download=False)
    assert data.train_x.shape == (20, 1, 28, 28) and data.test_x.shape == (10, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and data.train_x.is_contiguous()
    assert data.train_y.dtype == torch.int64 and data.train_y.tolist() == [i % 10 for i in range(20)]
    assert data.classes == DATASETS["fashion-mnist"].classes


# --- errors ------------------------------------------------------------------------------------------


def test_missing_data_without_download(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message and str(data_cache_dir()) in message
    assert "--data-dir" in message and "PFLNAS_DATA" in message and "train/" in message


def test_missing_data_download_fails(tmp_path, monkeypatch):
    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(DataError, match="not found .the download failed: no network.*PFLNAS_DATA"):
        load_dataset("cifar10")  # no --data-dir: an explicit one is never left for a download


def test_nonexistent_locations(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="--data-dir .*nowhere does not exist"):
        load_dataset("cifar10", tmp_path / "nowhere")
    monkeypatch.setenv("PFLNAS_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="PFLNAS_DATA .*gone does not exist"):
        load_dataset("cifar10")


def test_not_an_archive(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="not a .tar.gz"):
        load_dataset("cifar10", tmp_path / "data.zip")


def test_corrupt_archive(tmp_path):
    (tmp_path / "bad.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="cannot read archive .*bad.tar.gz"):
        load_dataset("cifar10", tmp_path / "bad.tar.gz")


def test_torchvision_archive_is_extracted_into_the_cache(tmp_path):
    fake = tmp_path / "src" / "cifar-10-batches-py"
    fake.mkdir(parents=True)
    (fake / "data_batch_1").write_bytes(b"not a pickle")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(fake, arcname="cifar-10-batches-py")
    with pytest.raises(DataError, match="cannot read cifar10 in torchvision format .*delete"):
        load_dataset("cifar10", tmp_path)  # extracted fine, but the batches fail torchvision's checksum
    (extracted,) = (data_cache_dir() / "extracted").iterdir()
    assert (extracted / "cifar-10-batches-py" / "data_batch_1").read_bytes() == b"not a pickle"


def test_mismatched_classes(tmp_path):
    make_tree(tmp_path, test_classes=(*CLASSES[:9], "zebra"))
    with pytest.raises(DataError, match=r"differ between train/ and test/.*only in train: \['class9'\]"):
        load_dataset("cifar10", tmp_path)


def test_wrong_class_count(tmp_path):
    make_tree(tmp_path, classes=CLASSES[:4])
    archive = make_archive(tmp_path, tmp_path / "four.tar.gz")
    with pytest.raises(DataError, match="has 4 class folders but cifar10 has 10"):
        load_dataset("cifar10", archive)


def test_missing_split(tmp_path):
    make_tree(tmp_path / "tree")
    archive = tmp_path / "train-only.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "train", arcname="train")
    with pytest.raises(DataError, match="no test/<class>/ images"):
        load_dataset("cifar10", archive)


def test_empty_class(tmp_path):
    make_tree(tmp_path / "tree")
    for png in (tmp_path / "tree" / "test" / "class3").iterdir():
        png.unlink()
    archive = make_archive(tmp_path / "tree", tmp_path / "empty.tar.gz")
    with pytest.raises(DataError, match="class folder test/class3 has no images"):
        load_dataset("cifar10", archive)


def test_unreadable_image(tmp_path):
    make_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "class2" / "0001.png").write_bytes(b"not an image")
    archive = make_archive(tmp_path / "tree", tmp_path / "broken.tar.gz")
    with pytest.raises(DataError, match=r"cannot read image .*broken.tar.gz:train/class2/0001.png"):
        load_dataset("cifar10", archive)
    with pytest.raises(DataError, match=r"cannot read image .*train/class2/0001.png"):
        load_dataset("cifar10", tmp_path / "tree")


def test_wrong_image_size(tmp_path):
    make_tree(tmp_path, size=28)
    with pytest.raises(DataError, match="image is 28x28 but cifar10 needs 32x32"):
        load_dataset("cifar10", tmp_path)


# --- real CIFAR-10 archive ---------------------------------------------------------------------------

_REAL = os.environ.get("PFLNAS_DATA", "")


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("real-cache")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(_REAL), reason="set PFLNAS_DATA to the CIFAR-10 ImageFolder archive")
def test_real_cifar10_archive(real_cache, monkeypatch):
    monkeypatch.setenv("PFLNAS_CACHE", str(real_cache))
    monkeypatch.setenv("PFLNAS_DATA", _REAL)
    first = load_dataset("cifar10", download=False)  # decodes (about 25 s on 2 cores)
    data = load_dataset("cifar10", download=False)  # reads the cache
    assert torch.equal(first.train_x, data.train_x) and torch.equal(first.test_y, data.test_y)
    assert data.train_x.shape == (50000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert data.classes == DATASETS["cifar10"].classes
    assert data.train_y.bincount().tolist() == [5000] * 10
    assert data.test_y.bincount().tolist() == [1000] * 10
    mean = data.train_x.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor(data.mean), atol=2e-3)


# --- search split ------------------------------------------------------------------------------------


def test_search_split_deterministic_and_disjoint():
    w, a = search_split(100, portion=0.5, seed=3)
    w2, a2 = search_split(100, portion=0.5, seed=3)
    assert torch.equal(w, w2) and torch.equal(a, a2)
    assert w.dtype == torch.int64 and len(w) == len(a) == 50
    assert sorted(torch.cat([w, a]).tolist()) == list(range(100))
    w3, _ = search_split(100, portion=0.5, seed=4)
    assert not torch.equal(w, w3)


def test_search_split_ignores_global_rng():
    torch.manual_seed(1)
    w, _ = search_split(50, seed=0)
    torch.manual_seed(2)
    assert torch.equal(w, search_split(50, seed=0)[0])


def test_search_split_subset_and_portion():
    w, a = search_split(1000, portion=0.8, subset=100, seed=0)
    assert (len(w), len(a)) == (80, 20)
    assert not set(w.tolist()) & set(a.tolist())
    full, _ = search_split(1000, portion=0.8, seed=0)
    assert torch.equal(w, torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:80])
    assert len(full) == 800


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_train": 1},
        {"num_train": 10, "portion": 0.0},
        {"num_train": 10, "portion": 1.0},
        {"num_train": 10, "subset": 1},
        {"num_train": 10, "subset": 11},
        {"num_train": 10, "portion": 0.05},
        {"num_train": 10, "seed": -1},
    ],
)
def test_search_split_rejects_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        search_split(**kwargs)


# --- BatchLoader -------------------------------------------------------------------------------------

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _images(n=10, c=3, size=8):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)
    return images, torch.arange(n) % 10


def _loader(images, labels, indices=None, batch_size=4, **kw):
    opts = {"mean": MEAN, "std": STD, "augment": True, "shuffle": True, "drop_last": False, "seed": 0}
    return BatchLoader(images, labels, indices, batch_size, **(opts | kw))


def _normalize(x):
    return (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_eval_loader_is_ordered_and_normalized():
    images, labels = _images()
    loader = _loader(images, labels, augment=False, shuffle=False)
    xs, ys = zip(*loader, strict=True)
    assert [len(y) for y in ys] == [4, 4, 2] and len(loader) == 3
    x = torch.cat(xs)
    assert x.dtype == torch.float32 and ys[0].dtype == torch.int64
    torch.testing.assert_close(x, _normalize(images))
    assert torch.equal(torch.cat(ys), labels)


def test_len_and_drop_last():
    images, labels = _images(n=10)
    assert len(_loader(images, labels, batch_size=4, drop_last=True)) == 2
    assert [len(y) for _, y in _loader(images, labels, batch_size=4, drop_last=True)] == [4, 4]
    assert len(_loader(images, labels, batch_size=5)) == 2
    assert len(_loader(images, labels, batch_size=20, drop_last=True)) == 0
    assert list(_loader(images, labels, batch_size=20, drop_last=True)) == []


def test_same_seed_and_epoch_same_batches_whatever_the_global_rng():
    images, labels = _images()
    a, b = _loader(images, labels), _loader(images, labels)
    a.set_epoch(3)
    b.set_epoch(3)
    torch.manual_seed(1)
    first = _batches(a)
    torch.manual_seed(2)
    for (xa, ya), (xb, yb) in zip(first, _batches(b), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    again = _batches(a)  # iterable many times; same epoch, same pass
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(first, again, strict=True))


def test_epochs_and_seeds_differ():
    images, labels = _images(n=64)
    loader = _loader(images, labels, batch_size=64)
    loader.set_epoch(0)
    x0, y0 = next(iter(loader))
    loader.set_epoch(1)
    x1, y1 = next(iter(loader))
    assert not torch.equal(y0, y1) and not torch.equal(x0, x1)
    x2, y2 = next(iter(_loader(images, labels, batch_size=64, seed=1)))
    assert not torch.equal(y0, y2)


def test_shuffle_covers_indices_once():
    images, labels = _images(n=20)
    indices = torch.tensor([1, 3, 5, 7, 11, 13])
    loader = _loader(images, labels, indices, batch_size=4, augment=False)
    ys = torch.cat([y for _, y in loader])
    assert sorted(ys.tolist()) == sorted(labels[indices].tolist())


def test_crop_flip_matches_cropping_by_hand():
    images, labels = _images(n=16, size=8)
    pad = 3
    loader = _loader(images, labels, batch_size=5, pad=pad)
    loader.set_epoch(2)
    order, offsets, flips = loader.draws()
    assert flips.any() and not flips.all() and offsets.min() >= 0 and offsets.max() <= 2 * pad
    expected = []
    for i, (oy, ox), flip in zip(order.tolist(), offsets.tolist(), flips.tolist(), strict=True):
        padded = torch.zeros(3, 8 + 2 * pad, 8 + 2 * pad, dtype=torch.uint8)
        padded[:, pad : pad + 8, pad : pad + 8] = images[i]
        crop = padded[:, oy : oy + 8, ox : ox + 8]
        expected.append(crop.flip(-1) if flip else crop)
    x = torch.cat([x for x, _ in loader])
    torch.testing.assert_close(x, _normalize(torch.stack(expected)))
    assert torch.equal(torch.cat([y for _, y in loader]), labels[order])


def test_crop_flip_special_cases():
    images, _ = _images(n=4, size=6)
    centre = torch.full((4, 2), 2)
    no_flip, all_flip = torch.zeros(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool)
    assert torch.equal(crop_flip(images, centre, no_flip, pad=2), images)
    assert torch.equal(crop_flip(images, centre, all_flip, pad=2), images.flip(-1))
    corner = crop_flip(images, torch.zeros(4, 2, dtype=torch.int64), no_flip, pad=2)
    assert (corner[:, :, :2, :] == 0).all() and (corner[:, :, :, :2] == 0).all()
    assert torch.equal(corner[:, :, 2:, 2:], images[:, :, :4, :4])
    assert torch.equal(
        crop_flip(images, torch.zeros(4, 2, dtype=torch.int64), all_flip, pad=0), images.flip(-1)
    )


def test_flip_rate_and_flip_off():
    images, labels = _images(n=2000, size=4)
    _, offsets, flips = _loader(images, labels).draws()
    assert 0.45 < flips.float().mean().item() < 0.55
    assert offsets.unique().tolist() == list(range(9))
    _, _, no_flips = _loader(images, labels, flip=False).draws()
    assert not no_flips.any()


def test_channels_last():
    images, labels = _images(n=4)
    x, _ = next(iter(_loader(images, labels, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_loader_rejects_bad_arguments():
    images, labels = _images()
    with pytest.raises(ConfigError):
        _loader(images, labels, batch_size=0)
    with pytest.raises(ValueError):
        _loader(images.float(), labels)
    with pytest.raises(ValueError):
        _loader(images, labels, mean=(0.5,))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    images, labels = _images(n=50)
    cpu = _batches(_loader(images, labels, batch_size=16))
    gpu = _batches(_loader(images, labels, batch_size=16, device="cuda", channels_last=True))
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert xg.device.type == "cuda" and xg.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(xg.cpu(), xc)
        assert torch.equal(yg.cpu(), yc)
    on_device = _batches(_loader(images.cuda(), labels.cuda(), batch_size=16, device="cuda"))
    assert all(torch.equal(xg.cpu(), xc) for (xg, _), (xc, _) in zip(on_device, cpu, strict=True))
