"""The ``autocompress`` command. ``main`` returns the exit status: 0 done, 2 bad input, 1 a
search that could not produce a result (no trial completed)."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from autocompress.config import build_config
from autocompress.errors import AutocompressError, ConfigError


def _search_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="run (or resume) a compression search",
        description="Search per-layer bits, prune ratios and distillation settings jointly. "
        "Command-line values override the --config file; the same command again resumes the "
        "study.",
    )
    p.add_argument("--config", help="experiment YAML file, or a built-in name (e.g. lenet5_mnist)")
    p.add_argument(
        "--model",
        help="mlp, lenet300, lenet5, path/to/file.py:factory or package.module:factory "
        "(default mlp)",
    )
    p.add_argument(
        "--checkpoint", help="state_dict of the trained model (else a baseline is trained)"
    )
    p.add_argument(
        "--data", help="digits, mnist:DIR (IDX files), or path/to/file.py:loader (default digits)"
    )
    p.add_argument(
        "--space",
        help="search-space YAML file, or a built-in name: default, quantize_only, prune_only",
    )
    p.add_argument(
        "--trials",
        type=int,
        help="TOTAL complete or pruned trials wanted in the study (default 30); a resume "
        "runs only the missing ones, and failed trials do not count",
    )
    p.add_argument("--timeout", help="stop starting trials after this long: seconds or 8h, 30m")
    p.add_argument("--device", help="auto (CUDA when available), cpu, cuda, cuda:K")
    p.add_argument(
        "--no-cuda-graphs",
        dest="cuda_graphs",
        action="store_false",
        default=None,
        help="on CUDA, fine-tune eagerly instead of replaying a captured step per batch",
    )
    p.add_argument("--seed", type=int, help="seed for the sampler, training and splits of work")
    p.add_argument("--out", help="output directory (default ./autocompress-runs/<study-name>)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///<out>/optuna.db)")
    p.add_argument("--study-name", help="study name (default <model>-<data>-<space>)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default sqlite:///<out>/mlflow.db)")
    p.add_argument("--sampler", help="tpe (default), nsga2, gp, random")
    p.add_argument(
        "--warm-start",
        action="append",
        metavar="RECIPE",
        help="a recipe file (a space fixing every value) run as one of a new study's first "
        "trials; repeatable",
    )
    p.add_argument("--workers", type=int, help="local worker processes on the study (default 1)")
    p.add_argument(
        "--refine-epochs",
        type=int,
        metavar="EPOCHS",
        help="every 5th trial fine-tunes a front member again for EPOCHS (default 0: never)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _study_parser(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """A command that reads an existing study: --study, and where to find it."""
    p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    p.add_argument("--study-name", "--study", dest="study_name", required=True)
    p.add_argument(
        "--out", help="the search's output directory (default ./autocompress-runs/<study>)"
    )
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///<out>/optuna.db)")
    return p


def _review_parsers(sub: argparse._SubParsersAction) -> None:
    _study_parser(sub, "pareto", "print the Pareto front of an existing study")
    report = _study_parser(sub, "report", "write a self-contained HTML report of a study")
    report.add_argument("-o", "--output", help="HTML file (default <out>/report.html)")
    choose = _study_parser(sub, "choose", "pick one front member by a rule")
    choose.add_argument(
        "--rule",
        required=True,
        help="'smallest within 0.5' (points of accuracy), 'best ratio within 1', "
        "'most accurate below 50KB'",
    )
    export = _study_parser(sub, "export", "write compressed files (.acz) of a study's trials")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="one trial: -o is the file")
    which.add_argument("--pareto", action="store_true", help="every front member: -o is a folder")
    export.add_argument("-o", "--output", required=True)
    register = _study_parser(sub, "register", "register a trial's file in MLflow's model registry")
    pick = register.add_mutually_exclusive_group(required=True)
    pick.add_argument("--trial", type=int)
    pick.add_argument("--rule", help="as for 'choose', e.g. 'smallest within 0.5'")
    register.add_argument("--name", help="registered model name (default: the study's name)")
    ui = _study_parser(sub, "ui", "print (or run) the command that opens the MLflow UI")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--start", action="store_true", help="start the UI instead of printing")


def _file_parsers(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="load a compressed file and measure it",
        description="Accuracy (validation and test), size, compression ratio and latency of a "
        "compressed file, from the file alone.",
    )
    evaluate.add_argument("file")
    evaluate.add_argument("--data", required=True, help="as for search: digits, mnist:DIR, ...")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:K")
    inspect = sub.add_parser("inspect", help="print a compressed file's per-layer table")
    inspect.add_argument("file")


def _file(args: argparse.Namespace) -> int:
    from autocompress.artifact import ArtifactError, inspect

    path = Path(args.file)
    if not path.is_file():
        raise ConfigError("file", f"'{path}' does not exist")
    data = path.read_bytes()
    try:
        if args.command == "inspect":
            # packed: the blobs bit-packed (the size formula's fields); written: after the
            # file's per-layer entropy coding, before LZMA2 over the whole
            print(
                f"{'layer':<24} {'shape':<18} {'bits':>4} {'kept':>6} {'encoding':<8} "
                f"{'packed':>9} {'written':>9}"
            )
            for layer in inspect(data):
                shape = "x".join(map(str, layer.shape))
                print(
                    f"{layer.name:<24} {shape:<18} {layer.bits:>4} {layer.kept:>6.1%} "
                    f"{layer.encoding:<8} {layer.encoded_bytes:>9,} {layer.written_bytes:>9,}"
                )
            return 0
        from autocompress.export import evaluate
        from autocompress.study import resolve_device

        result = evaluate(data, args.data, resolve_device(args.device))
    except ArtifactError as exc:
        raise ConfigError("file", str(exc)) from None
    print(f"val accuracy   {result.val_accuracy:.2%}")
    print(f"test accuracy  {result.test_accuracy:.2%}")
    print(f"size           {result.size_bytes:,} bytes ({result.ratio:.1f}x smaller than float32)")
    for batch, lat in result.latency.items():
        print(f"latency b={batch:<3} {lat.median_ms:.3f} ms (median of {lat.repeats})")
    return 0


def _worker_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="join an existing study and run its trials (from any machine)",
        description="Join a study created by 'autocompress search' and run trials until its "
        "total is reached. The experiment config and search space are read from the study; "
        "the data must be at the same path on this machine.",
    )
    p.add_argument("--storage", required=True, help="the study's Optuna storage URL")
    p.add_argument("--study-name", "--study", dest="study_name", required=True)
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default: the study's)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:K (default: the study's)")
    p.add_argument("--worker-index", type=int, default=0, help="seeds and GPU choice (0)")
    p.add_argument("--threads", type=int, help="torch threads for this worker")


def _worker(args: argparse.Namespace) -> int:
    from autocompress.signals import Interrupted
    from autocompress.study import run_worker

    try:
        run_worker(
            args.storage,
            args.study_name,
            mlflow_uri=args.mlflow_uri,
            device=args.device,
            worker=args.worker_index,
            threads=args.threads,
        )
    except Interrupted as exc:
        return exc.exit_status
    return 0


def _search(args: argparse.Namespace) -> int:
    from autocompress.study import run_search

    overrides = {
        key: getattr(args, key)
        for key in (
            "model",
            "checkpoint",
            "data",
            "space",
            "trials",
            "timeout",
            "device",
            "cuda_graphs",
            "seed",
            "out",
            "storage",
            "study_name",
            "mlflow_uri",
            "sampler",
            "warm_start",
        )
    }
    if args.refine_epochs is not None:
        overrides["refine"] = {"epochs": args.refine_epochs}
    config = build_config(args.config, overrides)
    command = shlex.join(["autocompress", *sys.argv[1:]])
    result = run_search(config, progress=not args.no_progress, command=command)
    from autocompress.pareto import format_table

    print(f"\nPareto front of study '{result.study_name}' ({len(result.front)} models):")
    print(format_table(result.front, result.baseline))
    if result.trials_run:
        per_trial = result.seconds / result.trials_run
        total = result.trial_seconds
        outside = 1 - result.finetune_seconds / total if total else 0.0
        validating = result.validate_seconds / total if total else 0.0
        print(
            f"\n{result.trials_run} trials in {result.seconds:.1f} s ({per_trial:.2f} s/trial, "
            f"{outside:.1%} outside fine-tuning, {validating:.1%} of it validating)"
        )
    print(f"results in {result.out_dir}: report.html, pareto.csv/.json/.png/.html")
    print(f"MLflow UI: mlflow ui --backend-store-uri {config.mlflow_tracking_uri}")
    if result.interrupted is not None:
        message = f"autocompress: {result.interrupted}; run the same command to resume"
        print(message, file=sys.stderr)
        return result.interrupted.exit_status
    return 0


def _review(args: argparse.Namespace) -> int:
    from autocompress import report
    from autocompress.pareto import format_table, front
    from autocompress.study import existing_study, experiment_url

    study, config = existing_study(args.study_name, args.out, args.storage)
    if args.command == "pareto":
        print(format_table(front(study), study.user_attrs["baseline"]))
    elif args.command == "report":
        path = Path(args.output or config.out_dir / "report.html")
        path.write_text(report.report_html(study))
        print(f"wrote {path}")
    elif args.command == "export":
        from autocompress.export import trial_file

        numbers = [p.trial for p in front(study)] if args.pareto else [args.trial]
        target = Path(args.output)
        if args.pareto:
            target.mkdir(parents=True, exist_ok=True)
        for number in numbers:
            path = target / f"trial-{number:04d}.acz" if args.pareto else target
            data = trial_file(study, config, number)
            path.write_bytes(data)
            print(f"trial {number}: {path} ({len(data):,} bytes)")
    elif args.command == "register":
        from autocompress.export import register

        number = args.trial if args.rule is None else report.choose(study, args.rule)
        name, version = register(study, config, number, args.name or study.study_name)
        print(f"registered trial {number} as '{name}' version {version}")
    elif args.command == "choose":
        number = report.choose(study, args.rule)
        chosen = [p for p in front(study) if p.trial == number]
        print(format_table(chosen, study.user_attrs["baseline"]))
    else:
        command = [
            sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
            config.mlflow_tracking_uri, "--host", "127.0.0.1", "--port", str(args.port),
        ]  # fmt: skip
        if args.start:
            return subprocess.call(command)
        print(" ".join(command[2:]))
        print(f"then open {experiment_url(config, study, f'http://127.0.0.1:{args.port}')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="autocompress",
        description="Automated model compression: a joint Optuna search over per-layer "
        "quantization, pruning and distillation, logged to MLflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    _worker_parser(sub)
    _review_parsers(sub)
    _file_parsers(sub)
    args = parser.parse_args(argv)
    commands = {"search": _search, "worker": _worker, "evaluate": _file, "inspect": _file}
    try:
        return commands.get(args.command, _review)(args)
    except AutocompressError as exc:
        print(f"autocompress: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
