"""The ``rl-plasticity`` command (also ``python -m rl_plasticity``).

Subcommands register themselves in `COMMANDS`: each adds its arguments to a subparser and returns an
exit code. User errors (bad config, missing file, unknown env id, existing run directory) print one
message on stderr naming the problem and the fix, and exit with code 2.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rl_plasticity.experiment.run_directory import RunDirectory, run_name

TRAINING_FAILED = 1
USER_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
TERMINATED = 143  # 128 + SIGTERM


class UserError(Exception):
    """A mistake in the command line; printed without a traceback."""


# ---------------------------------------------------------------------- train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config, e.g. configs/quickstart/cbp.yaml")
    parser.add_argument("--seed", type=_non_negative_int,
                        help="run.seed (also names the default run directory)")
    parser.add_argument("--total-steps", type=_positive_int, help="run.total_steps: env steps to train for")
    parser.add_argument("--logdir", default="runs", help="parent directory of the run (default: runs)")
    parser.add_argument("--run-name", help="run directory under LOGDIR (default: <config stem>/seed<seed>, "
                        "the layout `rl-plasticity report` groups by)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optimizer.lr=3e-4 (repeatable)")
    parser.add_argument("--fresh", action="store_true", help="start over even if the run directory holds "
                        "a checkpoint; the old directory is renamed to <name>.old-<time>, never deleted")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def run_train(args: argparse.Namespace) -> int:
    from rl_plasticity.experiment.config import load_config
    from rl_plasticity.experiment.environment import backend_name
    from rl_plasticity.experiment.resume import move_aside
    from rl_plasticity.experiment.runner import Trainer, TrainingDiverged

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    if args.total_steps is not None:
        overrides.append(f"run.total_steps={args.total_steps}")
    config = load_config(args.config, overrides)
    run_dir = Path(args.logdir) / (args.run_name or run_name(Path(args.config).stem, config.run.seed))
    _check_run_dir(run_dir)
    if args.fresh and run_dir.exists():
        print(f"--fresh: moved the previous run to {move_aside(run_dir)}", file=sys.stderr)

    trainer = Trainer(config, run_dir)
    if trainer.config_changes:
        print(f"after the divergence, changed: {'; '.join(trainer.config_changes)} (recorded in "
              f"{RunDirectory(run_dir).config_changes_file})", file=sys.stderr)
    if trainer.agent.global_step >= config.run.total_steps:
        trainer.close()
        print(f"{run_dir} already finished ({trainer.agent.global_step:,} of {config.run.total_steps:,} "
              f"steps); pass --total-steps to extend it or --fresh to start over", file=sys.stderr)
        return 0
    start = f"resuming from {trainer.resumed_from} at step {trainer.agent.global_step:,}" \
        if trainer.resumed_from else "training"
    print(f"{start}: {args.config} (preset {config.preset}, cbp {'on' if config.cbp.enabled else 'off'}) on "
          f"{config.env.id} x{config.env.num_envs} ({backend_name(trainer.envs)}) for "
          f"{config.run.total_steps:,} steps -> {run_dir}", file=sys.stderr)
    with trainer:
        try:
            summary = trainer.train(progress=not args.quiet)
        except KeyboardInterrupt:
            saved = trainer.checkpoints[-1] if trainer.checkpoints else "none yet"
            print(f"\ninterrupted; the last checkpoint ({saved}) is kept: run the same command to resume",
                  file=sys.stderr)
            return INTERRUPTED
        except TrainingDiverged as error:
            print(f"rl-plasticity train: {error}", file=sys.stderr)
            return TRAINING_FAILED
    if summary.stopped_by is not None:
        print(f"stopped by {summary.stopped_by} at step {summary.global_step:,}; checkpoint "
              f"{summary.checkpoints[-1]}: run the same command to resume", file=sys.stderr)
        return INTERRUPTED if summary.stopped_by == "SIGINT" else TERMINATED
    print(f"done: {summary.global_step:,} steps in {summary.seconds:.0f} s, {summary.episodes} episodes, "
          f"mean return of the last {min(summary.episodes, 20)}: {summary.recent_return:.1f}")
    print(f"run directory: {run_dir} (config.yaml, checkpoints/, TensorBoard events)")
    print(f"watch it: tensorboard --logdir {args.logdir}")
    return 0


def _check_run_dir(run_dir: Path) -> None:
    """A non-empty directory that is not a run is someone else's: never train into it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{str(run_dir)!r} is a file, not a run directory; choose another --run-name or "
                        f"--logdir")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if not RunDirectory(run_dir).holds_a_run():
        raise UserError(f"{str(run_dir)!r} exists and is not a run directory (no config.yaml, checkpoints, "
                        f"progress.json or TensorBoard events), so it is left alone; choose another "
                        f"--run-name or --logdir")


def _whole_number(text: str, minimum: int) -> int:
    """A whole number >= ``minimum`` (2e6 and 2000000 alike); inf, nan and fractions are refused."""
    try:
        number = float(text)
        value = int(number)
    except (ValueError, OverflowError):
        value, number = None, None
    if value is None or value != number or value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum} such as 100000, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


# ---------------------------------------------------------------------- config
def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="print this config resolved (preset, file, overrides); "
                        "without it, list every key with its default and meaning")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable)")
    parser.add_argument("--preset", default="dohare", help="preset whose defaults the key list shows")


def run_config(args: argparse.Namespace) -> int:
    from rl_plasticity.experiment.config import (
        PRESETS,
        ConfigError,
        config_to_yaml,
        describe_keys,
        load_config,
    )

    if args.config is not None or args.overrides:
        print(config_to_yaml(load_config(args.config, args.overrides)), end="")
        return 0
    if args.preset not in PRESETS:
        raise ConfigError(f"--preset {args.preset!r} is unknown; choose one of: {', '.join(PRESETS)}")
    print(f"config keys (defaults under preset {args.preset}):")
    for key, type_name, default, doc in describe_keys(args.preset):
        print(f"  {key} ({type_name}, default {default!r})\n      {doc}")
    return 0


# ---------------------------------------------------------------------- compare
def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML configs to compare (each is "
                        "stored under LOGDIR/<file stem>/seed<k>/)")
    parser.add_argument("--seeds", type=_positive_int, default=3, help="seeds per config (default 3): "
                        "FIRST..FIRST+N-1")
    parser.add_argument("--first-seed", type=_non_negative_int, default=0, help="the first seed (default 0); "
                        "e.g. --first-seed 10 --seeds 5 runs fresh seeds 10-14 to confirm a result")
    parser.add_argument("--workers", type=_positive_int, help="runs at once on this machine (default: one "
                        "per core); with --backend ray, trials at once")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: a process pool here (default); ray: Ray Tune trials on a Ray cluster")
    parser.add_argument("--ray-address", help="address of a running Ray cluster (from `ray start --head`); "
                        "default: start a local Ray instance")
    parser.add_argument("--storage", help="where Ray Tune keeps its trial records (default "
                        "LOGDIR/ray_results)")
    parser.add_argument("--logdir", default="runs/compare", help="parent of every run (default runs/compare)")
    parser.add_argument("--total-steps", type=_positive_int, help="run.total_steps for every run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in every run (repeatable)")
    parser.add_argument("--fresh", action="store_true", help="train every run again: existing run "
                        "directories are renamed to <name>.old-<time>, never deleted")


def run_compare(args: argparse.Namespace) -> int:
    from rl_plasticity.experiment.compare import (
        check_existing_runs,
        move_existing_runs_aside,
        run_matrix,
        validate_configs,
        write_manifest,
    )

    specs = run_matrix(args.configs, args.seeds, args.logdir, args.total_steps, args.overrides,
                       first_seed=args.first_seed)
    validate_configs(specs)  # a bad key fails here, once, not in every run
    if args.fresh:
        move_existing_runs_aside(specs)
    check_existing_runs(specs)
    write_manifest(specs, Path(args.logdir))
    print(f"comparing {len({s.config_name for s in specs})} configs x {args.seeds} seeds ({len(specs)} runs) "
          f"on the {args.backend} backend -> {args.logdir}", file=sys.stderr)
    if args.backend == "ray":
        from rl_plasticity.experiment.compare_ray import run_ray

        outcome = run_ray(specs, address=args.ray_address, storage_path=args.storage,
                          max_concurrent=args.workers)
    else:
        from rl_plasticity.experiment.compare import run_local

        outcome = run_local(specs, workers=args.workers)
    counts = ", ".join(f"{len(dirs)} {name}" for name, dirs in outcome.items() if dirs)
    print(f"compare: {counts}", file=sys.stderr)
    for run_dir in outcome.get("failed", []):
        print(f"  failed: {run_dir} (its output: {Path(run_dir) / 'train.log'})", file=sys.stderr)
    if outcome.get("interrupted"):
        return INTERRUPTED
    if outcome.get("failed"):
        return TRAINING_FAILED
    print(f"next: rl-plasticity report {args.logdir}   and   tensorboard --logdir {args.logdir}",
          file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- report
def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logdir", help="directory holding the runs (<config>/seed<k>/ TensorBoard dirs)")
    parser.add_argument("--out", help="where to write report.png, report.md and summary.csv (default LOGDIR)")


def run_report(args: argparse.Namespace) -> int:
    from rl_plasticity.experiment.report import make_report

    def warn(message: str) -> None:
        print(f"rl-plasticity report: warning: {message}", file=sys.stderr)

    paths = make_report(Path(args.logdir), Path(args.out) if args.out else None, warn)
    for kind, path in paths.items():
        print(f"{kind:9s} {path}")
    return 0


# ---------------------------------------------------------------------- entry point
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: list[Command] = [
    ("train", add_train_arguments, run_train),
    ("config", add_config_arguments, run_config),
    ("compare", add_compare_arguments, run_compare),
    ("report", add_report_arguments, run_report),
]
_HELP = {
    "train": "train PPO or PPO+CBP from a YAML config, logging to TensorBoard",
    "config": "show a resolved config, or list every config key",
    "compare": "train every config x seed in parallel (locally or on Ray) into one log directory",
    "report": "plot and tabulate the runs of a log directory (report.png, report.md, summary.csv)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rl-plasticity",
        description="Train PPO and PPO+continual backprop on non-stationary MuJoCo tasks and watch their "
                    "plasticity in TensorBoard.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add_arguments, handler in COMMANDS:
        sub = subcommands.add_parser(name, help=_HELP.get(name), description=_HELP.get(name))
        add_arguments(sub)
        sub.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rl_plasticity.experiment.checkpoint import CheckpointError
    from rl_plasticity.experiment.compare import CompareError
    from rl_plasticity.experiment.config import ConfigError
    from rl_plasticity.experiment.runs import RunsError

    try:
        return args.handler(args)
    except (ConfigError, UserError, FileNotFoundError, CheckpointError, CompareError, RunsError) as error:
        print(f"rl-plasticity {args.command}: error: {error}", file=sys.stderr)
        return USER_ERROR
    except BrokenPipeError:
        # The reader went away (`rl-plasticity config | head`): not an error; silence the final flush.
        # (Before `except OSError`: a broken pipe is an OSError too.)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        # Ctrl-C before training began (building envs, loading a checkpoint): nothing was changed.
        print(f"\nrl-plasticity {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except OSError as error:
        message = _unwritable_message(error)
        if message is None:
            raise
        print(f"rl-plasticity {args.command}: error: {message}", file=sys.stderr)
        return USER_ERROR


_WRITE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


def _unwritable_message(error: OSError) -> str | None:
    """One line naming the path that cannot be written and the fix, for the OSErrors a user causes."""
    where = os.fsdecode(error.filename) if error.filename else "the output directory"
    if error.errno == errno.ENOSPC:
        return (f"no space left on the device writing {where}; free some space or point --logdir at "
                f"another disk (checkpoints already written are intact)")
    if error.errno in _WRITE_ERRORS:
        return (f"cannot write {where} ({error.strerror}); choose a writable --logdir / --out, or fix the "
                f"permissions (nothing already written was changed)")
    return None


if __name__ == "__main__":
    sys.exit(main())
