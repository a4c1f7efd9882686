"""CPU benchmark suite: B-cos vs standard, measured side by side in one run (``make benchmark``).

Every row times the B-cos case and its standard counterpart in alternating order (A/B/B/A/...)
after a warm-up, with ``torch.set_num_threads(2)`` and float32, and reports medians and their
ratio next to the target of issue 5 (and issue 2 for batched explanations). Memory is measured
in fresh processes (see :mod:`benchmarks.memory`). The run first makes glibc keep freed memory
for reuse (:func:`bcos.cpu_allocator.keep_freed_memory`, the opt-in of training runs, applied to
both sides; ``--system-allocator`` measures without it). Takes a few minutes on a 2-core machine;
``--quick`` uses fewer rounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from bcos.cpu_allocator import keep_freed_memory
from bcos.modules import BcosConv2d
from bcos.ops import cpu_kernels
from benchmarks import cases, standard_models
from benchmarks.timing import interleaved, median


@dataclass
class Row:
    """One line of the result table: ``ratio`` is B-cos cost / standard cost (lower is better),
    except for rows where ``higher_is_better`` (speed-ups and throughput ratios)."""

    name: str
    bcos: str
    standard: str
    ratio: float
    target: float
    higher_is_better: bool = False
    ratio_of_minima: float | None = None  # the same ratio from the fastest rounds (JSON only)
    paired_ratio: float | None = None  # median over rounds of each round's own B-cos/standard ratio

    @property
    def decisive_ratio(self) -> float:
        """The paired ratio where the row has one, else the ratio of medians.

        Both sides of a round run back to back, so each round's own ratio cancels the slow and
        fast phases of a shared machine, which move the two medians apart by chance (measured on
        the 2-core VM: ratios of medians 1.17-1.37 in four runs of one build whose paired ratios
        were 1.19-1.23).
        """
        return self.ratio if self.paired_ratio is None else self.paired_ratio

    @property
    def met(self) -> bool:
        ratio = self.decisive_ratio
        return ratio >= self.target if self.higher_is_better else ratio <= self.target


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _rate(images: int, seconds: float) -> str:
    return f"{images / seconds:.1f} img/s"


def conv_row(rounds: int) -> Row:
    """One 3x3 conv 64->64 on 32x32, batch 64, forward + backward (input gradient included)."""
    torch.manual_seed(0)
    x = torch.randn(64, 64, 32, 32)
    grad = torch.randn(64, 64, 32, 32)
    layers = {"bcos": BcosConv2d(64, 64, 3, padding=1), "standard": nn.Conv2d(64, 64, 3, padding=1, bias=False)}

    def run(layer: nn.Module) -> Callable[[], None]:
        def step() -> None:
            layer(x.detach().requires_grad_(True)).backward(grad)

        return step

    times = interleaved({name: run(layer) for name, layer in layers.items()}, rounds)
    b, s = median(times["bcos"]), median(times["standard"])
    return Row(
        "single conv 3x3 64->64, 32x32, batch 64, fwd+bwd", _ms(b), _ms(s) + " (nn.Conv2d)", b / s, 1.2,
        ratio_of_minima=_min_ratio(times, "bcos", "standard"),
        paired_ratio=_paired_ratio(times, "bcos", "standard"),
    )  # fmt: skip


def _min_ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    return min(times[a]) / min(times[b])


def _paired_ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """The median of the rounds' own ratios: each round times both sides back to back, so a
    slow phase of the machine that spans a round cancels out of its ratio."""
    return median([x / y for x, y in zip(times[a], times[b])])


def cifar_rows(rounds: int, explain_images: int) -> list[Row]:
    """CIFAR ResNet-20 training (B-cos vs standard) and B-cos explanations, all interleaved."""
    torch.manual_seed(0)
    batch = 64
    images = torch.rand(batch, 3, 32, 32)
    targets = torch.randint(0, 10, (batch,))
    bcos_model = cases.bcos_cifar_resnet20()
    standard = standard_models.cifar10_resnet20()
    bcos_inputs = cases.bcos_inputs(images)
    train_bcos = cases.train_step(bcos_model, bcos_inputs, targets, True)
    train_std = cases.train_step(standard, images, targets, False)
    for _ in range(2):  # some optimisation so that running statistics are not the initial ones
        train_bcos()

    # the explanation model is a separate copy in eval mode, so training steps do not change it
    explainer = cases.bcos_cifar_resnet20()
    explainer.load_state_dict(bcos_model.state_dict())
    explainer.eval()
    few = bcos_inputs[:explain_images]

    def explain_batched() -> None:
        explainer.explain(bcos_inputs)

    def explain_one_by_one() -> None:
        for index in range(few.shape[0]):
            explainer.explain(few[index : index + 1])

    # training: B-cos against standard; explanations: against the B-cos training step
    train = interleaved({"bcos": train_bcos, "standard": train_std}, 3 * rounds)
    explain = interleaved(
        {"train": train_bcos, "batched": explain_batched, "single": explain_one_by_one}, rounds
    )
    b, s = median(train["bcos"]), median(train["standard"])
    trained = median(explain["train"])
    batched, single = median(explain["batched"]), median(explain["single"])
    batched_rate, single_rate = batch / batched, few.shape[0] / single
    return [
        Row(
            "CIFAR ResNet-20 training step, batch 64 (bnu-linear-nomaxout vs BN+ReLU)",
            _rate(batch, b), _rate(batch, s), b / s, 1.3,
            ratio_of_minima=_min_ratio(train, "bcos", "standard"),
            paired_ratio=_paired_ratio(train, "bcos", "standard"),
        ),
        Row(
            "CIFAR ResNet-20 explanations, batch 64 in one call vs one image per call",
            _rate(batch, batched), _rate(few.shape[0], single) + " (per-image calls)",
            batched_rate / single_rate, 4.0, higher_is_better=True,
        ),
        Row(
            "CIFAR ResNet-20 batched explanation vs training step throughput (B-cos)",
            _rate(batch, batched), _rate(batch, trained) + " (B-cos training)",
            trained / batched, 0.8, higher_is_better=True,
        ),
    ]  # fmt: skip


def imagenet_rows(rounds: int) -> list[Row]:
    """ImageNet ResNet-18, batch 8, 224x224: training step and inference vs torchvision."""
    torch.manual_seed(0)
    batch = 8
    images = torch.rand(batch, 3, 224, 224)
    targets = torch.randint(0, 1000, (batch,))
    bcos_model = cases.bcos_imagenet_resnet(18)
    standard = cases.standard_imagenet_resnet(18)
    train = interleaved(
        {
            "bcos": cases.train_step(bcos_model, cases.bcos_inputs(images), targets, True),
            "standard": cases.train_step(standard, images, targets, False),
        },
        rounds,
    )
    infer = interleaved(
        {
            "bcos": cases.inference_step(bcos_model, cases.bcos_inputs(images)),
            "standard": cases.inference_step(standard, images),
        },
        rounds,
    )
    rows = []
    for label, times, target in (("training step", train, 1.15), ("inference", infer, 1.15)):
        b, s = median(times["bcos"]), median(times["standard"])
        rows.append(
            Row(
                f"ImageNet ResNet-18 {label}, batch 8, 224x224", _rate(batch, b),
                _rate(batch, s) + " (torchvision)", b / s, target,
                ratio_of_minima=_min_ratio(times, "bcos", "standard"),
                paired_ratio=_paired_ratio(times, "bcos", "standard"),
            )  # fmt: skip
        )
    return rows


def memory_rows(batch: int = 8) -> list[Row]:
    """Peak training-step memory growth (fresh processes), ImageNet ResNet-18, batch 8."""
    results = {}
    for name in ("bcos_resnet18", "standard_resnet18"):
        command = [sys.executable, "-m", "benchmarks.memory", name, "--batch", str(batch)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=_root())
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    b, s = results["bcos_resnet18"], results["standard_resnet18"]
    rows = []
    if b["rss_growth"] is not None and s["rss_growth"] is not None:
        rows.append(
            Row(
                "ImageNet ResNet-18 peak training memory growth (RSS), batch 8",
                f"{b['rss_growth'] / 2**20:.0f} MiB", f"{s['rss_growth'] / 2**20:.0f} MiB (torchvision)",
                b["rss_growth"] / s["rss_growth"], 1.2,
            )
        )  # fmt: skip
    rows.append(
        Row(
            "ImageNet ResNet-18 tensors saved for backward, batch 8",
            f"{b['saved_bytes'] / 2**20:.0f} MiB", f"{s['saved_bytes'] / 2**20:.0f} MiB (torchvision)",
            b["saved_bytes"] / s["saved_bytes"], 1.2,
        )
    )  # fmt: skip
    return rows


def _root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": f"{cpu}, {os.cpu_count()} cores visible",
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "load average (1, 5, 15 min) at the end": load,
    }


def format_table(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| measurement | B-cos | standard | ratio of medians | paired ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        sign = ">=" if row.higher_is_better else "<="
        paired = "" if row.paired_ratio is None else f"{row.paired_ratio:.2f}x"
        lines.append(
            f"| {row.name} | {row.bcos} | {row.standard} | {row.ratio:.2f}x | {paired} | "
            f"{sign} {row.target}x | {'yes' if row.met else 'NO'} |"
        )
    return "\n".join(lines)


SECTIONS = ("conv", "cifar", "imagenet", "memory")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="B-cos vs standard CPU benchmarks (ratios side by side).")
    parser.add_argument(
        "--rounds", type=int, default=9,
        help="timed rounds per case (median reported); the single conv runs twice as many, "
        "the CIFAR training step three times as many",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="3 rounds, for a smoke run")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows and machine info to this file")
    parser.add_argument(
        "--system-allocator", action="store_true",
        help="leave glibc's malloc thresholds alone (default: keep freed memory for reuse on both "
        "sides, as training with BCOS_KEEP_FREED_MEMORY=1 does; see bcos.cpu_allocator)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    torch.set_num_threads(args.threads)
    kept = False if args.system_allocator else keep_freed_memory()  # both sides alike

    rows: list[Row] = []
    if "conv" in args.only:
        rows.append(conv_row(2 * rounds))
    if "cifar" in args.only:
        rows += cifar_rows(rounds, explain_images=16)
    if "imagenet" in args.only:
        rows += imagenet_rows(rounds)
    if "memory" in args.only:
        rows += memory_rows()
    info = machine()
    info["malloc"] = "freed memory kept (bcos.cpu_allocator)" if kept else "system default"
    info["fused CPU kernels"] = "built" if cpu_kernels.available() else "unavailable (eager operations)"
    print(format_table(rows))
    print()
    print("; ".join(f"{key}: {value}" for key, value in info.items()))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": info, "rows": [dict(asdict(r), met=r.met) for r in rows]}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
