"""The benchmarks' profiler: attached from outside, it times each phase and changes nothing it times."""

from __future__ import annotations

import time

from conftest import assert_same_state, make_trainer

from rl_plasticity.experiment.profiler import PHASES, Profiler

TINY = ("preset=cleanrl", "env.id=SlipperyHopper-v5", "env.num_envs=2", "ppo.hidden_sizes=[16,16]",
        "ppo.rollout_steps=128", "ppo.minibatch_size=64", "ppo.epochs=2", "cbp.enabled=true",
        "cbp.maturity_threshold=2", "log.probe_every=256", "run.checkpoint_every=256",
        "run.total_steps=1024")


def test_it_times_every_phase_and_the_results_are_those_of_an_unprofiled_run(tmp_path) -> None:
    plain, profiled = (make_trainer(*TINY, run_dir=tmp_path / name) for name in ("plain", "profiled"))
    profiler = Profiler(profiled)
    started = time.perf_counter()
    for _ in range(2):
        plain.iterate()
        profiled.iterate()
    assert all(profiler.seconds[phase] > 0 for phase in PHASES), profiler.seconds
    assert sum(profiler.seconds.values()) < time.perf_counter() - started
    assert profiler.last_rollout is not None and profiler.last_rollout.last_info
    assert_same_state(plain.agent.state_dict(), profiled.agent.state_dict(), "agent")
    profiler.remove()
    for owner in (profiled, profiled.agent, profiled.agent.envs, profiled.logger):
        assert not any(getattr(value, "__wrapped__", None) for value in vars(owner).values())
    seconds = dict(profiler.seconds)
    profiled.iterate()
    assert profiler.seconds == seconds  # removed: it no longer counts
    plain.close()
    profiled.close()
