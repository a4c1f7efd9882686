"""GPU benchmark rows of issue 5 on one CUDA device (prepared for an H100; about 3-4 minutes).

Settings as in the issue: bf16 autocast, channels_last, batch 128, 224x224, Adam. Rows:

* ResNet-50 training step, eager: B-cos vs torchvision throughput and peak memory;
* the same with ``torch.compile`` (the B-cos model is compiled with ``fullgraph=True``, which
  fails on any graph break);
* explaining 32 images in one batched call vs one image per call (the reference API);
* batched explanation throughput vs the training step, same model and batch.

Writes JSON (``--out``, default ``benchmarks/gpu_results.json``) and prints a table. Before
timing, a quick check compares the fused B-cos layers with the plain autograd path on the GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import torch

from benchmarks import cases
from benchmarks.run_cpu import Row, format_table, machine
from benchmarks.timing import interleaved, median

REFERENCE_SINGLE_IMAGE_RATE = 44.6  # img/s, the reference's one-image-per-call explanations (issue 5)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def check_fused_layers(device: torch.device) -> float:
    """Largest relative difference, forward and input gradient, between the fused B-cos conv +
    uncentered batch norm and a plain autograd formulation (float32 on ``device``)."""
    from bcos.modules import BcosConv2d
    from bcos.modules.norms import BatchNormUncentered2d

    torch.manual_seed(0)
    conv = BcosConv2d(16, 32, 3, padding=1).to(device)
    norm = BatchNormUncentered2d(32).to(device)
    x = torch.randn(4, 16, 20, 20, device=device)

    def plain(inputs: torch.Tensor) -> torch.Tensor:
        weight = conv.linear.weight / conv.linear.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        lin = torch.nn.functional.conv2d(inputs, weight, padding=1)
        ones = torch.ones(1, 16, 3, 3, device=device)
        patch = (torch.nn.functional.conv2d(inputs * inputs, ones, padding=1) + 1e-6).sqrt()
        out = lin.abs() / patch * lin
        var = out.var(dim=(0, 2, 3), correction=0, keepdim=True)
        return out / (var + norm.eps).sqrt() * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)

    results = []
    for forward in (lambda t: norm(conv(t)), plain):
        xi = x.clone().requires_grad_(True)
        out = forward(xi)
        out.square().sum().backward()
        results.append((out.detach(), xi.grad))
    (out_a, grad_a), (out_b, grad_b) = results
    return max(
        float((out_a - out_b).abs().max() / out_b.abs().max()),
        float((grad_a - grad_b).abs().max() / grad_b.abs().max()),
    )


def _models(device: torch.device) -> dict[str, torch.nn.Module]:
    return {
        "bcos": cases.bcos_imagenet_resnet(50).to(device, memory_format=torch.channels_last),
        "standard": cases.standard_imagenet_resnet(50).to(device, memory_format=torch.channels_last),
    }


def _inputs(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = torch.rand(batch, 3, 224, 224, device=device)
    targets = torch.randint(0, 1000, (batch,), device=device)
    bcos_images = cases.bcos_inputs(images).contiguous(memory_format=torch.channels_last)
    return images.contiguous(memory_format=torch.channels_last), bcos_images, targets


def _peak_memory(step: Callable[[], None]) -> int:
    _sync()
    torch.cuda.reset_peak_memory_stats()
    step()
    _sync()
    return torch.cuda.max_memory_allocated()


def training_rows(
    batch: int, steps: int, compile_backend: str | None, device: torch.device
) -> tuple[list[Row], dict]:
    images, bcos_images, targets = _inputs(batch, device)
    models = _models(device)
    compile_models = compile_backend is not None
    label = "compiled" if compile_models else "eager"
    extra: dict[str, object] = {}
    if compile_models:
        models["bcos"] = torch.compile(models["bcos"], fullgraph=True, backend=compile_backend)
        models["standard"] = torch.compile(models["standard"], backend=compile_backend)
    fns = {
        "bcos": cases.train_step(models["bcos"], bcos_images, targets, True, amp_dtype=torch.bfloat16),
        "standard": cases.train_step(models["standard"], images, targets, False, amp_dtype=torch.bfloat16),
    }
    if compile_models:  # compile both outside the timed rounds and report how long it took
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync()
            extra[f"compile_seconds_{name}"] = round(time.perf_counter() - start, 1)
    times = interleaved(fns, steps, warmup=3, sync=_sync)
    b, s = median(times["bcos"]), median(times["standard"])
    rows = [
        Row(
            f"GPU ResNet-50 training step ({label}), bf16, channels_last, batch {batch}",
            f"{batch / b:.0f} img/s", f"{batch / s:.0f} img/s (torchvision)", s / b,
            0.8 if not compile_models else 0.9, higher_is_better=True,
        )
    ]  # fmt: skip
    if not compile_models and device.type == "cuda":
        peak_b, peak_s = _peak_memory(fns["bcos"]), _peak_memory(fns["standard"])
        rows.append(
            Row(
                f"GPU ResNet-50 peak training memory ({label}), batch {batch}",
                f"{peak_b / 2**30:.1f} GiB", f"{peak_s / 2**30:.1f} GiB (torchvision)",
                peak_b / peak_s, 1.5,
            )
        )  # fmt: skip
    extra[f"train_seconds_{label}"] = {"bcos": b, "standard": s}
    return rows, extra


def explanation_rows(batch: int, explain_batch: int, steps: int, device: torch.device) -> tuple[list[Row], dict]:
    _, bcos_images, targets = _inputs(batch, device)
    model = cases.bcos_imagenet_resnet(50).to(device, memory_format=torch.channels_last)
    train = cases.train_step(model, bcos_images, targets, True, amp_dtype=torch.bfloat16)
    explainer = cases.bcos_imagenet_resnet(50).to(device, memory_format=torch.channels_last).eval()
    few = bcos_images[:explain_batch]

    def explain(inputs: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                explainer.explain(inputs)

        return run

    def one_by_one() -> None:
        for index in range(few.shape[0]):
            explain(few[index : index + 1])()

    times = interleaved(
        {"train": train, "batch": explain(bcos_images), "few": explain(few), "single": one_by_one},
        steps, warmup=2, sync=_sync,
    )  # fmt: skip
    t_train, t_batch = median(times["train"]), median(times["batch"])
    t_few, t_single = median(times["few"]), median(times["single"])
    few_rate, single_rate = explain_batch / t_few, explain_batch / t_single
    rows = [
        Row(
            f"GPU explaining {explain_batch} images (ResNet-50) in one call vs the reference's 44.6 img/s",
            f"{few_rate:.0f} img/s", f"{REFERENCE_SINGLE_IMAGE_RATE} img/s (reference, one per call)",
            few_rate / REFERENCE_SINGLE_IMAGE_RATE, 20.0, higher_is_better=True,
        ),
        Row(
            f"GPU explaining {explain_batch} images: one call vs one image per call (this library)",
            f"{few_rate:.0f} img/s", f"{single_rate:.0f} img/s (per-image calls)",
            few_rate / single_rate, 4.0, higher_is_better=True,
        ),
        Row(
            f"GPU batched explanation vs training step throughput, ResNet-50, batch {batch}",
            f"{batch / t_batch:.0f} img/s", f"{batch / t_train:.0f} img/s (B-cos training)",
            t_train / t_batch, 0.8, higher_is_better=True,
        ),
    ]  # fmt: skip
    return rows, {"explain_seconds": {"train": t_train, "batch": t_batch, "few": t_few, "single": t_single}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="B-cos vs standard GPU benchmarks (issue 5 rows).")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=15, help="timed rounds per case")
    parser.add_argument("--explain-batch", type=int, default=32)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--device", default="cuda", help="cpu only for a smoke run of the script itself")
    parser.add_argument("--out", default="benchmarks/gpu_results.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; run this script on a GPU machine (or --device cpu for a smoke run)", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none (smoke run)"
    result: dict[str, object] = {"machine": {**machine(), "gpu": gpu}}
    result["fused_vs_plain_max_rel_diff"] = check_fused_layers(device)
    rows: list[Row] = []

    def record(name: str, produce: Callable[[], tuple[list[Row], dict]]) -> None:
        try:
            new_rows, extra = produce()
            rows.extend(new_rows)
            result[name] = extra
        except Exception as error:  # keep the other rows when one fails (e.g. a compile error)
            result[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
        torch.cuda.empty_cache()
        result["rows"] = [dict(vars(r), met=r.met) for r in rows]
        result["seconds"] = round(time.perf_counter() - started, 1)
        with open(args.out, "w") as handle:  # written after every section
            json.dump(result, handle, indent=2)

    record("eager", lambda: training_rows(args.batch, args.steps, None, device))
    record("explanations", lambda: explanation_rows(args.batch, args.explain_batch, args.steps, device))
    if not args.skip_compile:
        record("compiled", lambda: training_rows(args.batch, args.steps, args.compile_backend, device))
    print(format_table(rows))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
