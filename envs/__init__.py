"""Non-stationary MuJoCo tasks; importing this package registers the Gymnasium ids.

``gym.make("SlipperyAnt-v5", change_every=2_000_000, friction_range=(0.02, 2.0), schedule_seed=0)``
is the paper's Slippery Ant on Gymnasium's Ant-v5. See :class:`envs.drifting.DriftingMujocoEnv`.
``envs.make_vec(env_id, num_envs)`` gives the same copies as a threaded batched vector env
(:class:`envs.batched.BatchedMujocoEnv`) where supported, Gymnasium's ``gym.make_vec`` otherwise.
"""

from envs.batched import BatchedMujocoEnv, batched_env_ids
from envs.drifting import DriftingMujocoEnv
from envs.parameters import DEFAULT_RANGES, PARAMETER_DOCS, PARAMETER_NAMES
from envs.registration import READY_VARIANTS, register_drifting_env, register_ready_variants
from envs.schedules import CHANGE_AT_MODES, DISTRIBUTIONS, SCHEDULE_KINDS, DriftSchedule
from envs.vector import get_vector_state, make_vec, set_vector_state, supports_batched

register_ready_variants()

__all__ = [
    "CHANGE_AT_MODES",
    "DEFAULT_RANGES",
    "DISTRIBUTIONS",
    "PARAMETER_DOCS",
    "PARAMETER_NAMES",
    "READY_VARIANTS",
    "SCHEDULE_KINDS",
    "BatchedMujocoEnv",
    "DriftSchedule",
    "DriftingMujocoEnv",
    "batched_env_ids",
    "get_vector_state",
    "make_vec",
    "register_drifting_env",
    "register_ready_variants",
    "set_vector_state",
    "supports_batched",
]
