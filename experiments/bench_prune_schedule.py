"""One-shot against gradual pruning, and fine-tuning length (issue 6), paired: the same plans.

    python experiments/bench_prune_schedule.py [--models lenet5,lenet300] [--plans 8] \
        [--epochs 3,8] [--seed 0]

For each model the baseline (30 epochs, autocompress's cache) is compressed with the
Deep-Compression-like recipe and with ``--plans`` plans drawn (seeded) from the high-compression
corner of the default space: per-layer prune ratio 0.80-0.98, bits 2-6. Distillation
(temperature 4, alpha 0.5) and learning rate 1e-3 are fixed, so the prune schedule and the
number of fine-tuning epochs (each of ``--epochs``) are the only differences between a plan's
runs. Every plan runs through the trial's own code (``compress``,
``objective.gradual_pruning``, ``fit``, ``pack``) with the same seed for every setting.
Prints one row per plan (validation and test accuracy of each setting, the compression ratio)
and each setting's median paired difference to the first (one-shot, first epochs). Data: the
MNIST files in ../shared/data/mnist.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
from pathlib import Path

import torch

from autocompress.artifact import ModelSpec, pack
from autocompress.compress import compress
from autocompress.config import build_config
from autocompress.data import DataSplits
from autocompress.finetune import accuracy, fit
from autocompress.objective import gradual_pruning
from autocompress.plan import CompressionPlan, DistillPlan, FinetunePlan, LayerPlan
from autocompress.space import load_space
from autocompress.study import prepare
from autocompress.teacher import Baseline, prepare_baseline

REPO = Path(__file__).resolve().parents[1]
SCHEDULES = ("oneshot", "gradual")


def recipe_plan(model: str, layers: list[str]) -> CompressionPlan:
    path = REPO / f"experiments/recipes/deep_compression_{model}.yaml"
    return load_space(str(path), layers).fixed_plan("recipe")


def random_plan(rng: random.Random, layers: list[str]) -> CompressionPlan:
    return CompressionPlan(
        layers={
            name: LayerPlan(bits=rng.choice([2, 3, 4, 5, 6]), prune=rng.randrange(40, 50) / 50)
            for name in layers
        }
    )


def run(
    plan: CompressionPlan, baseline: Baseline, data: DataSplits, spec: ModelSpec, seed: int
) -> tuple[float, float, int]:
    """(validation accuracy, test accuracy, file bytes) of one plan, as a trial computes them."""
    torch.manual_seed(seed)
    student = compress(baseline.model, plan, data.train_x[:2])
    fit(
        student,
        (data.train_x, data.train_y),
        (data.val_x, data.val_y),
        epochs=plan.finetune.epochs,
        lr=plan.finetune.lr,
        batch_size=plan.finetune.batch_size,
        seed=seed,
        teacher_logits=baseline.train_logits,
        distill=plan.distill,
        on_step=gradual_pruning(student, plan, len(data.train_x)),
    )
    return (
        accuracy(student, data.val_x, data.val_y),
        accuracy(student, data.test_x, data.test_y),
        len(pack(student, plan, spec)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,lenet300")
    parser.add_argument("--plans", type=int, default=8, help="random plans per model (8)")
    parser.add_argument("--epochs", default="3", help="fine-tuning epochs to compare (3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=f"mnist:{REPO.parent / 'shared/data/mnist'}")
    args = parser.parse_args()
    settings = [(int(e), s) for e in args.epochs.split(",") for s in SCHEDULES]
    names = [f"{schedule} {epochs} ep" for epochs, schedule in settings]

    for model in args.models.split(","):
        config = build_config(None, {"model": model, "data": args.data})
        prepared = prepare(config)
        baseline = prepare_baseline(config, prepared.model, prepared.data, from_checkpoint=False)
        layers = [unit.name for unit in prepared.space.units]
        spec = ModelSpec(model, prepared.data.input_shape, prepared.data.num_classes)
        rng = random.Random(args.seed)
        plans = {"deep_compression": recipe_plan(model, layers)}
        plans |= {f"random-{i}": random_plan(rng, layers) for i in range(args.plans)}
        print(f"\n{model}: baseline validation {baseline.val_accuracy:.2%} ({baseline.source})")
        print(
            "| plan | layers (bits / pruned) | ratio | "
            + " | ".join(f"val {n}" for n in names)
            + " | "
            + " | ".join(f"test {n}" for n in names)
            + " |\n|---|---|---:|"
            + "---:|" * (2 * len(names))
        )
        val: dict[str, list[float]] = {n: [] for n in names}
        for i, (label, plan) in enumerate(plans.items()):
            got = {}
            for name, (epochs, schedule) in zip(names, settings, strict=True):
                finetune = FinetunePlan(epochs=epochs, prune_schedule=schedule)
                scheduled = dataclasses.replace(plan, distill=DistillPlan(), finetune=finetune)
                got[name] = run(scheduled, baseline, prepared.data, spec, args.seed + i)
                val[name].append(100 * got[name][0])
            ratio = baseline.float32_bytes / got[names[0]][2]
            print(
                f"| {label} | {plan.summary()} | {ratio:.0f}x | "
                + " | ".join(f"{got[n][0]:.2%}" for n in names)
                + " | "
                + " | ".join(f"{got[n][1]:.2%}" for n in names)
                + " |",
                flush=True,
            )
        print(f"\n{model}: validation accuracy minus {names[0]}'s, median [min to max] over plans")
        for name in names[1:]:
            gains = [a - b for a, b in zip(val[name], val[names[0]], strict=True)]
            print(
                f"- {name}: {statistics.median(gains):+.2f} points "
                f"[{min(gains):+.2f} to {max(gains):+.2f}], better in "
                f"{sum(g > 0 for g in gains)} of {len(gains)} plans"
            )


if __name__ == "__main__":
    main()
