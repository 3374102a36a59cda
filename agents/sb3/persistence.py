"""Saving an SB3 model with its CBP state beside it (``model.cbp.pt``), or with every attached method's
(``model.methods.pt``), and loading both back."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.sb3.attach import CBPPair, attach, attach_pair, attached_cbp, attached_methods
from agents.sb3.networks import NETWORKS
from rl_plasticity import ContinualBackprop
from rl_plasticity.cbp_options import OPTION_NAMES

SIDECAR_SUFFIX = ".cbp.pt"
METHODS_SUFFIX = ".methods.pt"
_SIDECAR_FORMAT = 1


def _beside(path: str | os.PathLike[str], suffix: str) -> Path:
    path = Path(path)
    base = path.with_suffix("") if path.suffix == ".zip" else path
    return base.with_name(base.name + suffix)


def cbp_sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where `save_with_cbp` puts the CBP state for an SB3 save path (``run/model`` and ``run/model.zip``
    both give ``run/model.cbp.pt``, since SB3 adds ``.zip`` to a path without a suffix)."""
    return _beside(path, SIDECAR_SUFFIX)


def methods_sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where `save_with_methods` puts the methods' states (``run/model.methods.pt``)."""
    return _beside(path, METHODS_SUFFIX)


class SidecarError(ValueError):
    """A sidecar that cannot be used with its model: unreadable, of another kind, or another model's."""


def model_identity(model: BaseAlgorithm) -> str:
    """SHA-256 of the policy's parameters and buffers (names, shapes, dtypes, bytes): what a sidecar
    records at save time, so that it is only ever restored onto the model it was saved with."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.policy.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _read_sidecar(sidecar: Path, path: str | os.PathLike[str], saver: str, otherwise: str,
                  kind: str) -> dict[str, Any]:
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar} not found: {path} was not saved with {saver}; load it with the "
                                f"SB3 class's load() and {otherwise}")
    try:
        saved = torch.load(sidecar, weights_only=True)
    except Exception:  # empty, truncated or not a torch file at all
        reason = "the file is empty" if sidecar.stat().st_size == 0 else \
            "not a file torch.save wrote, or a truncated one"
        raise SidecarError(f"{sidecar} cannot be read as a sidecar ({reason}); save the model again with "
                           f"{saver}, or load it with the SB3 class's load() and {otherwise}") from None
    if not isinstance(saved, dict) or saved.get("format") != _SIDECAR_FORMAT or kind not in saved:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise SidecarError(f"{sidecar} is not a {saver} sidecar of this version (format {found!r}, expected "
                           f"{_SIDECAR_FORMAT} with its {kind!r} entry); save the model again with {saver}")
    return saved


def _load_model(path: str | os.PathLike[str], saved: dict[str, Any], env: Any,
                algorithm: type[BaseAlgorithm] | None, load_kwargs: dict[str, Any] | None) -> BaseAlgorithm:
    """The model at ``path``, refused if its sidecar ``saved`` was written at another step: a model saved
    again without its sidecar would otherwise get an older state of the methods."""
    if algorithm is None:
        from stable_baselines3 import PPO

        algorithm = PPO
    model = algorithm.load(path, env=env, **(load_kwargs or {}))
    recorded = saved.get("num_timesteps")  # sidecars from before this check have none
    if recorded is not None and recorded != model.num_timesteps:
        raise SidecarError(f"{path} is at step {model.num_timesteps} but its sidecar was saved at step "
                           f"{recorded}: the model was saved again without it; save both together "
                           f"(save_with_cbp / save_with_methods) or attach the methods afresh")
    identity = saved.get("model_identity")  # likewise
    if identity is not None and identity != model_identity(model):
        raise SidecarError(f"the sidecar beside {path} belongs to another model (its parameters at save time "
                           f"differ from this model's): it was copied or left from another run; save both "
                           f"together (save_with_cbp / save_with_methods) or attach the methods afresh")
    return model


def _hyperparameters(cbp: ContinualBackprop) -> dict[str, Any]:
    values = {name: getattr(cbp.options, name) for name in OPTION_NAMES}
    if callable(values["init"]):  # a function cannot be stored safely; load_with_cbp asks for it again
        values["init"] = None
    return values


def save_with_cbp(model: BaseAlgorithm, path: str | os.PathLike[str], cbps: CBPPair | None = None) -> Path:
    """``model.save(path)`` plus both CBP states and settings in `cbp_sidecar_path(path)` (returned).

    ``cbps`` defaults to the pair attached to ``model``. Normalisation statistics are not part of an SB3
    save: keep them with ``VecNormalize.save``.
    """
    cbps = cbps if cbps is not None else attached_cbp(model)
    if cbps is None:
        raise ValueError("no CBP attached to this model: pass cbps=attach_cbp(model, ...) or use model.save")
    model.save(path)
    sidecar = cbp_sidecar_path(path)
    _save_atomically({
        "format": _SIDECAR_FORMAT,
        "num_timesteps": model.num_timesteps,
        "model_identity": model_identity(model),
        "hyperparameters": {name: _hyperparameters(cbp) for name, cbp in zip(NETWORKS, cbps, strict=True)},
        "state": {name: cbp.state_dict() for name, cbp in zip(NETWORKS, cbps, strict=True)},
    }, sidecar)
    return sidecar


def _save_atomically(data: dict[str, Any], sidecar: Path) -> None:
    """``torch.save`` to a temporary file renamed over ``sidecar``: a crash never leaves half of one."""
    temporary = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.partial")
    try:
        torch.save(data, temporary)
        os.replace(temporary, sidecar)
    finally:
        temporary.unlink(missing_ok=True)


def load_with_cbp(
    path: str | os.PathLike[str],
    env: Any = None,
    *,
    algorithm: type[BaseAlgorithm] | None = None,
    load_kwargs: dict[str, Any] | None = None,
    **cbp_kwargs: Any,
) -> tuple[BaseAlgorithm, CBPPair]:
    """Load a model saved by `save_with_cbp`, attach CBP again and restore its ages and utilities.

    ``algorithm`` is the SB3 class to load with (default PPO); ``load_kwargs`` go to its ``load`` (device,
    custom_objects, ...). ``cbp_kwargs`` override the saved CBP settings; a callable ``init`` is not saved
    and must be passed again. Continue with ``model.learn(..., reset_num_timesteps=False)`` to keep the
    step count (and so the TensorBoard curves and a callback-owned friction schedule) going.
    """
    saved = _read_sidecar(cbp_sidecar_path(path), path, "save_with_cbp", "call attach_cbp for a fresh CBP",
                          "state")
    kwargs = {name: {**saved["hyperparameters"][name], **cbp_kwargs} for name in NETWORKS}
    if any(k["init"] is None for k in kwargs.values()):
        raise ValueError(f"{path} was saved with a callable CBP init, which is not stored: pass init=...")
    model = _load_model(path, saved, env, algorithm, load_kwargs)
    pair = attach_pair(model, kwargs["policy"], kwargs["value"])
    for name, cbp in zip(NETWORKS, pair, strict=True):
        cbp.load_state_dict(saved["state"][name])
    return model, pair


def _storable_options(name: str, method: Any) -> dict[str, Any]:
    options = dataclasses.asdict(method.options)
    for key, value in options.items():
        if callable(value):
            raise ValueError(f"{name}'s option {key} is a function, which cannot be saved: attach it with a "
                             f"named choice instead (e.g. init='lecun') to save the model with it")
    return options


def save_with_methods(model: BaseAlgorithm, path: str | os.PathLike[str]) -> Path:
    """``model.save(path)`` plus the options and state of every method attached to it, CBP (by
    `attach_cbp`) and the others (by `attach`), in `methods_sidecar_path(path)` (returned)."""
    methods, cbps = attached_methods(model), attached_cbp(model)
    if not methods and cbps is None:
        raise ValueError("no plasticity method is attached to this model: use model.save")
    def record(name: str, method: Any) -> dict[str, Any]:
        return {"options": _storable_options(name, method), "state": method.state_dict()}

    saved: dict[str, Any] = {"format": _SIDECAR_FORMAT, "num_timesteps": model.num_timesteps,
                             "model_identity": model_identity(model), "methods": {
        name: {net: record(name, m) for net, m in nets.items()} for name, nets in methods.items()}}
    if cbps is not None:
        saved["cbp"] = {net: record("cbp", cbp) for net, cbp in zip(NETWORKS, cbps, strict=True)}
    model.save(path)
    sidecar = methods_sidecar_path(path)
    _save_atomically(saved, sidecar)
    return sidecar


def load_with_methods(path: str | os.PathLike[str], env: Any = None, *,
                      algorithm: type[BaseAlgorithm] | None = None,
                      load_kwargs: dict[str, Any] | None = None) -> BaseAlgorithm:
    """Load a model saved by `save_with_methods` and attach every method again in the state it was saved
    in; `attached_cbp` and `attached_methods` give them back. Continue with
    ``model.learn(..., reset_num_timesteps=False)``."""
    saved = _read_sidecar(methods_sidecar_path(path), path, "save_with_methods", "attach the methods again",
                          "methods")
    model = _load_model(path, saved, env, algorithm, load_kwargs)
    if "cbp" in saved:
        pair = attach_pair(model, saved["cbp"]["policy"]["options"], saved["cbp"]["value"]["options"])
        for net, cbp in zip(NETWORKS, pair, strict=True):
            cbp.load_state_dict(saved["cbp"][net]["state"])
    for name, nets in saved["methods"].items():
        options = next(iter(nets.values()))["options"]  # one attach call gave every network the same
        attached = attach(model, name, networks=tuple(nets), **options)
        for net, method in attached.items():
            method.load_state_dict(nets[net]["state"])
    return model
