"""Experiment configs: typed dataclasses loaded from YAML, validated on load, with dotted overrides.

A config file has a ``preset`` (``dohare`` or ``cleanrl``) that sets the ``ppo`` and ``optimizer``
defaults, and sections that override them::

    preset: dohare
    env: {id: SlipperyAnt-v5, change_every: 2000000}
    optimizer: {betas: [0.99, 0.99], weight_decay: 1.0e-4}
    cbp: {enabled: true}
    run: {total_steps: 20000000}

Every key is documented in its field's ``metadata["doc"]``; `describe_keys` lists them all. Mistakes
raise `ConfigError` naming the key, the problem, the allowed values and the fix.

(Over 400 lines on purpose: the schema, its loading and the checks of every value stay in one file, so
that a key's type, range, doc and the message a wrong value gets read side by side. YAML reading and
writing live in `experiment.yaml_text`.)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any

import yaml

from agents.manual_backprop import compile_unavailable
from agents.method_settings import MethodsSettings
from agents.settings import PRESETS, CBPSettings, OptimizerSettings, PPOSettings, setting
from envs.schedules import CHANGE_AT_MODES, SCHEDULE_KINDS
from rl_plasticity.experiment.files import path_problem
from rl_plasticity.experiment.yaml_text import DuplicateKeyError, describe_yaml_error, dump_yaml, read_yaml

VECTORIZATION_MODES = ("sync", "async")
MAX_SEED = 2**32 - 1  # numpy's and Gymnasium's seeds are 32-bit
MAX_TOTAL_STEPS = 10**12  # ~30 years of this machine's steps: anything larger is a typo
BACKENDS = ("batched", "gymnasium")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key, the problem and the fix."""


@dataclass
class EnvConfig:
    """The environment; schedule keys reach only the drifting envs registered by the ``envs`` package."""

    id: str = setting("SlipperyAnt-v5", "Gymnasium env id, e.g. SlipperyAnt-v5, Hopper-v5, Pendulum-v1")
    num_envs: int = setting(1, "env copies stepped together (the paper: 1)", low=1)
    backend: str = setting("batched", "batched: the copies' MuJoCo simulations stepped on threads in one "
                           "process (SlipperyAnt/Hopper/Walker2d/HalfCheetah and their plain v5 ids; other "
                           "ids fall back to gymnasium); gymnasium: gym.make_vec", choices=BACKENDS)
    vectorization: str = setting("sync", "gymnasium backend: sync (one process) or async (one subprocess "
                                 "per copy)", choices=VECTORIZATION_MODES)
    change_every: int = setting(2_000_000, "global env steps between physics changes (each copy gets "
                                "change_every // num_envs); drifting envs only", low=1)
    friction_range: tuple[float, float] = setting((0.02, 2.0), "(low, high) of the log-uniform friction "
                                                  "draws; friction-drifting envs only", low=0.0,
                                                  low_inclusive=False)
    schedule_seed: int | None = setting(None, "seed of the physics sequence; null = run.seed (one "
                                        "sequence per run, as in the paper)", low=0, high=MAX_SEED)
    change_at: str = setting("episode", "episode: change at the first episode end after change_every "
                             "steps (the paper); immediate: change mid-episode", choices=CHANGE_AT_MODES)
    schedule: str = setting("piecewise", "piecewise: i.i.d. draws from friction_range (the paper); cyclic: "
                            "cycle_values in turn (A, B, A, B, ...), so each value comes back and `report` "
                            "can measure retention; linear, random_walk: gradual drifts",
                            choices=SCHEDULE_KINDS)
    cycle_values: list[float] | None = setting(None, "cyclic schedule: the physics values visited in "
                                               "turn, e.g. [2.0, 0.25]; null = [low, high] of "
                                               "friction_range", low=0.0)
    kwargs: dict[str, Any] = setting({}, "extra keyword arguments for gym.make (e.g. schedule: cyclic)")


@dataclass
class LogConfig:
    """TensorBoard logging; every scalar's step is the global env step."""

    probe_every: int = setting(20_480, "env steps between plasticity probes of both networks (dormant "
                               "and inactive fractions, ranks, weight magnitude); 0 = never", low=0)
    probe_batch: int = setting(1024, "recent rollout observations the probes run on", low=2)
    histogram_every: int = setting(204_800, "env steps between CBP utility histograms; 0 = never", low=0)
    progress_bar: bool = setting(True, "live progress bar on a terminal (plain status lines otherwise)")


@dataclass
class RunConfig:
    """Length, seeding, checkpoints and threads of one run."""

    total_steps: int = setting(20_000_000, "env steps to train for (rounded up to whole rollouts)", low=1,
                               high=MAX_TOTAL_STEPS)
    seed: int = setting(0, "seeds networks, env resets, exploration and CBP", low=0, high=MAX_SEED)
    checkpoint_every: int = setting(1_000_000, "env steps between checkpoints (one is always written at "
                                    "the end); 0 = only at the end", low=0)
    keep_checkpoints: int = setting(3, "newest checkpoints kept on disk (older ones are removed once a new "
                                    "one is complete); 0 = keep all", low=0)
    torch_threads: int = setting(1, "torch CPU threads; 1 is fastest for batch-1 rollout inference", low=1)
    update_threads: int | None = setting(None, "torch threads during updates (1 and 2 gave bit-identical "
                                         "results in our tests); null = torch's default: the cores, or "
                                         "OMP_NUM_THREADS (compare's runs share the cores: 1 each when "
                                         "they fill them)", low=1)
    parallel_networks: bool | None = setting(
        None, "run the value network's forward and backward pass on a second thread while the policy's "
        "runs, each network's on one torch thread, instead of each network in turn on update_threads "
        "(bit-identical results); null = time both ways now and then and keep the faster (never with "
        "1 CPU)")
    overlap_value_update: bool | None = setting(
        None, "update the value network on a second thread while the next rollout steps the env (the "
        "rollout needs only the policy; bit-identical results). Only where ppo.max_grad_norm is null (a "
        "global gradient clip couples the networks' steps); iterations that checkpoint, probe or log "
        "histograms wait for it. null = on with 2+ CPUs and 2+ update threads")


@dataclass
class Config:
    """A whole experiment. ``preset`` picks the ppo/optimizer defaults the sections override."""

    preset: str = setting("dohare", "dohare (the paper's PPO) or cleanrl (CleanRL's ppo_continuous_action)",
                          choices=tuple(PRESETS))
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    cbp: CBPSettings = field(default_factory=CBPSettings)
    methods: MethodsSettings = field(default_factory=MethodsSettings)
    log: LogConfig = field(default_factory=LogConfig)
    run: RunConfig = field(default_factory=RunConfig)


_CONFIG_HINTS = typing.get_type_hints(Config)
#: sections that hold sections (``methods.redo.tau``)
GROUPS: dict[str, type] = {"methods": MethodsSettings}
SECTIONS: dict[str, type] = {}
for _field in dataclasses.fields(Config):
    if _field.name in GROUPS:
        SECTIONS.update({f"{_field.name}.{name}": hint
                         for name, hint in typing.get_type_hints(GROUPS[_field.name]).items()})
    elif _field.name != "preset":
        SECTIONS[_field.name] = _CONFIG_HINTS[_field.name]
ALL_KEYS = ["preset"] + [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
# Names users bring from CleanRL and Stable-Baselines3, pointed at ours.
_ALIASES = {
    "learning_rate": "optimizer.lr", "num_steps": "ppo.rollout_steps", "n_steps": "ppo.rollout_steps",
    "update_epochs": "ppo.epochs", "n_epochs": "ppo.epochs", "batch_size": "ppo.minibatch_size",
    "total_timesteps": "run.total_steps", "env_id": "env.id", "clip_range": "ppo.clip_coef",
    "num_minibatches": "ppo.minibatch_size", "adam_eps": "optimizer.eps", "seed": "run.seed",
    "lr": "optimizer.lr", "anneal_lr": "optimizer.anneal_lr", "num_envs": "env.num_envs",
}


# ---------------------------------------------------------------------- loading
#: an override: ``"key=value"`` (named ``--set key=value`` in messages), or ``(what the user typed,
#: "key=value")`` for one that a flag such as ``--seed 3`` stands for
Override = str | tuple[str, str]


def load_config(path: str | Path | None = None, overrides: Sequence[Override] = ()) -> Config:
    """Read ``path`` (or start from the defaults if None), apply ``key=value`` overrides, validate."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        problem = path_problem(path, "file")
        if problem is not None:
            raise ConfigError(f"config file {source!r} {problem}; pass the path of a YAML config, e.g. "
                              f"configs/quickstart/ppo.yaml")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {source!r} cannot be read ({error}); pass a readable YAML "
                              f"file") from None
        try:
            loaded = read_yaml(text, source)
        except DuplicateKeyError as error:
            raise ConfigError(str(error)) from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{source} is not valid YAML ({describe_yaml_error(error)}); fix the file "
                              f"or start from configs/quickstart/ppo.yaml") from None
        if loaded is None:
            raise ConfigError(f"config file {source!r} is empty; it would train the built-in defaults "
                              f"(20M steps of SlipperyAnt-v5). Write at least one section, e.g. "
                              f"`preset: dohare`, or start from configs/quickstart/ppo.yaml")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source} must hold a mapping of sections (preset, env, ppo, ...), "
                              f"not a {type(loaded).__name__}")
        raw = loaded
    layers = [(source, raw)]
    for override in overrides:
        label, item = override if isinstance(override, tuple) else (f"--set {override}", override)
        layers.append((label, parse_override(item)))
    return build_config(layers)


def parse_override(item: str) -> dict[str, Any]:
    """``"ppo.gamma=0.9"`` -> ``{"ppo": {"gamma": 0.9}}``; the value is read as YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not key=value; write e.g. --set optimizer.lr=3e-4")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    *parents, leaf = key.split(".")
    nested: dict[str, Any] = {leaf: value}
    for parent in reversed(parents):
        nested = {parent: nested}
    return nested


def build_config(layers: list[tuple[str, dict[str, Any]]]) -> Config:
    """Merge ``(source, mapping)`` layers over the chosen preset and validate the result."""
    layers = [(source, _split_groups(mapping, source)) for source, mapping in layers]
    for source, mapping in layers:
        _check_known_keys(mapping, source)
    preset = "dohare"
    for source, mapping in layers:
        if "preset" in mapping:
            preset = _coerce(mapping["preset"], str, "preset", source, _metadata(Config, "preset"))
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    sources: dict[str, str] = {}
    for name, values in PRESETS[preset].items():
        merged[name].update(values)
        sources.update({f"{name}.{key}": f"preset {preset}" for key in values})
    for source, mapping in layers:
        for section, values in mapping.items():
            if section == "preset":
                continue
            merged[section].update(values)
            sources.update({f"{section}.{key}": source for key in values})

    sections = {name: _build_section(name, cls, merged[name], sources) for name, cls in SECTIONS.items()}
    for group, cls in GROUPS.items():
        members = {name.split(".", 1)[1]: sections.pop(name) for name in list(sections)
                   if name.startswith(f"{group}.")}
        sections[group] = cls(**members)
    config = Config(preset=preset, **sections)
    _check_consistency(config, sources)
    return config


def _split_groups(mapping: dict[str, Any], source: str) -> dict[str, Any]:
    """``{"methods": {"redo": {...}}}`` as ``{"methods.redo": {...}}``, the way `SECTIONS` names it."""
    split: dict[str, Any] = {}
    for section, values in mapping.items():
        if section not in GROUPS:
            split[section] = values
            continue
        if not isinstance(values, dict):
            members = ", ".join(n.split(".", 1)[1] for n in SECTIONS if n.startswith(f"{section}."))
            raise ConfigError(f"{source}: {section!r} must be a mapping of sections ({members}), got "
                              f"{values!r}")
        split.update({f"{section}.{name}": inner for name, inner in values.items()})
    return split


def _check_known_keys(mapping: dict[str, Any], source: str) -> None:
    for section, values in mapping.items():
        if section == "preset":
            continue
        if section not in SECTIONS:
            hint = _did_you_mean(section, ["preset", *SECTIONS]) or _did_you_mean(section, ALL_KEYS)
            raise ConfigError(f"{source}: unknown section {section!r}{hint}; sections are: preset, "
                              f"{', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of keys, got {values!r}; "
                              f"write e.g. `{section}:` followed by indented `key: value` lines")
        known = [f.name for f in dataclasses.fields(SECTIONS[section])]
        for key in values:
            if key not in known:
                hint = _did_you_mean(f"{section}.{key}", [f"{section}.{k}" for k in known]) \
                    or _did_you_mean(str(key), ALL_KEYS)
                raise ConfigError(f"{source}: unknown key {section}.{key}{hint}; {section} keys are: "
                                  f"{', '.join(known)} (`rl-plasticity config` lists every key)")


def _did_you_mean(word: str, candidates: list[str]) -> str:
    """A hint naming the closest candidate: a known alias, else the closest name, else the closest leaf."""
    leaf = word.rsplit(".", 1)[-1]
    if _ALIASES.get(leaf) in candidates:
        return f" (did you mean {_ALIASES[leaf]}?)"
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not close:
        leaves = {c.rsplit(".", 1)[-1]: c for c in candidates}
        close = [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]}?)" if close else ""


def _metadata(cls: type, name: str) -> dict[str, Any]:
    return next(f.metadata for f in dataclasses.fields(cls) if f.name == name)


def _build_section(name: str, cls: type, values: dict[str, Any], sources: dict[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            key = f"{name}.{f.name}"
            kwargs[f.name] = _coerce(values[f.name], hints[f.name], key, sources[key], f.metadata)
    return cls(**kwargs)


# ---------------------------------------------------------------------- type and range checks
def _coerce(value: Any, hint: Any, key: str, source: str, meta: dict[str, Any]) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _coerce(value, hint, key, source, meta)
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise _type_error(key, source, value, f"a list of {len(args)} numbers, e.g. [0.9, 0.999]")
        return tuple(_coerce(v, a, key, source, meta) for v, a in zip(value, args, strict=True))
    if origin is list:
        if not isinstance(value, list | tuple) or not value:
            raise _type_error(key, source, value, "a non-empty list, e.g. [256, 256]")
        return [_coerce(v, args[0], key, source, meta) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, source, value, "a mapping, e.g. {schedule: cyclic}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise _type_error(key, source, value, "true or false")
        return value
    if hint is int:
        number = _number(value)
        if number is not None and not math.isfinite(number):
            raise ConfigError(f"{source}: {key} = {value!r} is not a finite number{_default_hint(key)}")
        if number is None or number != int(number):
            raise _type_error(key, source, value, "an integer, e.g. 2048 or 2e6")
        return _check_range(int(number), key, source, meta)
    if hint is float:
        number = _number(value)
        if number is None:
            raise _type_error(key, source, value, "a number, e.g. 3e-4")
        return _check_range(float(number), key, source, meta)
    if hint is str:
        if not isinstance(value, str):
            raise _type_error(key, source, value, "a string")
        choices = meta.get("choices")
        if choices and value not in choices:
            hint_text = _did_you_mean(value, list(choices))
            raise ConfigError(f"{source}: {key} = {value!r} is not allowed{hint_text}; choose one of: "
                              f"{', '.join(choices)}")
        return value
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return None
    return None


def _type_error(key: str, source: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{source}: {key} = {value!r} has the wrong type; expected {expected}"
                       f"{_default_hint(key)}")


def _default_hint(key: str) -> str:
    defaults = dict(flat_items(Config()))
    if key not in defaults:
        return ""
    return f" (default: {key}: {yaml.safe_dump(defaults[key], default_flow_style=True).strip()})" \
        .replace("\n...", "")


def _check_range(value: float, key: str, source: str, meta: dict[str, Any]) -> Any:
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{source}: {key} = {value!r} is not a finite number{_default_hint(key)}")
    low, high = meta.get("low"), meta.get("high")
    too_low = low is not None and (value < low if meta.get("low_inclusive", True) else value <= low)
    too_high = high is not None and (value > high if meta.get("high_inclusive", True) else value >= high)
    if too_low or too_high:
        raise ConfigError(f"{source}: {key} = {value!r} is out of range; it must be {_describe_range(meta)}"
                          f"{_default_hint(key)}")
    return value


def _describe_range(meta: dict[str, Any]) -> str:
    low, high = meta.get("low"), meta.get("high")
    def number(value: float) -> str:
        return f"{value:,}" if isinstance(value, int) and abs(value) >= 10**6 else f"{value:g}"

    parts = []
    if low is not None:
        parts.append(f"{'>=' if meta.get('low_inclusive', True) else '>'} {number(low)}")
    if high is not None:
        parts.append(f"{'<=' if meta.get('high_inclusive', True) else '<'} {number(high)}")
    return " and ".join(parts)


def _check_consistency(config: Config, sources: dict[str, str]) -> None:
    ppo, env = config.ppo, config.env
    batch = ppo.rollout_steps * env.num_envs
    if batch % ppo.minibatch_size:
        where = sources.get("ppo.minibatch_size", "defaults")
        raise ConfigError(
            f"{where}: ppo.minibatch_size = {ppo.minibatch_size} does not divide the batch of {batch} "
            f"(ppo.rollout_steps {ppo.rollout_steps} x env.num_envs {env.num_envs}); pick a divisor, e.g. "
            f"{_nearest_divisor(batch, ppo.minibatch_size)}"
        )
    if env.vectorization == "async" and env.backend == "batched":
        raise ConfigError(f"{sources.get('env.vectorization', 'defaults')}: env.vectorization = async "
                          f"needs env.backend = gymnasium (the batched backend steps its copies on threads)")
    if env.cycle_values is not None and env.schedule != "cyclic":
        raise ConfigError(f"{sources.get('env.cycle_values', 'defaults')}: env.cycle_values is set but "
                          f"env.schedule = {env.schedule}; it is read by the cyclic schedule only: add "
                          f"env.schedule: cyclic or remove env.cycle_values")
    for key in ("schedule", "cycle_values", "change_every", "change_at", "friction_range"):
        if key in env.kwargs:
            raise ConfigError(f"{sources.get('env.kwargs', 'defaults')}: env.kwargs holds {key!r}, which is "
                              f"a key of its own; write env.{key} instead")
    low, high = env.friction_range
    if low > high:
        raise ConfigError(f"{sources.get('env.friction_range', 'defaults')}: env.friction_range = "
                          f"[{low}, {high}] is inverted; write [low, high]")
    problem = config.methods.conflict(ppo.activation, config.cbp.enabled)
    if problem:
        raise ConfigError(f"{sources.get('methods.crelu.enabled', 'defaults')}: {problem}")
    problem = compile_unavailable() if ppo.backprop == "compiled" else None
    if problem:
        raise ConfigError(f"{sources.get('ppo.backprop', 'defaults')}: ppo.backprop = compiled, but "
                          f"{problem}; install one (e.g. apt install g++) or point CXX at one, or use "
                          f"ppo.backprop: auto")


def _nearest_divisor(batch: int, wanted: int) -> int:
    return min((d for d in range(1, batch + 1) if batch % d == 0), key=lambda d: abs(d - wanted))


# ---------------------------------------------------------------------- output
def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested data (tuples as lists) that `build_config` reads back to the same config."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def config_to_yaml(config: Config) -> str:
    return dump_yaml(config_to_dict(config))


def flat_items(config: Config) -> list[tuple[str, Any]]:
    """``("section.key", value)`` for every key, in declaration order."""
    data = config_to_dict(config)
    items: list[tuple[str, Any]] = [("preset", data.pop("preset"))]
    for section, values in data.items():
        inner = values.items() if section in GROUPS else [(None, values)]
        for name, members in inner:
            where = section if name is None else f"{section}.{name}"
            items += [(f"{where}.{key}", value) for key, value in members.items()]
    return items


def describe_keys(preset: str = "dohare") -> list[tuple[str, str, Any, str]]:
    """``(key, type, default under preset, doc)`` for every config key."""
    defaults = dict(flat_items(build_config([("defaults", {"preset": preset})])))
    rows = [("preset", "str", preset, _metadata(Config, "preset")["doc"])]
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            doc = f.metadata["doc"]
            if f.metadata.get("choices"):
                doc += f" [{'|'.join(f.metadata['choices'])}]"
            elif f.metadata.get("low") is not None or f.metadata.get("high") is not None:
                doc += f" [{_describe_range(f.metadata)}]"
            rows.append((key, _type_name(hints[f.name]), defaults[key], doc))
    return rows


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint):
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", str(hint))
