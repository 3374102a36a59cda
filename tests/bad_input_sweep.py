"""A sweep of bad inputs and faults, end to end: each case sets up files, runs the CLI (in this process,
or in a child process where a signal or the real streams matter) or an SB3 helper, and is judged.

- **clear**: the exit code asked for (2 for a bad input); on stderr one error line, in our words, naming
  what the case names (the key, the path, the flag) and no traceback; every warning one line of ours;
  a refused command leaves no new file or folder behind.
- **data lost**: a file that existed before the case is gone or changed (other than those the case
  allows to change).
- **unclear**: anything else.

Run it: ``python tests/bad_input_sweep.py`` (prints each case that is not clear and the counts;
``-v`` prints every case). ``tests/test_bad_input_sweep.py`` runs it as a test.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = """\
preset: dohare
env: {id: SlipperyHopper-v5, change_every: 600}
ppo: {hidden_sizes: [16, 16], rollout_steps: 128, minibatch_size: 64, epochs: 1}
log: {probe_every: 0, histogram_every: 0}
run: {total_steps: 256, checkpoint_every: 128}
"""


@dataclass
class Case:
    """One bad input. ``argv`` may hold ``{tmp}`` (the case's folder) and ``{run}`` (a trained run's
    folder, copied fresh for the case); ``setup(tmp)`` writes what the case needs."""

    name: str
    argv: list[str] | Callable[[Path], None]  # CLI words, or a Python call that must raise clearly
    fragments: tuple[str, ...] = ()
    code: int = 2
    setup: Callable[[Path], None] | None = None
    process: bool = False  # run as `python -m rl_plasticity` in a child (signals, real streams)
    interrupt_after: float | None = None  # seconds before SIGINT, for process cases
    may_change: tuple[str, ...] = ()  # files (relative to tmp) the case may rewrite
    needs_run: bool = False
    stderr_fragments: tuple[str, ...] = ()  # for cases that succeed: what stderr must say


@dataclass
class Outcome:
    case: Case
    verdict: str  # clear, unclear, data lost
    why: str
    stderr: str


# ---------------------------------------------------------------------- helpers for setups
def write(relative: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    return setup


def config(text: str) -> Callable[[Path], None]:
    return write("c.yaml", text)


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for one in setups:
            one(tmp)
    return setup


def symlink_loop(relative: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(tmp / relative, tmp / relative)
    return setup


def folder(relative: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / relative).mkdir(parents=True, exist_ok=True)


def synthetic_run(relative: str, returns: list[float], settings: str = SMALL, status: str = "finished",
                  change: int = 600, total: int = 2400) -> Callable[[Path], None]:
    """A run directory as the trainer leaves it: events with returns and a friction alternating every
    ``change`` steps, its config.yaml and progress.json."""
    def setup(tmp: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        path = tmp / relative
        path.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(path))
        for i, step in enumerate(range(100, total + 1, 100)):
            writer.add_scalar("charts/episodic_return", returns[i % len(returns)], step)
            writer.add_scalar("env/friction", 2.0 if ((step - 1) // change) % 2 == 0 else 0.2, step)
        writer.close()
        (path / "config.yaml").write_text(settings)
        (path / "progress.json").write_text(json.dumps({"status": status, "step": total,
                                                        "total_steps": 2400}))
    return setup


def held(relative: str) -> Callable[[Path], None]:
    """The run directory held by a live process (this one): a second `train` must be refused."""
    def setup(tmp: Path) -> None:
        from rl_plasticity.experiment.run_lock import RunLock

        (tmp / relative).mkdir(parents=True, exist_ok=True)
        _HELD.append(RunLock(tmp / relative).acquire())
    return setup


_HELD: list = []


def trained_run_setup(tmp: Path) -> None:
    """Copies the trained run (see `train_once`) to ``tmp/run`` and its config to ``tmp/c.yaml``."""
    shutil.copytree(_TRAINED, tmp / "run")
    (tmp / "c.yaml").write_text(SMALL)


_TRAINED = Path()


def train_once(where: Path) -> Path:
    """A finished 256-step run (checkpoints at 128 and 256) that resume cases copy."""
    from rl_plasticity.experiment.cli import main

    (where / "c.yaml").write_text(SMALL)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(where / "c.yaml"), "--logdir", str(where), "--run-name", "run",
                     "--quiet"]) == 0
    return where / "run"


def on_run(change: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda tmp: change(tmp / "run")


def remove(relative: str) -> Callable[[Path], None]:
    def change(tmp: Path) -> None:
        target = tmp / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return change


def sb3_case(kind: str) -> Callable[[Path], None]:
    """A Python call of the SB3 helpers that must raise one clear error."""
    def call(tmp: Path) -> None:
        from stable_baselines3 import PPO

        from agents.sb3 import attach, load_with_cbp, load_with_methods, save_with_methods

        model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, device="cpu")
        attach(model, "redo")
        save_with_methods(model, tmp / "model")
        sidecar = tmp / "model.methods.pt"
        if kind == "missing":
            sidecar.unlink()
        elif kind == "empty":
            sidecar.write_bytes(b"")
        elif kind == "corrupt":
            sidecar.write_bytes(os.urandom(300))
        elif kind == "wrong kind":
            import torch

            torch.save({"some": "dict"}, sidecar)
        elif kind == "another model":
            other = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, device="cpu", seed=1)
            attach(other, "redo")
            save_with_methods(other, tmp / "other")
            shutil.copy(tmp / "other.methods.pt", sidecar)
        elif kind == "cbp from methods":
            shutil.copy(sidecar, tmp / "model.cbp.pt")
            load_with_cbp(tmp / "model", device="cpu")
            return
        load_with_methods(tmp / "model", load_kwargs={"device": "cpu"})
    return call


# ---------------------------------------------------------------------- the cases
def cases() -> list[Case]:
    c, t = "{tmp}/c.yaml", "{tmp}"
    train = ["train", c, "--logdir", f"{t}/runs", "--quiet"]
    run = ["train", c, "--logdir", t, "--run-name", "run", "--quiet"]
    report = ["report"]
    compare = ["compare", c, "--seeds", "1", "--logdir", f"{t}/cmp"]
    good = config(SMALL)

    def cfg(extra: str) -> Callable[[Path], None]:
        return config(SMALL + extra)

    def env(extra: str) -> Callable[[Path], None]:
        return config(SMALL.replace("change_every: 600", f"change_every: 600, {extra}"))

    out: list[Case] = [
        # -- the config file itself
        Case("missing config file", train, ("c.yaml", "does not exist")),
        Case("config path is a directory", train, ("is a directory",), setup=folder("c.yaml")),
        Case("config path is a symlink loop", train, ("symbolic link loop",), setup=symlink_loop("c.yaml")),
        Case("empty config", train, ("is empty",), setup=config("")),
        Case("comment-only config", train, ("is empty",), setup=config("# nothing\n")),
        Case("unclosed bracket", train, ("not valid YAML", "line"), setup=config("env: {id: [\n")),
        Case("tab indentation", train, ("not valid YAML",), setup=config("env:\n\tid: Hopper-v5\n")),
        Case("top-level list", train, ("mapping of sections",), setup=config("- env\n- ppo\n")),
        Case("top-level scalar", train, ("mapping of sections",), setup=config("hello\n")),
        Case("duplicate section", train, ("duplicate key 'run'",), setup=cfg("run: {seed: 3}\n")),
        Case("duplicate key", train, ("duplicate key 'lr' at lines 7 and 8",),
             setup=cfg("optimizer:\n  lr: 0.001\n  lr: 0.002\n")),
        Case("two spellings of methods.redo", train, ("spelled two ways", "line"),
             setup=cfg("methods: {redo: {enabled: true}}\nmethods.redo: {tau: 0.1}\n")),
        Case("two spellings inside methods", train, ("spelled two ways",),
             setup=cfg("methods:\n  redo: {enabled: true}\n  redo.tau: 0.1\n")),
        Case("merge key works", ["config", c], code=0,
             setup=cfg("methods:\n  redo: &on {enabled: true}\n  shrink_perturb: {<<: *on}\n")),
        Case("unknown section", train, ("unknown section 'ennv'",), setup=cfg("ennv: {id: Hopper-v5}\n")),
        Case("unknown key with a typo", train, ("ppo.gama", "did you mean ppo.gamma"),
             setup=config(SMALL.replace("epochs: 1", "epochs: 1, gama: 0.9"))),
        Case("section that is not a mapping", train, ("section 'cbp' must be a mapping",),
             setup=cfg("cbp: 3\n")),
        Case("methods that is not a mapping", train, ("'methods' must be a mapping",),
             setup=cfg("methods: [redo]\n")),
        Case("unknown method", train, ("methods.redoo", "did you mean"),
             setup=cfg("methods: {redoo: {enabled: true}}\n")),
        Case("string for a number", train, ("ppo.gamma", "wrong type"),
             setup=config(SMALL.replace("epochs: 1", "epochs: 1, gamma: fast"))),
        Case("quoted bool", train, ("cbp.enabled", "true or false"), setup=cfg("cbp: {enabled: 'true'}\n")),
        Case("int where a list goes", train, ("ppo.hidden_sizes", "list"),
             setup=config(SMALL.replace("[16, 16]", "16"))),
        Case("empty list", train, ("ppo.hidden_sizes", "non-empty list"),
             setup=config(SMALL.replace("[16, 16]", "[]"))),
        Case("gamma out of range", train, ("ppo.gamma", "out of range"),
             setup=config(SMALL.replace("epochs: 1", "epochs: 1, gamma: 1.5"))),
        Case("negative total steps", train, ("run.total_steps", "out of range"),
             setup=config(SMALL.replace("total_steps: 256", "total_steps: -5"))),
        Case("infinite total steps", train, ("run.total_steps",),
             setup=config(SMALL.replace("total_steps: 256", "total_steps: .inf"))),
        Case("nan learning rate", train, ("optimizer.lr", "finite"), setup=cfg("optimizer: {lr: .nan}\n")),
        Case("unknown preset", train, ("preset", "choose one of"),
             setup=config(SMALL.replace("preset: dohare", "preset: sb3"))),
        Case("schedule typo", train, ("env.schedule", "did you mean cyclic"),
             setup=env("schedule: cyclc")),
        Case("minibatch does not divide", train, ("ppo.minibatch_size", "divide"),
             setup=config(SMALL.replace("minibatch_size: 64", "minibatch_size: 100"))),
        Case("async with batched", train, ("env.vectorization",),
             setup=env("vectorization: async")),
        Case("cycle values without cyclic", train, ("env.cycle_values", "cyclic"),
             setup=env("cycle_values: [1, 2]")),
        Case("cycle value friction 0", train, ("env.cycle_values", "friction"),
             setup=env("schedule: cyclic, cycle_values: [0, 1]")),
        Case("negative cycle value", train, ("env.cycle_values",),
             setup=env("schedule: cyclic, cycle_values: [-1, 1]")),
        Case("inverted friction range", train, ("env.friction_range", "inverted"),
             setup=env("friction_range: [2, 0.1]")),
        Case("friction range of 3", train, ("env.friction_range", "list of 2"),
             setup=env("friction_range: [1, 2, 3]")),
        Case("schedule in env.kwargs", train, ("env.kwargs", "env.schedule"),
             setup=env("kwargs: {schedule: cyclic}")),
        Case("unknown env id", train, ("env.id", "SlipperyHoper-v5", "did you mean"),
             setup=config(SMALL.replace("SlipperyHopper-v5", "SlipperyHoper-v5"))),
        Case("drift key on a plain env", train, ("does not drift", "env.change_every"),
             setup=config(SMALL.replace("SlipperyHopper-v5", "Hopper-v5"))),
        Case("CReLU with CBP", train, ("crelu",),
             setup=cfg("cbp: {enabled: true}\nmethods: {crelu: {enabled: true}}\n")),
        Case("not UTF-8 config", train, ("cannot be read",), setup=write("c.yaml", b"env: {id: \xff\xfe}\n")),
        Case("binary config", train, ("c.yaml",), setup=write("c.yaml", bytes(range(256)))),
        Case("seed too large", train, ("run.seed", "out of range"),
             setup=config(SMALL.replace("checkpoint_every: 128", "checkpoint_every: 128, seed: 5000000000"))),
        Case("zero env copies", train, ("env.num_envs",),
             setup=env("num_envs: 0")),
        Case("env id a number", train, ("env.id", "string"),
             setup=config(SMALL.replace("SlipperyHopper-v5", "5"))),
        Case("env kwargs a list", train, ("env.kwargs", "mapping"),
             setup=env("kwargs: [1]")),
        Case("anneal_lr as a number", train, ("optimizer.anneal_lr",),
             setup=cfg("optimizer: {anneal_lr: 1}\n")),
        # -- --set
        Case("--set without =", [*train, "--set", "ppo.gamma"], ("key=value",), setup=good),
        Case("--set with an empty key", [*train, "--set", "=3"], ("key=value",), setup=good),
        Case("--set unknown key", [*train, "--set", "ppo.gama=0.9"], ("--set ppo.gama=0.9", "ppo.gamma"),
             setup=good),
        Case("--set a section to a number", [*train, "--set", "ppo=3"], ("ppo", "mapping"), setup=good),
        Case("--set broken YAML value", [*train, "--set", "ppo.hidden_sizes=[1,"], ("ppo.hidden_sizes",),
             setup=good),
        Case("--set zero total steps", [*train, "--set", "run.total_steps=0"], ("run.total_steps",),
             setup=good),
        Case("--set a bool to maybe", [*train, "--set", "methods.redo.enabled=maybe"],
             ("methods.redo.enabled", "true or false"), setup=good),
        Case("--set unknown preset", [*train, "--set", "preset=foo"], ("--set preset=foo",), setup=good),
        Case("--set a CleanRL name", [*train, "--set", "learning_rate=1e-3"], ("optimizer.lr",), setup=good),
        Case("--set an unknown method section", [*train, "--set", "methods.foo.enabled=true"],
             ("methods.foo",), setup=good),
        # -- train's flags
        Case("negative --seed", [*train, "--seed", "-1"], ("--seed",), setup=good),
        Case("word for --seed", [*train, "--seed", "abc"], ("--seed", "whole number"), setup=good),
        Case("zero --total-steps", [*train, "--total-steps", "0"], ("--total-steps",), setup=good),
        Case("fractional --total-steps", [*train, "--total-steps", "1.5"], ("--total-steps",), setup=good),
        Case("infinite --total-steps", [*train, "--total-steps", "inf"], ("--total-steps",), setup=good),
        Case("huge --total-steps", [*train, "--total-steps", "1e15"], ("--total-steps", "run.total_steps"),
             setup=good),
        Case("--seed out of range names --seed", [*train, "--seed", "9999999999"], ("--seed 9999999999",),
             setup=good),
        Case("unknown flag", [*train, "--sed", "3"], ("unrecognized arguments",), setup=good),
        Case("no config argument", ["train"], ("config",)),
        Case("absolute --run-name", [*train, "--run-name", "/etc/x"], ("--run-name", "relative"), setup=good),
        Case("--run-name climbing out", [*train, "--run-name", "../x"], ("--run-name", "relative"),
             setup=good),
        Case("over-long --run-name", [*train, "--run-name", "x" * 300], ("--run-name", "255"), setup=good),
        Case("--logdir is a file", ["train", c, "--logdir", f"{t}/file", "--quiet"], ("file",),
             setup=both(good, write("file", "x"))),
        Case("--logdir is a symlink loop", ["train", c, "--logdir", f"{t}/loop", "--quiet"],
             ("symbolic link loop",), setup=both(good, symlink_loop("loop"))),
        Case("--logdir under /proc", ["train", c, "--logdir", "/proc/rl-plasticity-test", "--quiet"],
             ("/proc/rl-plasticity-test",), setup=good),
        Case("run directory is someone else's", [*train, "--run-name", "theirs"], ("not a run directory",),
             setup=both(good, write("runs/theirs/notes.txt", "mine"))),
        Case("run directory is a file", [*train, "--run-name", "afile"], ("is a file",),
             setup=both(good, write("runs/afile", "x"))),
        Case("run directory held by another process", [*train, "--run-name", "busy"],
             ("in use by process", "wait for it"), setup=both(good, held("runs/busy"))),
        Case("--fresh on a held run directory", [*train, "--run-name", "busy2", "--fresh"],
             ("in use by process", "busy2"),
             setup=both(good, held("runs/busy2"), write("runs/busy2/config.yaml", SMALL))),
        Case("a failed env build leaves nothing", [*train, "--set", "env.kwargs={frobnicate: 1}"],
             ("env",), setup=good),
        # -- config
        Case("config --preset unknown", ["config", "--preset", "sb3"], ("--preset", "choose one of")),
        Case("config --preset with --set acts", ["config", "--preset", "cleanrl", "--set", "run.seed=3"],
             code=0),
        Case("config of a missing file", ["config", f"{t}/none.yaml"], ("does not exist",)),
        # -- resume and checkpoints (a trained 256-step run copied to {tmp}/run)
        Case("resume with another learning rate", [*run, "--set", "optimizer.lr=3e-4"],
             ("different config", "optimizer.lr", "--fresh"), needs_run=True),
        Case("re-run a finished run shorter", [*run, "--total-steps", "128"],
             ("more than the 128 asked", "--fresh"), needs_run=True),
        Case("re-run a finished run as it was", run, code=0, needs_run=True,
             stderr_fragments=("already finished",)),
        Case("checkpoints folder deleted", run, ("deleted or moved", "--fresh"), needs_run=True,
             setup=on_run(remove("checkpoints"))),
        Case("every checkpoint truncated", run, ("no readable checkpoint", "--fresh"), needs_run=True,
             setup=on_run(lambda r: [p.write_bytes(p.read_bytes()[:100])
                                     for p in (r / "checkpoints").glob("step_*.pt")]),
             may_change=()),
        Case("folder named like a checkpoint", run, code=0, needs_run=True,
             setup=folder("run/checkpoints/step_999.pt"), stderr_fragments=("already finished",)),
        Case("config.yaml not YAML", run, ("config.yaml cannot be read", "--fresh"), needs_run=True,
             setup=on_run(lambda r: (r / "config.yaml").write_text("{{{"))),
        Case("config.yaml a list", run, ("does not hold a config", "--fresh"), needs_run=True,
             setup=on_run(lambda r: (r / "config.yaml").write_text("- 1\n"))),
        Case("resume on another env id", [*run, "--set", "env.id=SlipperyWalker2d-v5"],
             ("different config", "env.id"), needs_run=True),
        Case("resume --total-steps 1.5", [*run, "--total-steps", "1.5"], ("--total-steps",), needs_run=True),
        Case("resume with a held lock", run, ("in use by process",), needs_run=True, setup=held("run")),
        # -- report
        Case("report a missing log directory", [*report, f"{t}/none"], ("does not exist", "--logdir")),
        Case("report a file", [*report, f"{t}/file"], ("is a file",), setup=write("file", "x")),
        Case("report a symlink loop", [*report, f"{t}/loop"], ("symbolic link loop",),
             setup=symlink_loop("loop")),
        Case("report an empty directory", [*report, f"{t}/empty"], ("no TensorBoard runs",),
             setup=folder("empty")),
        Case("report empty event files", [*report, f"{t}/ev"], ("holds any scalar data",),
             setup=write("ev/a/events.out.tfevents.1.x", b"")),
        Case("report a folder named like an event file", [*report, f"{t}/evdir"], ("no TensorBoard runs",),
             setup=folder("evdir/a/events.out.tfevents.1.x")),
        Case("report --out is a file", [*report, f"{t}/logs", "--out", f"{t}/file"], ("--out", "is a file"),
             setup=both(synthetic_run("logs/ppo/seed0", [1.0]), write("file", "x"))),
        Case("report of unlike runs is split, not pooled", [*report, f"{t}/logs", "--out", f"{t}/r"], code=0,
             setup=both(synthetic_run("logs/cbp/seed0", [1.0]), synthetic_run("logs/cbp/seed1", [2.0]),
                        synthetic_run("logs/cbp/seed2", [3.0], SMALL + "optimizer: {lr: 0.003}\n")),
             stderr_fragments=("never pooled", "optimizer.lr")),
        Case("report marks an unfinished run", [*report, f"{t}/logs", "--out", f"{t}/r"], code=0,
             setup=both(synthetic_run("logs/ppo/seed0", [1.0]),
                        synthetic_run("logs/ppo/seed1", [1.0], status="running", total=1500)),
             stderr_fragments=("unfinished",)),
        Case("report counts NaN returns", [*report, f"{t}/logs", "--out", f"{t}/r"], code=0,
             setup=both(synthetic_run("logs/ppo/seed0", [1.0]),
                        synthetic_run("logs/ppo/seed1", [float("nan")])),
             stderr_fragments=("NaN or infinite",)),
        Case("report no config argument", ["report"], ("logdir",)),
        Case("report --out is a symlink loop", [*report, f"{t}/logs", "--out", f"{t}/loop"],
             ("symbolic link loop",),
             setup=both(synthetic_run("logs/ppo/seed0", [1.0]), symlink_loop("loop"))),
        Case("report --out under /proc", [*report, f"{t}/logs", "--out", "/proc/rl-plasticity-report"],
             ("/proc/rl-plasticity-report",), setup=synthetic_run("logs/ppo/seed0", [1.0])),
        Case("report with an unreadable run config", [*report, f"{t}/logs", "--out", f"{t}/r"], code=0,
             setup=both(synthetic_run("logs/ppo/seed0", [1.0]), write("logs/ppo/seed0/config.yaml", "{{{")),
             stderr_fragments=("settings are unknown",)),
        # -- compare
        Case("compare no configs", ["compare"], ("CONFIG",)),
        Case("compare a missing config", compare, ("c.yaml", "does not exist")),
        Case("compare a directory as config", compare, ("is a directory",), setup=folder("c.yaml")),
        Case("compare two configs of one name", ["compare", c, f"{t}/other/c.yaml", "--logdir", f"{t}/cmp"],
             ("both be stored as 'c'",), setup=both(good, write("other/c.yaml", SMALL))),
        Case("compare --seeds 0", [*compare, "--seeds", "0"], ("--seeds",), setup=good),
        Case("compare --workers 0", [*compare, "--workers", "0"], ("--workers",), setup=good),
        Case("compare --storage without ray", [*compare, "--storage", f"{t}/s"],
             ("--storage", "--backend ray"),
             setup=good),
        Case("compare --ray-address without ray", [*compare, "--ray-address", "auto"],
             ("--ray-address", "--backend ray"), setup=good),
        Case("compare seeds past the largest", [*compare, "--first-seed", "4294967295", "--seeds", "2"],
             ("--first-seed/--seeds", "run.seed"), setup=good),
        Case("compare bad --set", [*compare, "--set", "ppo.gama=1"], ("ppo.gama",), setup=good),
        Case("compare unknown backend", [*compare, "--backend", "slurm"], ("--backend",), setup=good),
        Case("compare over a run of other settings", [*compare, "--set", "optimizer.lr=3e-4"],
             ("other settings", "optimizer.lr", "--fresh"),
             setup=both(good, write("cmp/c/seed0/config.yaml", SMALL),
                        write("cmp/c/seed0/progress.json", '{"status": "running", "step": 0}'))),
        Case("compare over a held run", compare, ("being trained by another process",),
             setup=both(good, held("cmp/c/seed0"))),
        Case("compare --logdir is a symlink loop", ["compare", c, "--seeds", "1", "--logdir", f"{t}/loop"],
             ("symbolic link loop",), setup=both(good, symlink_loop("loop"))),
        Case("compare --logdir under /proc",
             ["compare", c, "--seeds", "1", "--logdir", "/proc/rl-plasticity-c"],
             ("/proc/rl-plasticity-c",), setup=good),
        Case("compare --logdir is a file", ["compare", c, "--seeds", "1", "--logdir", f"{t}/file"],
             ("file",), setup=both(good, write("file", "x"))),
        # -- SB3 helpers
        Case("SB3: no sidecar", sb3_case("missing"), ("not found", "save_with_methods")),
        Case("SB3: empty sidecar", sb3_case("empty"), ("cannot be read as a sidecar",)),
        Case("SB3: corrupt sidecar", sb3_case("corrupt"), ("cannot be read as a sidecar",)),
        Case("SB3: wrong kind of sidecar", sb3_case("wrong kind"), ("not a save_with_methods sidecar",)),
        Case("SB3: another model's sidecar", sb3_case("another model"), ("belongs to another model",)),
        Case("SB3: a methods sidecar as CBP's", sb3_case("cbp from methods"),
             ("not a save_with_cbp sidecar",)),
        # -- signals and streams, in a child process
        Case("Ctrl-C while starting", train, ("interrupted",), code=130, setup=good, process=True,
             interrupt_after=0.4),
        Case("Ctrl-C while training", [*train, "--total-steps", "100000"],
             ("run the same command to resume",),
             code=130, setup=good, process=True, interrupt_after=3.0),
        Case("not UTF-8 log directory", ["train", c, "--logdir", "{tmp}/r\udcff", "--quiet"], ("UTF-8",),
             setup=good, process=True),
        Case("report a not UTF-8 log directory", ["report", "{tmp}/r\udcff"], ("UTF-8",), process=True),
        Case("warnings are one line of ours", [*train, "--set", "env.id=Pendulum-v1", "--set",
                                               "env.change_every=2000000"], code=0, setup=good, process=True,
             stderr_fragments=("rl-plasticity train: warning: Pendulum-v1",)),
    ]
    return out


# ---------------------------------------------------------------------- judging
def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder``: a file's SHA-256, a folder's ``dir``."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = os.fsdecode(path.relative_to(folder))
        if path.is_symlink():
            found[relative] = "link"
        elif path.is_dir():
            found[relative] = "dir"
        elif path.is_file():
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _words(argv: list[str], tmp: Path) -> list[str]:
    return [word.replace("{tmp}", str(tmp)) for word in argv]


def _run_in_process(argv: list[str]) -> tuple[int, str]:
    from rl_plasticity.experiment.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = int(exit_.code or 0)
        except BaseException:  # noqa: BLE001 - a crash is what the sweep looks for
            import traceback

            traceback.print_exc()
            code = -1
    return code, err.getvalue()


def _run_child(case: Case, argv: list[str]) -> tuple[int, str]:
    process = subprocess.Popen([sys.executable, "-m", "rl_plasticity", *argv], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if case.interrupt_after is not None:
        time.sleep(case.interrupt_after)
        process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    return process.returncode, err.decode(errors="backslashreplace")


def _call(call: Callable[[Path], None], tmp: Path) -> tuple[int, str]:
    """A Python API case: raising one of our errors with a one-line message is its "exit 2"."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call(tmp)
        except (ValueError, FileNotFoundError) as error:
            return 2, f"error: {error}\n"
        except Exception as error:  # noqa: BLE001
            return -1, f"Traceback: raw {type(error).__name__}: {error}\n"
    return 0, ""


def judge(case: Case, code: int, stderr: str, before: dict[str, str], after: dict[str, str]) -> Outcome:
    lost = [name for name, digest in before.items()
            if name not in case.may_change and after.get(name) != digest]
    if lost:
        return Outcome(case, "data lost", f"changed or removed: {', '.join(lost[:3])}", stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    problems = []
    if code != case.code:
        problems.append(f"exit {code}, expected {case.code}")
    if "Traceback" in stderr:
        problems.append("traceback")
    if any("Warning:" in line or line.lstrip().startswith("warnings.warn") for line in lines):
        problems.append("a Python-style warning")
    if case.code == 2:
        errors = [line for line in lines if "error:" in line and not line.startswith("usage:")]
        others = [line for line in lines if line not in errors and "warning:" not in line
                  and not line.startswith(("usage:", " "))]
        if len(errors) != 1 or others:
            problems.append(f"{len(errors)} error lines and {len(others)} other lines")
        new = sorted(set(after) - set(before))
        if new and not callable(case.argv):  # an API case saves its own files first
            problems.append(f"left behind: {', '.join(new[:3])}")
    missing = [f for f in (*case.fragments, *case.stderr_fragments) if f not in stderr]
    if missing:
        problems.append(f"does not say {missing}")
    if problems:
        return Outcome(case, "unclear", "; ".join(problems), stderr)
    return Outcome(case, "clear", "", stderr)


def run_case(case: Case, root: Path) -> Outcome:
    tmp = Path(tempfile.mkdtemp(dir=root))
    try:
        if case.needs_run:
            trained_run_setup(tmp)
        if case.setup is not None:
            case.setup(tmp)
        before = snapshot(tmp)
        if callable(case.argv):
            code, stderr = _call(case.argv, tmp)
        else:
            argv = _words(case.argv, tmp)
            code, stderr = _run_child(case, argv) if case.process else _run_in_process(argv)
        return judge(case, code, stderr, before, snapshot(tmp))
    finally:
        while _HELD:
            _HELD.pop().release()
        shutil.rmtree(tmp, ignore_errors=True)


def sweep(verbose: bool = False, names: list[str] | None = None) -> list[Outcome]:
    global _TRAINED
    outcomes = []
    with tempfile.TemporaryDirectory() as root:
        root_path = Path(root)
        chosen = [c for c in cases() if names is None or c.name in names]
        if any(c.needs_run for c in chosen):
            (root_path / "trained").mkdir()
            _TRAINED = train_once(root_path / "trained")
        for case in chosen:
            outcome = run_case(case, root_path)
            outcomes.append(outcome)
            if verbose or outcome.verdict != "clear":
                print(f"{outcome.verdict:9s} {case.name}: {outcome.why}", flush=True)
                if outcome.verdict != "clear":
                    for line in outcome.stderr.strip().splitlines()[-6:]:
                        print(f"            | {line}")
    return outcomes


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    return {verdict: sum(o.verdict == verdict for o in outcomes) for verdict in ("clear", "unclear",
                                                                                 "data lost")}


def main() -> int:
    sys.path.insert(0, str(ROOT))
    verbose = "-v" in sys.argv[1:]
    started = time.perf_counter()
    outcomes = sweep(verbose)
    tally = counts(outcomes)
    print(f"{len(outcomes)} cases in {time.perf_counter() - started:.0f} s: {tally['clear']} clear, "
          f"{tally['unclear']} unclear, {tally['data lost']} data lost")
    return 0 if tally["clear"] == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
