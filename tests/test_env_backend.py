"""`env.backend`: batched by default where it exists, the same training on both backends, and a
checkpoint written on one resumes on the other."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_same_state, make_trainer

from rl_plasticity.experiment.checkpoint import latest_checkpoint
from rl_plasticity.experiment.config import ConfigError, load_config
from rl_plasticity.experiment.environment import backend_name
from rl_plasticity.experiment.runner import Trainer

TINY = ["preset=cleanrl", "env.num_envs=2", "env.change_every=300", "ppo.hidden_sizes=[16,16]",
        "ppo.rollout_steps=128", "ppo.minibatch_size=64", "ppo.epochs=1", "cbp.enabled=true",
        "cbp.maturity_threshold=2", "cbp.replacement_rate=0.05", "log.probe_every=0",
        "run.checkpoint_every=256", "run.total_steps=1024"]


def trainer(*overrides: str, run_dir: Path | None = None) -> Trainer:
    return make_trainer(*TINY, *overrides, run_dir=run_dir)


@pytest.mark.parametrize(("env_id", "backend", "expected"), [
    ("SlipperyHopper-v5", "batched", "batched"),
    ("SlipperyHopper-v5", "gymnasium", "gymnasium-sync"),
    ("Pendulum-v1", "batched", "gymnasium-sync"),  # no batched implementation: Gymnasium's
])
def test_the_backend_in_use(env_id: str, backend: str, expected: str) -> None:
    # Pendulum does not drift: the schedule key goes back to its default, which it ignores.
    drift = [] if env_id.startswith("Slippery") else ["env.change_every=2000000"]
    with trainer(f"env.id={env_id}", f"env.backend={backend}", *drift) as t:
        assert backend_name(t.envs) == expected


def test_both_backends_train_to_identical_parameters() -> None:
    finals = []
    for backend in ("batched", "gymnasium"):
        with trainer("env.id=SlipperyHopper-v5", f"env.backend={backend}") as t:
            t.train(progress=False)
            finals.append([p.detach().clone() for p in (*t.agent.policy.parameters(),
                                                         *t.agent.value.parameters())])
    assert_same_state(*finals, where="parameters")


def test_a_batched_checkpoint_resumes_on_gymnasium_exactly(tmp_path: Path) -> None:
    with trainer("env.id=SlipperyHopper-v5", run_dir=tmp_path / "whole") as t:
        t.train(progress=False)
    with trainer("env.id=SlipperyHopper-v5", run_dir=tmp_path / "split") as t:
        t.iterate()
        t.iterate()  # a checkpoint at 512, then the run "dies"
    with trainer("env.id=SlipperyHopper-v5", "env.backend=gymnasium", run_dir=tmp_path / "split") as t:
        assert t.agent.global_step == 512 and backend_name(t.envs) == "gymnasium-sync"
        t.train(progress=False)
    whole, split = (latest_checkpoint(tmp_path / name)[1]["agent"] for name in ("whole", "split"))
    assert_same_state(whole["policy"], split["policy"], "policy")


def test_async_needs_the_gymnasium_backend() -> None:
    with pytest.raises(ConfigError, match="env.vectorization = async needs env.backend = gymnasium"):
        load_config(None, ["env.vectorization=async"])
    assert load_config(None, ["env.vectorization=async", "env.backend=gymnasium"]).env.backend == "gymnasium"
