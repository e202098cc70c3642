"""Retraining data: BatchLoader sharding and cutout, retrain_loaders, and the ImageFolder loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _data_fixtures import make_archive, make_tree
from PIL import Image

from pflnas.data import BatchLoader, RetrainData, imagenet_loaders, retrain_loaders
from pflnas.errors import ConfigError, DataError

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PFLNAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PFLNAS_DATA", raising=False)


def _loader(n=24, batch_size=4, size=8, **kw):
    """A loader over ``n`` random images whose label is their index, so samples can be told apart."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    opts = {"mean": MEAN, "std": STD, "augment": True, "shuffle": True, "drop_last": False, "seed": 5}
    return BatchLoader(images, torch.arange(n), None, batch_size, **(opts | kw))


def _samples(batches):
    """{label: image} of a list of (x, y) batches; no label may repeat."""
    out = {}
    for x, y in batches:
        for xi, yi in zip(x, y.tolist(), strict=True):
            assert yi not in out
            out[yi] = xi
    return out


def _same_samples(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- BatchLoader: sharding ---------------------------------------------------------------------------


def test_union_of_rank_epochs_is_the_one_rank_epoch():
    one = _loader(cutout=3)
    one.set_epoch(2)
    union: dict = {}
    for rank in range(3):
        shard = _loader(cutout=3, rank=rank, world_size=3)
        shard.set_epoch(2)
        assert len(shard) == 2 and shard.shard_size == 8
        part = _samples(list(shard))
        assert not part.keys() & union.keys()
        union |= part
    assert _same_samples(union, _samples(list(one)))


@pytest.mark.parametrize(("n", "world_size", "drop_last"), [(23, 2, True), (23, 3, True), (24, 2, False)])
def test_ranks_step_together_like_one_process_with_the_global_batch(n, world_size, drop_last):
    b = 3 if drop_last else 5
    one = _loader(n, world_size * b, drop_last=drop_last, cutout=4)
    ranks = [
        _loader(n, b, drop_last=drop_last, cutout=4, rank=r, world_size=world_size) for r in range(world_size)
    ]
    for loader in (one, *ranks):
        loader.set_epoch(1)
    assert all(len(r) == len(one) for r in ranks) and len(one) >= 2
    for step, global_batch, *rank_batches in zip(range(len(one)), one, *ranks, strict=True):
        merged: dict = {}
        for batch in rank_batches:
            merged |= _samples([batch])
        assert _same_samples(merged, _samples([global_batch])), f"step {step}"


def test_uneven_epoch_is_padded_by_wrapping_or_left_uneven():
    order = _loader(23).draws()[0]
    shards = [_loader(23, rank=r, world_size=2).draws()[0] for r in range(2)]
    assert [len(s) for s in shards] == [12, 12]
    assert torch.equal(torch.stack(shards, 1).flatten(), torch.cat([order, order[:1]]))
    uneven = [_loader(23, rank=r, world_size=2, even_shards=False) for r in range(2)]
    assert [u.shard_size for u in uneven] == [12, 11] and [len(u) for u in uneven] == [3, 3]
    assert sorted(torch.cat([u.draws()[0] for u in uneven]).tolist()) == list(range(23))
    dropped = [_loader(23, rank=r, world_size=2, drop_last=True).draws()[0] for r in range(2)]
    assert torch.equal(torch.stack(dropped, 1).flatten(), order[:22])


def test_sharding_rejects_bad_ranks():
    with pytest.raises(ConfigError, match="rank must be in"):
        _loader(rank=2, world_size=2)
    with pytest.raises(ConfigError, match="rank must be in"):
        _loader(world_size=0)
    with pytest.raises(ConfigError, match="cutout"):
        _loader(cutout=-1)


# --- BatchLoader: cutout -----------------------------------------------------------------------------


@pytest.mark.parametrize("side", [3, 4])
def test_cutout_zeroes_one_clipped_square_after_normalization(side):
    mean = (0.51, 0.41, 0.31)  # no pixel normalizes to exactly 0, so zeros are holes
    plain, holed = _loader(32, 32, size=8, mean=mean), _loader(32, 32, size=8, mean=mean, cutout=side)
    for loader in (plain, holed):
        loader.set_epoch(3)
    assert all(torch.equal(a, b) for a, b in zip(plain.draws(), holed.draws(), strict=True))
    centres = holed.epoch_draws().centres
    assert centres.min() >= 0 and centres.max() <= 7
    (x, y), (xh, yh) = next(iter(plain)), next(iter(holed))
    assert torch.equal(y, yh)
    expected, areas = x.clone(), []
    for image, (cy, cx) in zip(expected, centres.tolist(), strict=True):
        top, left = cy - side // 2, cx - side // 2
        rows, cols = slice(max(top, 0), min(top + side, 8)), slice(max(left, 0), min(left + side, 8))
        image[:, rows, cols] = 0
        areas.append((rows.stop - rows.start) * (cols.stop - cols.start))
    assert torch.equal(xh, expected)
    assert min(areas) < side * side == max(areas)  # some holes clipped at a border, some whole
    assert not (x == 0).any() and (xh == 0).all(dim=1).sum(dim=(1, 2)).tolist() == areas


# --- retrain_loaders: in-memory data sets ------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_archive(tmp_path_factory) -> Path:
    """A fake CIFAR-10 archive: 10 classes × 3 train / 2 test images of 32×32."""
    root = tmp_path_factory.mktemp("cifar")
    make_tree(root / "tree")
    return make_archive(root / "tree", root / "cifar10.tar.gz")


def _cifar(archive, **kw) -> RetrainData:
    opts = {"batch_size": 8, "eval_batch_size": 6, "device": "cpu", "seed": 0}
    return retrain_loaders("cifar10", archive, **(opts | kw))


def test_retrain_loaders_cifar_shapes_and_lengths(cifar_archive):
    data = _cifar(cifar_archive, channels_last=True, cutout=8)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 3, 32)
    assert (data.train_size, data.eval_size, data.source) == (30, 20, str(cifar_archive))
    assert len(data.train) == 3 and len(data.eval) == 4
    data.train.set_epoch(1)
    batches = list(data.train)
    assert len(batches) == 3
    for x, y in batches:
        assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.is_contiguous(memory_format=torch.channels_last)
    assert [len(y) for _, y in data.eval] == [6, 6, 6, 2]


def test_retrain_loaders_subset(cifar_archive):
    data = _cifar(cifar_archive, subset=12, batch_size=4, seed=3)
    assert data.train_size == 12 and len(data.train) == 3 and data.eval_size == 20
    kept = torch.randperm(30, generator=torch.Generator().manual_seed(3))[:12]
    assert torch.equal(data.train.indices, kept)
    assert sorted(data.train.draws()[0].tolist()) == sorted(kept.tolist())


def test_retrain_eval_covers_the_test_set_once_across_ranks(cifar_archive):
    whole = torch.cat([x for x, _ in _cifar(cifar_archive).eval])
    assert len(whole) == 20
    lengths = []
    for rank in range(3):
        data = _cifar(cifar_archive, rank=rank, world_size=3, eval_batch_size=4)
        part = torch.cat([x for x, _ in data.eval])
        assert torch.equal(part, whole[rank::3])
        lengths.append(len(data.train))
    assert [len(whole[r::3]) for r in range(3)] == [7, 7, 6]
    assert lengths == [1, 1, 1]  # every rank trains the same number of steps: 30 → 10 per rank, 8 a batch


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dataset": "mnist"}, ConfigError, "unknown dataset 'mnist'.*cifar10, fashion-mnist, imagenet"),
        ({"randaugment": "rand-m9-mstd0.5"}, ConfigError, "imagenet only"),
        ({"reprob": 0.25}, ConfigError, "imagenet only"),
        ({"image_size": 64}, ConfigError, "32x32"),
        ({"subset": 31}, ConfigError, "between 1 and 30"),
        ({"subset": 0}, ConfigError, "between 1 and 30"),
        ({"rank": 1}, ConfigError, "rank must be in"),
        ({"dataset": "imagenet", "cutout": 16}, ConfigError, "cutout"),
        ({"dataset": "imagenet", "data_dir": None}, DataError, "needs --data-dir"),
    ],
)
def test_retrain_loaders_errors(cifar_archive, kwargs, error, match):
    kwargs = {"dataset": "cifar10", "data_dir": cifar_archive} | kwargs
    with pytest.raises(error, match=match):
        retrain_loaders(
            kwargs.pop("dataset"), kwargs.pop("data_dir"), batch_size=4, eval_batch_size=4, device="cpu",
            seed=0, **kwargs,
        )  # fmt: skip


# --- ImageNet / ImageFolder --------------------------------------------------------------------------


def make_imagefolder(root: Path, *, classes=("n01", "n02", "n03"), n_train=4, n_val=2, val="val") -> Path:
    """JPEGs of 40 (high) × 50 (wide) random pixels under ``root/train/<wnid>`` and ``root/<val>/<wnid>``."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), (val, n_val)):
        for wnid in classes:
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.JPEG")
    return root


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("imagenet"))


def _imagenet(root, **kw) -> RetrainData:
    opts = {"batch_size": 4, "eval_batch_size": 4, "image_size": 32, "workers": 0, "seed": 0}
    return imagenet_loaders(root, **(opts | kw))


def _train_labels(data: RetrainData, epoch: int) -> list[int]:
    data.train.set_epoch(epoch)
    return torch.cat([y for _, y in data.train]).tolist()


def test_imagenet_shapes_lengths_and_eval(imagenet_dir):
    data = _imagenet(imagenet_dir, channels_last=True)
    assert (data.num_classes, data.in_channels, data.image_size) == (3, 3, 32)
    assert (data.train_size, data.eval_size, data.source) == (12, 6, str(imagenet_dir))
    assert len(data.train) == 3 and len(data.eval) == 2
    for x, y in data.train:
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.is_contiguous(memory_format=torch.channels_last)
    xs, ys = zip(*data.eval, strict=True)
    assert torch.cat(ys).tolist() == [0, 0, 1, 1, 2, 2]  # evaluation is ordered and unaugmented
    assert torch.equal(torch.cat(xs), torch.cat([x for x, _ in data.eval]))


def test_imagenet_set_epoch_orders_deterministically(imagenet_dir):
    data = _imagenet(imagenet_dir)
    first = _train_labels(data, 0)
    assert sorted(first) == [0] * 4 + [1] * 4 + [2] * 4
    assert _train_labels(data, 0) == first == _train_labels(_imagenet(imagenet_dir), 0)
    assert _train_labels(data, 1) != first
    assert _train_labels(_imagenet(imagenet_dir, seed=1), 0) != first


def test_imagenet_with_worker_processes(imagenet_dir):
    data = _imagenet(imagenet_dir, workers=2, randaugment="rand-m9-mstd0.5-inc1", reprob=0.5)
    for epoch in range(2):  # the persistent workers serve both epochs
        labels = _train_labels(data, epoch)
        assert labels == _train_labels(_imagenet(imagenet_dir), epoch)
    assert torch.cat([y for _, y in data.eval]).tolist() == [0, 0, 1, 1, 2, 2]


def test_imagenet_shards_and_subset(imagenet_dir):
    ranks = [_imagenet(imagenet_dir, rank=r, world_size=2, batch_size=2, subset=9) for r in range(2)]
    assert [(d.train_size, len(d.train), len(d.eval)) for d in ranks] == [(9, 2, 1), (9, 2, 1)]
    evals = [torch.cat([y for _, y in d.eval]) for d in ranks]
    assert evals[0].tolist() == [0, 1, 2] and evals[1].tolist() == [0, 1, 2]
    x, _ = next(iter(ranks[0].train))
    assert x.shape == (2, 3, 32, 32)


def test_imagenet_accepts_test_folder(tmp_path):
    root = make_imagefolder(tmp_path / "tree", n_train=1, n_val=1, val="test")
    assert _imagenet(root).eval_size == 3


def test_imagenet_errors(tmp_path, imagenet_dir):
    def fails(root, match, error=DataError, **kw):
        with pytest.raises(error, match=match) as info:
            _imagenet(root, **kw)
        assert "\n" not in str(info.value)

    fails(tmp_path / "missing", "does not exist")
    (tmp_path / "no-train" / "val").mkdir(parents=True)
    fails(tmp_path / "no-train", "no train/ folder")
    (tmp_path / "no-val" / "train").mkdir(parents=True)
    fails(tmp_path / "no-val", r"no val/ \(or test/\) folder")
    other = make_imagefolder(tmp_path / "other", n_train=1, n_val=1)
    (other / "val" / "n03").rename(other / "val" / "n04")
    fails(other, r"differ between train/ and val/: only in train: \['n03'\], only in val: \['n04'\]")
    empty = make_imagefolder(tmp_path / "empty", n_train=1, n_val=1)
    (empty / "train" / "n02" / "n02_0.JPEG").unlink()
    fails(empty, "cannot use .*train: .*n02")
    (tmp_path / "bare" / "train").mkdir(parents=True)
    (tmp_path / "bare" / "val").mkdir()
    fails(tmp_path / "bare", "cannot use .*train: .*class folder")
    fails(imagenet_dir, "bad augmentation settings", ConfigError, randaugment="nonsense")
    fails(imagenet_dir, "subset must be between 1 and 12", ConfigError, subset=13)
    fails(imagenet_dir, "rank must be in", ConfigError, rank=2, world_size=2)


# --- GPU ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_match_cpu(cifar_archive, imagenet_dir):
    cpu = _cifar(cifar_archive, cutout=8)
    gpu = _cifar(cifar_archive, cutout=8, device="cuda", channels_last=True)
    assert gpu.train.images.device.type == "cuda" and gpu.eval.images.device.type == "cuda"
    for loader_cpu, loader_gpu in ((cpu.train, gpu.train), (cpu.eval, gpu.eval)):
        for (xc, yc), (xg, yg) in zip(loader_cpu, loader_gpu, strict=True):
            assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(xg.cpu(), xc)
            assert torch.equal(yg.cpu(), yc)
    data = _imagenet(imagenet_dir, device="cuda", workers=2)
    assert data.train.loader.pin_memory
    x, y = next(iter(data.train))
    assert x.is_cuda and y.is_cuda and x.shape == (4, 3, 32, 32)
