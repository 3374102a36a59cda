"""The ``rl-plasticity`` command (also ``python -m rl_plasticity``).

Subcommands register themselves in `COMMANDS`: each adds its arguments to a subparser and returns an
exit code. User errors (bad config, missing file, unknown env id, existing run directory) print one
message on stderr naming the problem and the fix, and exit with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import warnings
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
    from rl_plasticity.experiment.config import Override, load_config
    from rl_plasticity.experiment.environment import backend_name
    from rl_plasticity.experiment.resume import move_aside
    from rl_plasticity.experiment.run_lock import busy_message, holder
    from rl_plasticity.experiment.runner import Trainer, TrainingDiverged

    overrides: list[Override] = list(args.overrides)
    if args.seed is not None:
        overrides.append((f"--seed {args.seed}", f"run.seed={args.seed}"))
    if args.total_steps is not None:
        overrides.append((f"--total-steps {args.total_steps}", f"run.total_steps={args.total_steps}"))
    config = load_config(args.config, overrides)
    if args.run_name is not None:
        _check_run_name(args.run_name)
    run_dir = Path(args.logdir) / (args.run_name or run_name(Path(args.config).stem, config.run.seed))
    _check_run_dir(run_dir)
    if args.fresh and run_dir.exists():
        pid = holder(run_dir)
        if pid is not None:
            raise UserError(f"--fresh: {busy_message(run_dir, pid)}")
        print(f"--fresh: moved the previous run to {move_aside(run_dir)}", file=sys.stderr)

    trainer = Trainer(config, run_dir)
    if trainer.config_changes:
        print(f"after the divergence, changed: {'; '.join(trainer.config_changes)} (recorded in "
              f"{RunDirectory(run_dir).config_changes_file})", file=sys.stderr)
    if trainer.finished:
        trainer.close()
        trained, asked = trainer.trained_length or trainer.agent.global_step, config.run.total_steps
        if trained > asked:
            raise UserError(
                f"{run_dir} was trained to run.total_steps {trained:,}, more than the {asked:,} asked; its "
                f"record stands for the longer run and is kept: pass --fresh to train {asked:,} steps "
                f"from the start (the old run is moved aside), or choose another --run-name")
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
    from rl_plasticity.experiment.run_lock import busy_message, holder

    _check_utf8(run_dir, "--logdir / --run-name")
    if run_dir.is_dir() and (pid := holder(run_dir)) is not None:
        raise UserError(busy_message(run_dir, pid))
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{str(run_dir)!r} is a file, not a run directory; choose another --run-name or "
                        f"--logdir")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if not RunDirectory(run_dir).holds_a_run():
        raise UserError(f"{str(run_dir)!r} exists and is not a run directory (no config.yaml, checkpoints, "
                        f"progress.json or TensorBoard events), so it is left alone; choose another "
                        f"--run-name or --logdir")


def _check_utf8(path: Path, flags: str) -> None:
    """TensorBoard writes and reads only UTF-8 paths; a name in another encoding would crash it."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"the path {os.fsdecode(path)!r} is not valid UTF-8, which TensorBoard cannot "
                        f"write to or read; choose a {flags} in UTF-8") from None


def _check_run_name(name: str) -> None:
    """A run name is a relative path below --logdir."""
    if not name.strip() or Path(name).is_absolute() or ".." in Path(name).parts:
        raise UserError(f"--run-name {name!r} must be a relative path below --logdir, e.g. "
                        f"my_config/seed0")
    too_long = [part for part in Path(name).parts if len(os.fsencode(part)) > 255]
    if too_long:
        raise UserError(f"--run-name has a folder name of {len(os.fsencode(too_long[0])):,} bytes, over the "
                        f"file system's 255; choose a shorter --run-name")


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
    parser.add_argument("--preset", help="preset to resolve under (as --set preset=NAME; overrides the "
                        "file's), or whose defaults the key list shows (default dohare)")


def run_config(args: argparse.Namespace) -> int:
    from rl_plasticity.experiment.config import (
        PRESETS,
        ConfigError,
        Override,
        config_to_yaml,
        describe_keys,
        load_config,
    )

    preset = args.preset or "dohare"
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r} is unknown; choose one of: {', '.join(PRESETS)}")
    if args.config is not None or args.overrides:
        overrides: list[Override] = [(f"--preset {preset}", f"preset={preset}")] if args.preset else []
        print(config_to_yaml(load_config(args.config, [*overrides, *args.overrides])), end="")
        return 0
    print(f"config keys (defaults under preset {preset}):")
    for key, type_name, default, doc in describe_keys(preset):
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

    if args.backend != "ray":
        for flag, value in (("--ray-address", args.ray_address), ("--storage", args.storage)):
            if value is not None:
                raise UserError(f"{flag} is for the Ray backend: add --backend ray, or drop {flag}")
    _check_utf8(Path(args.logdir), "--logdir")
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

    _check_utf8(Path(args.logdir), "log directory")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out!r} is a file, not a directory; pass a directory for report.png, "
                        f"report.md and summary.csv")
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
    _readable_output()
    args = build_parser().parse_args(argv)
    previous_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning(args.command)
    try:
        return _run(args)
    finally:
        warnings.formatwarning = previous_format


#: the heavy modules each command needs (torch, MuJoCo, matplotlib), loaded before it runs
_MODULES = {"train": "rl_plasticity.experiment.runner", "compare": "rl_plasticity.experiment.compare",
            "report": "rl_plasticity.experiment.report", "config": "rl_plasticity.experiment.config"}


def _load_modules(command: str) -> None:
    """Imports what ``command`` needs with Ctrl-C held back until the imports are done: an import cut
    short leaves a half-built module behind (numpy without its functions), which fails later with a
    confusing error instead of stopping."""
    requested: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: requested.append(number))
    try:
        importlib.import_module("rl_plasticity.experiment.checkpoint")
        importlib.import_module("rl_plasticity.experiment.runs")
        importlib.import_module(_MODULES.get(command, "rl_plasticity.experiment.config"))
    finally:
        signal.signal(signal.SIGINT, previous)
    if requested:
        raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    try:
        _load_modules(args.command)
        from rl_plasticity.experiment.checkpoint import CheckpointError
        from rl_plasticity.experiment.compare import CompareError
        from rl_plasticity.experiment.config import ConfigError
        from rl_plasticity.experiment.run_lock import RunDirectoryBusy
        from rl_plasticity.experiment.runs import RunsError

        user_errors = (ConfigError, UserError, CheckpointError, CompareError, RunsError, RunDirectoryBusy)
        try:
            return args.handler(args)
        except user_errors as error:
            print(f"rl-plasticity {args.command}: error: {error}", file=sys.stderr)
            return USER_ERROR
    except BrokenPipeError:
        # The reader went away (`rl-plasticity config | head`): not an error; silence the final flush.
        # (Before `except OSError`: a broken pipe is an OSError too.)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        # Ctrl-C before training began (loading torch, building envs, loading a checkpoint): nothing
        # was changed.
        print(f"\nrl-plasticity {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except OSError as error:
        print(f"rl-plasticity {args.command}: error: {os_error_message(error)}", file=sys.stderr)
        return USER_ERROR


def _readable_output() -> None:
    """A path that is not valid UTF-8 (kept by Python as surrogates) prints escaped instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def _one_line_warning(command: str) -> Callable[..., str]:
    """Warnings as one line in our words: ``rl-plasticity train: warning: ...`` (no file, line or
    source line: they name our code, not the user's input)."""
    def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                       line: str | None = None) -> str:
        return f"rl-plasticity {command}: warning: {' '.join(str(message).split())}\n"

    return format_warning


_WRITE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


def os_error_message(error: OSError) -> str:
    """One line naming the path and what is wrong with it, and the fix, for any OSError."""
    where = os.fsdecode(error.filename) if error.filename else "the output directory"
    if error.errno == errno.ENOSPC:
        return (f"no space left on the device writing {where}; free some space or point --logdir at "
                f"another disk (checkpoints already written are intact)")
    if error.errno == errno.ELOOP:
        return f"{where} is a symbolic link loop; point the path at a real directory or file"
    if error.errno == errno.ENAMETOOLONG:
        return f"the path {where} is too long for the file system; choose a shorter --logdir / --run-name"
    if error.errno == errno.ENOENT:
        return f"{where} does not exist; check the path"
    if error.errno in (errno.EEXIST, errno.ENOTDIR) and error.filename:
        from rl_plasticity.experiment.files import path_problem

        blocking = next((p for p in (Path(where), *Path(where).parents) if p.exists() or p.is_symlink()),
                        Path(where))
        problem = path_problem(blocking, "directory")
        if problem is not None:
            return f"cannot write {where}: {blocking} {problem}; choose a writable --logdir / --out"
    if error.errno in _WRITE_ERRORS:
        return (f"cannot write {where} ({error.strerror}); choose a writable --logdir / --out, or fix the "
                f"permissions (nothing already written was changed)")
    return (f"cannot use {where} ({error.strerror or error}); check the path and the disk (nothing already "
            f"written was changed)")


if __name__ == "__main__":
    sys.exit(main())
