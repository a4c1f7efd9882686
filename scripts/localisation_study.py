"""What moves a B-cos model's grid localisation? One training + evaluation per call, appended as JSON.

Trains a CIFAR-style B-cos ResNet (bcos.models.resnet.BcosResNet, basic blocks, 3x3 stem) on
Fashion-MNIST or Digits with a plain PyTorch loop on the CPU (the same model, loss, optimiser and
schedule as the configs; the data is held as one tensor and augmented per batch, which is faster on
2 cores than a per-image PIL pipeline), then measures

* test accuracy (top-1 on the official test split);
* the grid pointing game (bcos.explain.localisation): ``--grids`` g x g grids of confidently and
  correctly classified test images of distinct classes, for every ``--explainers`` name and every
  ``--smooth`` window.

Each call appends one JSON line with the settings and the numbers to ``--log``
(default ``benchmarks/results/localisation_study.jsonl``); ``--table LOG`` prints a log as the
markdown table of docs/localisation.md. Example (the
recipe of ``FashionMNIST/bcos_fast/resnet_8_bnu-linear``)::

    python scripts/localisation_study.py --dataset FashionMNIST --depth 8 --width 16 --b 2 --epochs 4 \\
        --explainers Ours GCam IxG IntGrad --smooth 1 3
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bcos.atomic_io import atomic_open
from bcos.data.digits import DigitsDataset
from bcos.data.transforms import SplitAndGrid
from bcos.data.fashion_mnist import FashionMNISTDataset
from bcos.explain.localisation import grid_blocks, localisation_scores, make_grids, rank_by_confidence
from bcos.explain.methods.registry import get_explainer
from bcos.models.resnet import BasicBlock, BcosResNet
from bcos.modules import BcosConv2d, norms
from bcos.modules.losses import BinaryCrossEntropyLoss

NORMS = {
    "bnu-linear": norms.NoBias(norms.BatchNormUncentered2d),
    "bnu": norms.BatchNormUncentered2d,
    "bn": norms.BatchNorm2d,
    "lnu-linear": norms.NoBias(norms.GNLayerNormUncentered2d),
    "pnu-linear": norms.NoBias(norms.PositionNormUncentered2d),
    "none": nn.Identity,
}


def _images(dataset_name: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = FashionMNISTDataset(train=train) if dataset_name == "FashionMNIST" else DigitsDataset(train=train)
    images = torch.from_numpy(np.asarray(dataset.data)).permute(0, 3, 1, 2).float().div_(255)
    return images, torch.tensor(dataset.targets)


def encode(images: torch.Tensor) -> torch.Tensor:
    """The B-cos input encoding [x, 1 - x]."""
    return torch.cat([images, 1 - images], dim=1)


def augment(images: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crops after zero padding and random horizontal flips, per image (like the presets)."""
    n, _, h, w = images.shape
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if padding:
        padded = F.pad(images, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).tolist()
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).tolist()
        images = torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(zip(dy, dx))])
    return images


def build_model(args: argparse.Namespace) -> nn.Module:
    if (args.depth - 2) % 6:
        raise SystemExit("depth must be 6n + 2")
    conv = partial(BcosConv2d, b=args.b, max_out=args.max_out)
    # the builders read None as the default -log(C - 1): no logit bias is 0.0
    logit_bias = 0.0 if args.logit_bias == "none" else (-math.log(9) if args.logit_bias == "auto" else float(args.logit_bias))
    return BcosResNet(
        BasicBlock, [(args.depth - 2) // 6] * 3, num_classes=10, inplanes=args.width, norm_layer=NORMS[args.norm],
        logit_bias=logit_bias, conv_layer=conv, small_inputs=True,
    )  # fmt: skip


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return encode(self.images[index : index + 1])[0], int(self.labels[index])


def _diagnose(model, grids, targets, attributions, g: int, out: dict[str, list]) -> None:
    """Where the positive attribution of Ours goes, and what the model thinks of a grid.

    Per target: its logit on the grid, the share of positive attribution in its own cell, on the
    other cells' objects (non-black pixels) and on the other cells' black background.
    """
    with torch.no_grad():
        logits = model(grids)
    out.setdefault("target_logit_on_grid", []).extend(logits.gather(1, targets).flatten().tolist())
    out.setdefault("grids_with_a_positive_target_logit", []).extend((logits.gather(1, targets) > 0).float().flatten().tolist())
    positive = attributions.sum(2).clamp(min=0)  # [B, g², H, W]
    black = (grids[:, :3].sum(1) == 0)  # [B, H, W]
    b, n, height, width = positive.shape
    h, w = height // g, width // g
    own = torch.zeros(b, n, height, width, dtype=torch.bool)
    for k in range(n):
        own[:, k, (k // g) * h : (k // g + 1) * h, (k % g) * w : (k % g + 1) * w] = True
    total = positive.sum((-2, -1)).clamp(min=1e-12)
    other = ~own
    out.setdefault("share_own_cell", []).extend(((positive * own).sum((-2, -1)) / total).flatten().tolist())
    out.setdefault("share_other_objects", []).extend(((positive * (other & ~black[:, None])).sum((-2, -1)) / total).flatten().tolist())
    out.setdefault("share_other_background", []).extend(((positive * (other & black[:, None])).sum((-2, -1)) / total).flatten().tolist())
    # the share of target t's positive attribution in the cell of class c, accumulated per (t, c)
    cells = positive.reshape(b, n, g, h, g, w).sum((3, 5)).reshape(b, n, n) / total[..., None]
    pairs = out.setdefault("pair_share", [np.zeros((10, 10)), np.zeros((10, 10))])
    for i in range(b):
        for k in range(n):
            for j in range(n):
                pairs[0][int(targets[i, k]), int(targets[i, j])] += float(cells[i, k, j])
                pairs[1][int(targets[i, k]), int(targets[i, j])] += 1


def _summarise(diagnosis: dict[str, list]) -> dict:
    summary = {k: round(float(np.mean(v)), 4) for k, v in diagnosis.items() if k != "pair_share"}
    if "pair_share" in diagnosis:
        total, count = diagnosis["pair_share"]
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        summary["pair_share"] = np.round(mean, 3).tolist()  # [target class][cell class]
        off = [(mean[t, c], t, c) for t in range(10) for c in range(10) if t != c]
        summary["top_leaks"] = [[t, c, round(v, 3)] for v, t, c in sorted(off, reverse=True)[:8]]
    return summary


def print_table(log: str) -> None:
    """The runs of ``log`` as a markdown table (one row per tag, the last run of each tag)."""
    runs: dict[str, dict] = {}
    for line in Path(log).read_text().splitlines():
        record = json.loads(line)
        runs[record["tag"]] = record
    windows = sorted({int(k.split("@")[1]) for r in runs.values() for k in r["localisation"]})
    header = ["tag", "grid", "B", "MaxOut", "logit bias", "depth", "width", "epochs", "gridified", "test top-1"]
    header += [f"Ours s={w}" for w in windows] + ["GCam s=1", "IxG s=1", "own cell", "other objects", "other background"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for tag, r in runs.items():
        loc, diag = r["localisation"], r.get("diagnosis", {})
        cells = [tag, f"{r['grid']}x{r['grid']}", f"{r['b']:g}", str(r["max_out"]), r["logit_bias"], str(r["depth"]),
                 str(r["width"]), f"{r['epochs']:g}", f"{r.get('p_gridified', 0):g}", f"{100 * r['accuracy']:.2f} %"]
        cells += [f"{loc[f'Ours@{w}']:.3f}" if f"Ours@{w}" in loc else "" for w in windows]
        cells += [f"{loc[k]:.3f}" if k in loc else "" for k in ("GCam@1", "IxG@1")]
        cells += [f"{diag[k]:.3f}" if k in diag else "" for k in ("share_own_cell", "share_other_objects", "share_other_background")]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        print_table(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="FashionMNIST", choices=["FashionMNIST", "Digits"])
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--b", type=float, default=2.0)
    parser.add_argument("--max_out", type=int, default=1)
    parser.add_argument("--norm", default="bnu-linear", choices=list(NORMS))
    parser.add_argument("--logit_bias", default="auto", help="'auto' (-log 9), 'none' or a number")
    parser.add_argument("--epochs", type=float, default=4, help="may be fractional")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--padding", type=int, default=2)
    parser.add_argument("--hflip", type=int, default=1)
    parser.add_argument("--p_gridified", type=float, default=0.0, help="share of each batch tiled into 2x2 grids")
    parser.add_argument("--train_subset", type=int, default=0, help="first N training images (0: all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--grid", type=int, default=3)
    parser.add_argument("--grids", type=int, default=250)
    parser.add_argument("--conf_thresh", type=float, default=0.5)
    parser.add_argument("--explainers", nargs="+", default=["Ours", "GCam", "IxG", "IntGrad"])
    parser.add_argument("--intgrad_steps", type=int, default=5, help="IntGrad path points (= IxG here: the network is positively homogeneous)")
    parser.add_argument("--smooth", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save", default="", help="save the trained state dict here")
    parser.add_argument("--load", default="", help="skip training: load this state dict")
    parser.add_argument("--tag", default="")
    parser.add_argument("--log", default="benchmarks/results/localisation_study.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    train_x, train_y = _images(args.dataset, True)
    if args.train_subset:
        train_x, train_y = train_x[: args.train_subset], train_y[: args.train_subset]
    test_x, test_y = _images(args.dataset, False)
    model = build_model(args)
    criterion = BinaryCrossEntropyLoss()
    start = time.perf_counter()
    steps_per_epoch = math.ceil(len(train_y) / args.batch_size)
    total_steps = max(1, round(args.epochs * steps_per_epoch))
    if args.load:
        model.load_state_dict(torch.load(args.load))
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps)
        gridify = SplitAndGrid(args.p_gridified, 10) if args.p_gridified else None
        model.set_inputs_inverse_encoded()
        model.train()
        step = 0
        while step < total_steps:
            order = torch.randperm(len(train_y), generator=generator)
            for begin in range(0, len(order), args.batch_size):
                index = order[begin : begin + args.batch_size]
                x, y = augment(train_x[index], args.padding, bool(args.hflip), generator), train_y[index]
                if gridify is not None:
                    x, y = gridify(x, y)
                loss = criterion(model(encode(x)), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                if step >= total_steps:
                    break
        model.set_inputs_inverse_encoded(False)
        if args.save:
            with atomic_open(args.save, "wb") as handle:
                torch.save(model.state_dict(), handle)
    train_seconds = time.perf_counter() - start
    model.eval()
    with torch.inference_mode():
        predicted = torch.cat([model(encode(test_x[i : i + 500])).argmax(1) for i in range(0, len(test_y), 500)])
    accuracy = float((predicted == test_y).float().mean())

    dataset = _Encoded(test_x, test_y)
    batches = ((encode(test_x[i : i + 500]), test_y[i : i + 500]) for i in range(0, len(test_y), 500))
    ranking = rank_by_confidence(model, batches, 10)
    blocks = grid_blocks(ranking, args.grid, args.conf_thresh, max_grids=args.grids)
    localisation: dict[str, float] = {}
    diagnosis: dict[str, list] = {}
    for name in args.explainers:
        explainer = get_explainer(model, name, **({"n_steps": args.intgrad_steps} if name == "IntGrad" else {}))
        began = time.perf_counter()
        scores: dict[int, list] = {smooth: [] for smooth in args.smooth}
        for first in range(0, len(blocks), 4):  # the attributions once, every smoothing window on them
            chunk = blocks[first : first + 4]
            images = torch.stack([torch.stack([dataset[i][0] for i in block]) for block in chunk])
            targets = torch.tensor([[int(dataset[i][1]) for i in block] for block in chunk])
            grids = make_grids(images, args.grid)
            attributions = explainer.attribute_selection(grids, targets)
            if name == "Ours":
                _diagnose(model, grids, targets, attributions, args.grid, diagnosis)
            for smooth in args.smooth:
                scores[smooth].append(localisation_scores(attributions, args.grid, smooth))
        for smooth in args.smooth:
            localisation[f"{name}@{smooth}"] = round(float(torch.cat(scores[smooth]).mean()), 4)
        print(f"{name}: {[localisation[f'{name}@{s}'] for s in args.smooth]} ({time.perf_counter() - began:.0f} s)", flush=True)
    record = dict(vars(args), accuracy=round(accuracy, 4), train_seconds=round(train_seconds, 1),
                  total_seconds=round(time.perf_counter() - start, 1), n_grids=len(blocks), localisation=localisation,
                  diagnosis=_summarise(diagnosis))  # fmt: skip
    print(json.dumps(record), flush=True)
    print(f"accuracy {accuracy:.4f}, grids {len(blocks)}", flush=True)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as handle:
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
