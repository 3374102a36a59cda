"""`rl-plasticity compare --backend ray`: a local Ray instance runs a 2-config x 2-seed sweep through Ray
Tune; an unreachable cluster address is a clear, fast error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

pytest.importorskip("ray.tune")

from rl_plasticity.experiment.cli import main  # noqa: E402
from rl_plasticity.experiment.progress import read_progress  # noqa: E402
from tests.test_compare import write_configs  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_sweep_runs_every_config_and_seed_as_a_tune_trial(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    configs = [str(p) for p in write_configs(tmp_path / "configs")]
    logdir, storage = tmp_path / "runs", tmp_path / "tune"
    command = ["compare", *configs, "--seeds", "2", "--backend", "ray", "--logdir", str(logdir),
               "--storage", str(storage)]
    assert main(command) == 0, capsys.readouterr().err
    assert "4 finished" in capsys.readouterr().err
    for name in ("ppo", "ppo_cbp"):
        for seed in (0, 1):
            progress = read_progress(logdir / name / f"seed{seed}")
            assert progress is not None and progress["status"] == "finished" and progress["step"] == 512
    assert any(storage.rglob("*")), "Tune wrote no trial records where --storage points"
    assert main(command) == 0
    assert "4 skipped" in capsys.readouterr().err


def test_an_unreachable_ray_address_is_named_with_how_to_start_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh CLI process
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configs = [str(p) for p in write_configs(tmp_path / "configs")]
    assert main(["compare", *configs, "--backend", "ray", "--ray-address", f"127.0.0.1:{port}",
                 "--logdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach a Ray cluster at '127.0.0.1:{port}'" in err and "ray start --head" in err
