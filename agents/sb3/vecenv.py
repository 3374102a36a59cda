"""Any Gymnasium ``VectorEnv`` (our batched MuJoCo env included) as a Stable-Baselines3 ``VecEnv``.

    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor
    import envs
    from agents.sb3.vecenv import GymnasiumVecEnv

    vec = envs.make_vec("SlipperyAnt-v5", 4, change_every=500_000, schedule_seed=0,
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    model = PPO("MlpPolicy", VecMonitor(GymnasiumVecEnv(vec)))

SB3 resets a finished copy within the step that ended it and hands the last observation over in
``infos[i]["terminal_observation"]``, with ``infos[i]["TimeLimit.truncated"]`` for time-limit ends: that is
Gymnasium's ``SAME_STEP`` autoreset mode with ``info["final_obs"]``, so the adapter requires that mode and
only reshapes Gymnasium's dict-of-arrays info into SB3's list of dicts. Wrap it in ``VecMonitor`` for
episode statistics (the per-copy ``Monitor`` of ``make_vec_env`` does not exist inside a vector env).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv


class GymnasiumVecEnv(VecEnv):
    """SB3 view of a Gymnasium vector env built with ``autoreset_mode=AutoresetMode.SAME_STEP``."""

    def __init__(self, vector_env: gym.vector.VectorEnv) -> None:
        mode = vector_env.metadata.get("autoreset_mode")
        if mode is not None and mode != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError(
                f"GymnasiumVecEnv needs a vector env with autoreset_mode=AutoresetMode.SAME_STEP (SB3 resets "
                f"within the step that ends an episode), got {mode}; build it with "
                f"vector_kwargs={{'autoreset_mode': gym.vector.AutoresetMode.SAME_STEP}}"
            )
        self.vector_env = vector_env
        super().__init__(vector_env.num_envs, vector_env.single_observation_space,
                         vector_env.single_action_space)
        self._actions: np.ndarray | None = None

    # ------------------------------------------------------------------ stepping
    def reset(self) -> np.ndarray:
        seeds = [self._seeds[i] for i in range(self.num_envs)]
        seed = None if all(s is None for s in seeds) else [s for s in seeds]
        obs, info = self.vector_env.reset(seed=seed, options=self._options[0] or None)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = self._split_info(info)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, rewards, terminated, truncated, info = self.vector_env.step(self._actions)
        dones = terminated | truncated
        infos = self._split_info(info)
        if dones.any():
            # SB3 reports the finished episode's last step in infos and the new episode's reset in
            # reset_infos; Gymnasium's SAME_STEP mode puts the former in final_info.
            final_infos = self._split_info(info.get("final_info", {}))
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = infos[i]
                infos[i] = {**final_infos[i], "terminal_observation": info["final_obs"][i],
                            "TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
        return obs, np.asarray(rewards, dtype=np.float32), dones, infos

    def _split_info(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """Gymnasium's ``{key: array, _key: mask}`` as one dict per copy (final-step keys left out)."""
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, values in info.items():
            if key.startswith("_") or key in ("final_obs", "final_info"):
                continue
            present = info.get(f"_{key}", np.ones(self.num_envs, dtype=bool))
            for i in np.flatnonzero(present):
                infos[i][key] = values[i]
        return infos

    def close(self) -> None:
        self.vector_env.close()

    # ------------------------------------------------------------------ attributes and methods
    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        values = self.vector_env.get_attr(attr_name)
        return [values[i] for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        chosen = set(self._get_indices(indices))
        current = list(self.vector_env.get_attr(attr_name))
        self.vector_env.set_attr(attr_name, [value if i in chosen else current[i]
                                             for i in range(self.num_envs)])

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None,
                   **method_kwargs: Any) -> list[Any]:
        chosen = list(self._get_indices(indices))
        if len(chosen) != self.num_envs:
            # Gymnasium's call() reaches every copy; calling a subset would change the others too.
            raise ValueError(f"env_method on a subset of copies ({chosen}) is not supported by a Gymnasium "
                             f"vector env; call it on all {self.num_envs}")
        return list(self.vector_env.call(method_name, *method_args, **method_kwargs))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.vector_env.render()
        return list(frames) if frames is not None else [None] * self.num_envs


__all__ = ["GymnasiumVecEnv"]
