"""Retraining throughput: pflnas retrain's training loop vs a timm ``train.py``-style loop on the same model,
batch size, precision and device, measured in one run.

    python benchmarks/retrain_throughput.py [--device cpu|cuda] [--arch experiments/archs/darts_v2.json]
        [--init-channels 36] [--layers 20] [--batch-size 96] [--steps 20] [--amp bf16|none] [--workers 2]
        [--dataset cifar10|imagenet] [--image-size 224] [--channels-last] [--json OUT]

Both loops train the network of ``--arch`` with SGD (timm's optimizer factory), cross-entropy and the same
precision. CIFAR-10 (``$PFLNAS_DATA`` or ``--data-dir``): crop+flip; the timm-style loop reads an extracted
ImageFolder tree through torchvision's ImageFolder and a DataLoader with worker processes (per-image PIL
decoding and transforms, as timm's train.py does); pflnas keeps the decoded uint8 set in memory and augments
whole batches on the device. ``--dataset imagenet`` (``--data-dir`` an ImageFolder tree with train/ and val/,
e.g. the paper's R50-hybrid on ImageNet): both loops decode JPEGs in worker processes with
RandomResizedCrop + flip. Reported: images/s over ``--steps`` steps after ``--warmup`` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from torchvision import datasets, transforms

from pflnas.arch import load_architecture
from pflnas.data import load_dataset
from pflnas.models import build_network
from pflnas.train.distributed import DistInfo
from pflnas.train.recipe import DataSection, ModelSection, RetrainConfig, RunSection, ScheduleSection
from pflnas.train.retrain import RetrainRun


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pflnas_loop(args: argparse.Namespace, device: torch.device, tmp: Path) -> float:
    n = args.batch_size * (args.steps + args.warmup)
    cell = args.dataset == "cifar10"
    cfg = RetrainConfig(
        model=ModelSection(
            init_channels=args.init_channels if cell else None, layers=args.layers if cell else None
        ),
        data=DataSection(
            dataset=args.dataset,
            data_dir=args.data_dir,
            subset=n,
            batch_size=args.batch_size,
            workers=args.workers,
            image_size=None if cell else args.image_size,
        ),
        schedule=ScheduleSection(epochs=1),
        run=RunSection(
            device=str(device),
            amp=args.amp,
            channels_last=args.channels_last,
            progress=False,
            tensorboard=False,
        ),
    )
    run = RetrainRun(cfg, load_architecture(args.arch), tmp / "pflnas", DistInfo(0, 1, 0, device))
    run.setup()
    # time the steps after the warm-up ones: run the warm-up as a first (short) pass over the same loader
    loader = run.data.train
    model = run.model
    model.train()
    t0 = None
    for i, (x, y) in enumerate(loader):
        if i == args.warmup:
            _sync(device)
            t0 = time.perf_counter()
        with run._autocast():
            out = model(x)
        loss, _ = run._loss(out, y)
        loss.backward()
        run._optimizer_step()
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - t0)


def _cifar_tree(args: argparse.Namespace, tmp: Path) -> Path:
    root = tmp / "imagefolder"
    source = load_dataset("cifar10", args.data_dir).source
    if not (root / "train").exists():
        with tarfile.open(source) as tar:  # the same JPEG files pflnas decodes
            tar.extractall(root, filter="data")
        tops = [p for p in root.iterdir() if (p / "train").is_dir()]
        if tops:
            root = tops[0]
    return root


def timm_loop(args: argparse.Namespace, device: torch.device, tmp: Path) -> float:
    if args.dataset == "cifar10":
        root = _cifar_tree(args, tmp)
        normalize = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
        crop = [transforms.RandomCrop(32, padding=4)]
    else:
        root = Path(args.data_dir)
        normalize = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        crop = [transforms.RandomResizedCrop(args.image_size)]
    tf = transforms.Compose([*crop, transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize])
    dataset = datasets.ImageFolder(str(root / "train"), transform=tf)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    arch = load_architecture(args.arch)
    if args.dataset == "cifar10":
        model = build_network(arch, init_channels=args.init_channels, layers=args.layers)
    else:
        model = build_network(arch, dataset=args.dataset, num_classes=len(dataset.classes))
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = create_optimizer_v2(model, opt="momentum", lr=0.025, weight_decay=3e-4, filter_bias_and_bn=False)
    dtype = torch.bfloat16 if args.amp == "bf16" else None
    model.train()
    t0 = None
    for i, (x, y) in enumerate(loader):
        if i == args.warmup + args.steps:
            break
        if i == args.warmup:
            _sync(device)
            t0 = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", default=str(Path(__file__).parent.parent / "experiments/archs/darts_v2.json"))
    p.add_argument("--data-dir", default=os.environ.get("PFLNAS_DATA"))
    p.add_argument("--init-channels", type=int, default=36)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--amp", choices=["bf16", "none"], default="none")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--dataset", choices=["cifar10", "imagenet"], default="cifar10")
    p.add_argument("--image-size", type=int, default=224, help="imagenet: training crop")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    args = p.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [("timm train.py-style loop", timm_loop(args, device, Path(tmp)))]
        rows.append(("pflnas retrain", pflnas_loop(args, device, Path(tmp))))
    base = rows[0][1]
    what = (
        f"DARTS network C={args.init_channels}, {args.layers} cells"
        if args.dataset == "cifar10"
        else f"{Path(args.arch).stem} at {args.image_size}x{args.image_size}"
    )
    print(
        f"\n{what}, batch {args.batch_size}, amp {args.amp}, channels_last {args.channels_last}, "
        f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
        f"threads {torch.get_num_threads()}, data workers {args.workers}, {args.steps} timed steps\n"
    )
    print(f"{'loop':<28} {'images/s':>10} {'vs timm-style':>14}")
    for name, ips in rows:
        print(f"{name:<28} {ips:>10.1f} {ips / base:>13.2f}x")
    if args.json:
        rows_out = [{"loop": name, "images_per_s": ips, "vs_timm": ips / base} for name, ips in rows]
        with open(args.json, "w") as fh:
            json.dump({"settings": vars(args), "model": what, "rows": rows_out}, fh, indent=2)


if __name__ == "__main__":
    main()
