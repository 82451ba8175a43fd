"""One trial, step by step: params -> plan -> compressed, fine-tuned student -> (accuracy, size)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import torch
from torch.nn.utils import parametrize

from autocompress.artifact import SUFFIX, ModelSpec, pack
from autocompress.compress import compress, materialize
from autocompress.config import ExperimentConfig
from autocompress.data import DataSplits
from autocompress.early_stop import CURVE, Gains
from autocompress.errors import TrialFailed
from autocompress.finetune import EpochResult, fit, steps_per_epoch
from autocompress.gp import VALUES_AT_STOP
from autocompress.latency import Latency, measure_latency
from autocompress.plan import CompressionPlan
from autocompress.prune import GradualPruning
from autocompress.refine import REFINE_OF
from autocompress.size import weight_sparsity
from autocompress.space import SearchSpace
from autocompress.storage import batched_writes
from autocompress.teacher import Baseline
from autocompress.tracking import Tracker

COMPLETE = optuna.trial.TrialState.COMPLETE
# Gradual pruning reaches the planned masks after this share of fine-tuning; the rest recovers.
RAMP_FRACTION = 2 / 3
# Few repeats: as an objective, latency is timed in every trial and must stay a small share.
LATENCY_WARMUP = 3
LATENCY_REPEATS = 10


@dataclass(frozen=True)
class SearchContext:
    """What every trial of one run shares: built once, before the first trial."""

    config: ExperimentConfig
    space: SearchSpace
    data: DataSplits  # on the device
    baseline: Baseline
    tracker: Tracker
    parent_run_id: str
    models_dir: Path  # each complete trial's compressed file; front members' are kept
    model_spec: ModelSpec  # what a compressed file rebuilds its architecture from
    # Whether a stopped trial records its objectives at the stop (``VALUES_AT_STOP``): the
    # GP sampler models them (autocompress.gp); the others skip its packing (4 ms a trial).
    values_at_stop: bool = False


def gradual_pruning(
    student: torch.nn.Module, plan: CompressionPlan, train_examples: int
) -> GradualPruning | None:
    """The ``on_step`` hook of a plan with the gradual prune schedule, else None."""
    if plan.finetune.prune_schedule != "gradual":
        return None
    steps = plan.finetune.epochs * steps_per_epoch(train_examples, plan.finetune.batch_size)
    return GradualPruning(student, round(RAMP_FRACTION * steps))


def model_path(models_dir: Path, number: int) -> Path:
    return models_dir / f"trial-{number:04d}{SUFFIX}"


class Objective:
    def __init__(self, context: SearchContext) -> None:
        self.ctx = context
        self.gains = Gains()  # early stopping's, from the study's complete trials

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        ctx = self.ctx
        start = time.perf_counter()
        # 1. Optuna's flat parameters -> the plan (logged verbatim: enough to rebuild it).
        with batched_writes(trial):  # one transaction, not one per parameter
            plan = ctx.space.suggest(trial)
            if REFINE_OF in trial.user_attrs:  # a front member again, fine-tuned longer
                epochs = ctx.config.refine.epochs
                plan = replace(plan, finetune=replace(plan.finetune, epochs=epochs))
            trial.set_user_attr("plan", plan.to_dict())
            trial.set_user_attr("summary", plan.summary())
        run = ctx.tracker.trial_run(
            ctx.parent_run_id,
            trial.number,
            trial.params,
            plan.to_dict(),
            on_open=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
        )
        curve: list[float | None] = []  # None: an epoch not validated
        validating: list[float] = []  # each epoch's validation pass, seconds
        tuned: float | None = None  # when fine-tuning started

        def tuning_times() -> tuple[float, float]:
            """Seconds since fine-tuning started: (training, validation passes). Issue 6 counts
            evaluation outside fine-tuning, so the validation passes are kept apart."""
            assert tuned is not None
            validate_s = sum(validating)
            return time.perf_counter() - tuned - validate_s, validate_s

        try:
            # What a trial may still gain after each epoch, learned from the complete ones:
            # the trials the sampler read for this trial (Optuna's per-trial cache, as its own
            # samplers use it), since each fresh read of an SQLite study took ~5 ms.
            self.gains.read(
                trial.study._get_trials(deepcopy=False, states=(COMPLETE,), use_cache=True)
            )
            allowance = self.gains.allowance(
                plan.finetune, ctx.baseline.val_accuracy - ctx.config.max_drop
            )
            # 2. A fresh copy of the teacher, pruned and fake-quantized.
            torch.manual_seed(ctx.config.seed + trial.number)
            student = compress(ctx.baseline.model, plan, ctx.data.train_x[:2])

            # 3. Fine-tune against the teacher's logits, cached once per run.
            def on_epoch(result: EpochResult) -> None:
                accuracy = result.val_accuracy  # None after an epoch left unvalidated
                metrics = {"train_loss": result.loss}
                if accuracy is not None:
                    metrics["val_accuracy"] = accuracy
                run.log_epoch(metrics, step=result.epoch)
                curve.append(accuracy)
                validating.append(result.val_seconds)
                if accuracy is None:
                    return
                if result.epoch == 1 and accuracy < self._hopeless_below():
                    raise optuna.TrialPruned(f"validation accuracy {accuracy:.2%} after epoch 1")
                if allowance.hopeless(result.epoch, accuracy):
                    raise optuna.TrialPruned(
                        f"validation accuracy {accuracy:.2%} after epoch {result.epoch} cannot "
                        f"end within {ctx.config.max_drop:.1%} of the baseline (at most "
                        f"+{allowance.gains[result.epoch - 1] or 0.0:.1%} more)"
                    )

            gradual = gradual_pruning(student, plan, len(ctx.data.train_x))
            tuned = time.perf_counter()
            history = fit(
                student,
                (ctx.data.train_x, ctx.data.train_y),
                (ctx.data.val_x, ctx.data.val_y),
                epochs=plan.finetune.epochs,
                lr=plan.finetune.lr,
                batch_size=plan.finetune.batch_size,
                seed=ctx.config.seed + trial.number,
                teacher_logits=ctx.baseline.train_logits,
                distill=plan.distill,
                on_epoch=on_epoch,
                on_step=gradual,
                cuda_graph=ctx.config.cuda_graphs,
                validate_every=ctx.config.validate_every,
            )
            finetune_s, validate_s = tuning_times()

            # 4. Validation accuracy (the last epoch's, already checked finite) and the size.
            if not all(bool(torch.isfinite(p).all()) for p in student.parameters()):
                raise TrialFailed("the compressed model's weights are not finite")
            val_accuracy = history[-1].val_accuracy
            assert val_accuracy is not None  # the last epoch is always validated
            # The size is the real file's length (tests check the formula in size.py on it).
            packing = time.perf_counter()
            with parametrize.cached():  # each masked, quantized weight computed once for both
                packed = pack(student, plan, ctx.model_spec)
                pack_s = time.perf_counter() - packing
                sparsity = weight_sparsity(student)
            path = model_path(ctx.models_dir, trial.number)
            path.write_bytes(packed)
            latency = self._latency(student)
            metrics = {
                "accuracy": val_accuracy,
                "accuracy_drop": ctx.baseline.val_accuracy - val_accuracy,
                "size_bytes": len(packed),
                "compression_ratio": ctx.baseline.float32_bytes / len(packed),
                "sparsity": sparsity,
                "parameters": sum(p.numel() for p in student.parameters()),
                **{f"latency_ms_batch{b}": lat.median_ms for b, lat in latency.items()},
                "time_finetune_s": finetune_s,
                "time_validate_s": validate_s,
                "time_pack_s": pack_s,
                "time_trial_s": time.perf_counter() - start,
            }
            with batched_writes(trial):
                if latency:
                    trial.set_user_attr("latency_ms", latency[1].median_ms)
                trial.set_user_attr("time_finetune_s", finetune_s)
                trial.set_user_attr("time_validate_s", validate_s)
                trial.set_user_attr(CURVE, curve)
                ratio = metrics["compression_ratio"]
                run.end(  # may open the run and record its id on the trial
                    "FINISHED",
                    {"state": "COMPLETE"},
                    metrics,
                    name=f"trial-{trial.number:03d} {ratio:.1f}x {val_accuracy:.2%}",
                    files=[path],  # on the run: found from any machine
                )
            # 5. The objectives back to the study: maximize accuracy, minimize bytes (and ms).
            return self._values(val_accuracy, len(packed), latency)
        except optuna.TrialPruned as exc:
            with batched_writes(trial):
                trial.set_user_attr("pruned_reason", str(exc))
                if tuned is not None:  # stopped within fine-tuning: time accounting stays whole
                    finetune_s, validate_s = tuning_times()
                    trial.set_user_attr("time_finetune_s", finetune_s)
                    trial.set_user_attr("time_validate_s", validate_s)
                    # The curve up to the stop says when (its length) and at what accuracy;
                    # early stopping learns from complete trials' curves only.
                    trial.set_user_attr(CURVE, curve)
                    if ctx.values_at_stop:
                        values = self._values_at_stop(student, plan, curve)
                        trial.set_user_attr(VALUES_AT_STOP, values)
                run.end("KILLED", {"state": "PRUNED", "pruned_reason": str(exc)})
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            trial.set_user_attr("fail_reason", reason)
            run.end("FAILED", {"state": "FAIL", "fail_reason": reason})
            raise
        except BaseException as exc:  # a signal (KeyboardInterrupt): the trial did not fail
            reason = str(exc) or type(exc).__name__
            trial.set_user_attr("fail_reason", reason)
            run.end("KILLED", {"state": "FAIL", "fail_reason": reason})
            raise

    def _latency(self, student: torch.nn.Module) -> dict[int, Latency]:
        """Latency of what a deployment runs (masks and quantization baked into weights),
        timed only when it is an objective: otherwise the front's files are timed after the
        search (5 ms of a 1.2 s LeNet-300-100 trial saved on the rest)."""
        if "latency" not in self.ctx.config.objectives:
            return {}
        return measure_latency(
            materialize(student), self.ctx.data.input_shape, self.ctx.data.val_x.device,
            warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS,
        )  # fmt: skip

    def _values(
        self, accuracy: float, size_bytes: int, latency: dict[int, Latency]
    ) -> tuple[float, ...]:
        """The objectives in the study's order: maximize accuracy, minimize bytes (and ms)."""
        values = {"accuracy": accuracy, "size": float(size_bytes)}
        if latency:
            values["latency"] = latency[1].median_ms
        return tuple(values[name] for name in self.ctx.config.objectives)

    def _values_at_stop(
        self, student: torch.nn.Module, plan: CompressionPlan, curve: list[float | None]
    ) -> list[float]:
        """The objectives of a stopped trial: the accuracy that stopped it, its file's size."""
        accuracy = next(a for a in reversed(curve) if a is not None)
        with parametrize.cached():
            size = len(pack(student, plan, self.ctx.model_spec))
        return list(self._values(accuracy, size, self._latency(student)))

    def _hopeless_below(self) -> float:
        return self.ctx.baseline.val_accuracy - self.ctx.config.early_stop_drop
