"""B-cosification on Fashion-MNIST: fine-tuning a B-cosified standard ResNet against training it from scratch.

Run from the repository root (about 20 minutes on one CPU thread of a shared 2-core machine)::

    python -m benchmarks.bcosify_fashion_mnist --out benchmarks/results/bcosify_fashion_mnist.json

What it does, all seeded (seed 0):

1. a standard ResNet-10 (torchvision's ``ResNet(BasicBlock, [1, 1, 1, 1])``, 10 classes, ImageNet
   stem) is trained for ``--standard-epochs`` epochs on a fixed subset of ``--train-size`` training
   images (32x32 RGB, normalised with mean 0.286 / std 0.353), cross-entropy, Adam (lr 1e-3);
2. it is B-cosified (``bcos.bcosify(model, b=2, bias="remove", logit_bias=-log(9))``) and
   fine-tuned for ``--epochs`` epochs on ``[x, 1-x]`` images of the same subset: binary
   cross-entropy, Adam (lr 1e-3), batch 64;
3. the same B-cos ResNet-10 (``bcos.bcosify`` of a freshly initialised ResNet-10, same options) is
   trained from scratch with the same recipe for the same number of epochs.

After every epoch (and before the first, "epoch 0") each B-cos model is measured on a fixed subset of
``--test-size`` test images: top-1 accuracy, and the 3x3 grid pointing game
(:mod:`bcos.explain.localisation.pointing_game`: grids of 9 correctly classified test images of
distinct classes with a sigmoid confidence above 0.5, at most ``--grids`` grids, no smoothing) for
the explainers Ours (``model.explain``), GCam (Grad-CAM on the last feature map) and IxG
(input x gradient, outside explanation mode).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

import bcos
from bcos.atomic_io import atomic_write_text
from bcos.data.fashion_mnist import FashionMNISTDataset
from bcos.explain.localisation.pointing_game import evaluate_grids, grid_blocks, rank_by_confidence
from bcos.explain.methods import get_explainer

MEAN, STD = (0.286,) * 3, (0.353,) * 3
EXPLAINERS = ("Ours", "GCam", "IxG")


def _tensors(train: bool, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = FashionMNISTDataset(train=train, download=False)
    index = np.random.default_rng(seed).permutation(len(dataset.data))[:size]
    images = torch.from_numpy(np.asarray(dataset.data)[index]).permute(0, 3, 1, 2).float() / 255
    labels = torch.as_tensor(np.asarray(dataset.targets)[index])
    return images, labels


def _standard_resnet10() -> nn.Module:
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _encode(images: torch.Tensor) -> torch.Tensor:
    return torch.cat([images, 1 - images], dim=1)


def _epoch(model: nn.Module, images, labels, prepare, bcos_loss: bool, optimizer, batch_size: int, seed: int) -> float:
    model.train()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    total = 0.0
    for start in range(0, len(images), batch_size):
        index = order[start : start + batch_size]
        logits = model(prepare(images[index]))
        if bcos_loss:
            loss = F.binary_cross_entropy_with_logits(logits, F.one_hot(labels[index], 10).float())
        else:
            loss = F.cross_entropy(logits, labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(index)
    return total / len(images)


@torch.no_grad()
def _accuracy(model: nn.Module, images, labels, prepare) -> float:
    model.eval()
    correct = sum(int((model(prepare(images[s : s + 500])).argmax(1) == labels[s : s + 500]).sum()) for s in range(0, len(images), 500))
    return 100.0 * correct / len(images)


class _EncodedTestSet:
    def __init__(self, images, labels) -> None:
        self.images, self.labels = _encode(images), labels

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def _localisation(model: nn.Module, images, labels, max_grids: int) -> dict[str, float | int]:
    model.eval()
    data = _EncodedTestSet(images, labels)
    batches = [(data.images[s : s + 500], labels[s : s + 500]) for s in range(0, len(images), 500)]
    ranking = rank_by_confidence(model, batches, 10)
    blocks = grid_blocks(ranking, 3, conf_thresh=0.5, max_grids=max_grids, seed=0)
    result: dict[str, float | int] = {"grids": len(blocks)}
    for name in EXPLAINERS:
        if not blocks:
            result[name] = float("nan")
            continue
        scores = evaluate_grids(get_explainer(model, name), data, blocks, 3, smooth=1, grids_per_batch=4)
        result[name] = float(scores.mean())
    return result


def _measure(model, test_images, test_labels, grids: int) -> dict:
    return {
        "accuracy": _accuracy(model, test_images, test_labels, _encode),
        **_localisation(model, test_images, test_labels, grids),
    }


def _bcos_run(label: str, model, train, test, epochs: int, lr: float, batch_size: int, grids: int, log) -> list[dict]:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rows = [{"run": label, "epoch": 0, "seconds": 0.0, **_measure(model, *test, grids)}]
    log(rows[-1])
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss = _epoch(model, *train, _encode, True, optimizer, batch_size, seed=1000 + epoch)
        seconds = time.perf_counter() - start
        rows.append({"run": label, "epoch": epoch, "seconds": round(seconds, 1), "train_loss": loss, **_measure(model, *test, grids)})
        log(rows[-1])
    return rows


def markdown_table(result: dict) -> str:
    """The per-epoch table of a result file, as in docs/bcosify.md."""
    lines = [
        "| run | epoch | top-1 (%) | grids | Ours | GCam | IxG | epoch time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        scores = [f"{row[name]:.3f}" if name in row and row[name] == row[name] else "–" for name in EXPLAINERS]
        grids = str(row.get("grids", "–"))
        lines.append(
            f"| {row['run']} | {row['epoch']} | {row['accuracy']:.1f} | {grids} | {' | '.join(scores)} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, metavar="RESULT_JSON", help="Only print the markdown table of a result file.")
    parser.add_argument("--train-size", type=int, default=8_000)
    parser.add_argument("--test-size", type=int, default=2_000)
    parser.add_argument("--standard-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs = from-scratch epochs")
    parser.add_argument("--grids", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bcosify_fashion_mnist.json"))
    args = parser.parse_args()
    if args.table is not None:
        print(markdown_table(json.loads(args.table.read_text())))
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    began = time.perf_counter()

    def log(row: dict) -> None:
        print(json.dumps(row), flush=True)

    train = _tensors(True, args.train_size, seed=0)
    test = _tensors(False, args.test_size, seed=1)

    standard = _standard_resnet10()
    optimizer = torch.optim.Adam(standard.parameters(), lr=args.lr)
    standard_rows = []
    for epoch in range(1, args.standard_epochs + 1):
        start = time.perf_counter()
        loss = _epoch(standard, *train, _normalise, False, optimizer, args.batch_size, seed=epoch)
        seconds = time.perf_counter() - start
        standard_rows.append({"run": "standard", "epoch": epoch, "seconds": round(seconds, 1), "train_loss": loss,
                              "accuracy": _accuracy(standard, *test, _normalise)})  # fmt: skip
        log(standard_rows[-1])

    options = dict(b=2, bias="remove", normalization=(MEAN, STD), logit_bias=-math.log(9))
    torch.manual_seed(1)
    converted = bcos.bcosify(standard.eval(), **options)
    finetuned = _bcos_run("bcosified", converted, train, test, args.epochs, args.lr, args.batch_size, args.grids, log)
    torch.manual_seed(1)
    scratch_model = bcos.bcosify(_standard_resnet10().eval(), **options)
    scratch = _bcos_run("scratch", scratch_model, train, test, args.epochs, args.lr, args.batch_size, args.grids, log)

    result = {
        "command": "python -m benchmarks.bcosify_fashion_mnist " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "table"
        ),
        "torch": torch.__version__,
        "total_seconds": round(time.perf_counter() - began, 1),
        "rows": standard_rows + finetuned + scratch,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({result['total_seconds']} s)")


if __name__ == "__main__":
    main()
