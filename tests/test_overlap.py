"""The value network's update beside the next rollout (``run.overlap_value_update``) against lockstep."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from conftest import assert_same_state, make_trainer, read_events

from envs.thread_pool import available_cpus
from rl_plasticity import tags

# 6 updates of 4 minibatches; probes every 768 steps, so that some iterations must wait for the value
# half and others may leave it running.
OVERRIDES = ("env.id=InvertedPendulum-v5", "ppo.rollout_steps=256", "ppo.minibatch_size=64", "ppo.epochs=1",
             "ppo.ent_coef=0.01", "cbp.enabled=true", "cbp.maturity_threshold=2", "cbp.replacement_rate=0.05",
             "methods.redo.enabled=true", "methods.redo.every=3", "run.total_steps=1536",
             "run.checkpoint_every=1024", "log.probe_every=768", "log.histogram_every=0",
             "run.parallel_networks=false")


def train(tmp_path: Path, name: str, overlap: str, *extra: str) -> tuple[dict, list[str], Path]:
    run_dir = tmp_path / name
    trainer = make_trainer(*OVERRIDES, f"run.overlap_value_update={overlap}", *extra, run_dir=run_dir)
    threads: list[str] = []
    value_module = trainer.agent.value.net
    value_module[0].register_forward_pre_hook(
        lambda *_: threads.append(threading.current_thread().name) if torch.is_grad_enabled() else None)
    trainer.train(progress=False)
    state = trainer.state_dict()
    trainer.close()
    return state, threads, run_dir


@pytest.mark.parametrize("backprop", ["manual", "autograd"])
def test_overlapped_value_updates_are_bit_identical_and_logged_at_their_step(tmp_path: Path,
                                                                              backprop: str) -> None:
    path = f"ppo.backprop={backprop}"
    lockstep, lockstep_threads, lockstep_dir = train(tmp_path, "lockstep", "false", path)
    overlapped, threads, overlapped_dir = train(tmp_path, "overlap", "true", path)
    assert all(name == "MainThread" for name in lockstep_threads)
    # The updates at steps 512 and 1280 leave the value half running; 256 and 768 (probes), 1024 (a
    # checkpoint) and 1536 (the last) do not. 4 minibatches each.
    on_worker = [name.startswith("ppo-value-update") for name in threads]
    assert on_worker == [False] * 4 + [True] * 4 + [False] * 8 + [True] * 4 + [False] * 4, threads
    assert sum(overlapped["agent"]["cbp_value"]["replaced_total"]) > 0
    assert_same_state(lockstep["agent"], overlapped["agent"], "agent")

    events = [read_events(run_dir) for run_dir in (lockstep_dir, overlapped_dir)]
    for tag in (tags.loss("value_loss"), tags.loss("policy_loss"), tags.plasticity("value", "grad_norm"),
                tags.plasticity("value", "weight_change"), tags.cbp_replaced("value", 0),
                tags.method_statistic("redo", "value", "reset_total")):
        logged = [[(e.step, e.value) for e in accumulator.Scalars(tag)] for accumulator in events]
        assert [step for step, _ in logged[1]] == [256, 512, 768, 1024, 1280, 1536], tag
        assert logged[1] == logged[0], tag


def test_a_global_gradient_clip_keeps_the_networks_in_lockstep(tmp_path: Path) -> None:
    # cleanrl clips the norm of both networks' gradients together: the value's steps depend on the policy's
    _, threads, _ = train(tmp_path, "cleanrl", "true", "preset=cleanrl")
    assert threads and all(name == "MainThread" for name in threads)


def test_a_value_update_that_diverges_beside_the_rollout_stops_the_run_at_its_own_step(
        tmp_path: Path) -> None:
    from agents import PPO
    from rl_plasticity.experiment.checkpoint import list_checkpoints
    from rl_plasticity.experiment.progress import read_progress
    from rl_plasticity.experiment.runner import TrainingDiverged

    trainer = make_trainer(*OVERRIDES, "run.overlap_value_update=true", "run.checkpoint_every=1024",
                           run_dir=tmp_path / "run")
    agent = trainer.agent
    original = PPO._network_step

    def value_step_that_diverges(self: PPO, network: str, *columns: torch.Tensor) -> torch.Tensor:
        result = original(self, network, *columns)
        if network == "value" and self.global_step == 1280:  # a deferred update (see the test above)
            with torch.no_grad():
                self.value.net[0].weight[0, 0] = float("nan")
        return result

    agent._network_step = value_step_that_diverges.__get__(agent)  # type: ignore[method-assign]
    with pytest.raises(TrainingDiverged, match=r"step 1,280: non-finite losses/value_loss = nan, value "
                                               r"parameter net\.0\.weight.*step_1024\.pt") as raised:
        trainer.train(progress=False)
    assert raised.value.step == 1280 and agent.global_step == 1536  # noticed after the next rollout
    trainer.close()
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [1024]
    assert read_progress(tmp_path / "run")["diverged_at"] == 1280


def test_one_and_two_update_threads_train_bit_identical_agents() -> None:
    """What lets `compare` hand a lone run both cores (its value update then overlaps the rollout) and
    resume it on one: the paper's 2x256 networks and minibatch of 128, CBP replacing units."""
    states = []
    for threads in (1, 2):
        trainer = make_trainer("env.id=SlipperyAnt-v5", "ppo.rollout_steps=256", "cbp.enabled=true",
                               "cbp.maturity_threshold=0", "cbp.replacement_rate=0.01", "log.probe_every=0",
                               f"run.update_threads={threads}", "run.total_steps=100000")
        assert trainer.overlap_value_update == (threads == 2 and available_cpus() >= 2)
        for _ in range(3):
            trainer.iterate()
        trainer.agent.finish_update()
        states.append(trainer.agent.state_dict())
        trainer.close()
    assert sum(sum(cbp["replaced_total"]) for cbp in (states[0]["cbp_policy"], states[0]["cbp_value"])) > 0
    assert_same_state(states[0], states[1])
