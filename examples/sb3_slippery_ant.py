"""Stable-Baselines3 PPO on Slippery Ant, with or without continual backprop, logged to TensorBoard.

The paper's PPO settings (2x256 ReLU policy and value networks, rollout 2048, 10 epochs of minibatches
of 128, lr 1e-4, no entropy bonus, value loss weight 1, no value or gradient clipping), in SB3. With
``--cbp`` the run is the paper's PPO+CBP: Adam betas (0.99, 0.99), weight decay 1e-4, and one
ContinualBackprop on each network. The defaults are scaled down to a minute or two; CBP's maturity and
rate are raised accordingly (the paper: 1e-4 and 10,000 updates, i.e. nothing replaced before ~128k steps).

    python examples/sb3_slippery_ant.py              # PPO
    python examples/sb3_slippery_ant.py --cbp        # PPO + CBP
    tensorboard --logdir runs/sb3_slippery_ant       # plasticity/*, cbp/*, env/friction, rollout/*

By default the env owns the friction schedule (a new log-uniform draw every ``--change-every`` steps);
``--trainer-schedule`` hands it to the callback instead (``env_method("set_friction", mu)``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401  (registers SlipperyAnt-v5)
from agents.sb3 import PlasticityCallback, attach_cbp, save_with_cbp


def paper_ppo(env: object, seed: int, with_cbp: bool, log_dir: str) -> PPO:
    # The paper pairs CBP with "proper" Adam and a little weight decay; plain PPO uses Adam's defaults.
    adam = {"betas": (0.99, 0.99), "weight_decay": 1e-4} if with_cbp else {}
    return PPO(
        "MlpPolicy", env, learning_rate=1e-4, n_steps=2048, batch_size=128, n_epochs=10, gamma=0.99,
        gae_lambda=0.95, clip_range=0.2, clip_range_vf=None, ent_coef=0.0, vf_coef=1.0,
        max_grad_norm=1e9,  # SB3 always clips; this never does, as in the paper
        policy_kwargs={"net_arch": {"pi": [256, 256], "vf": [256, 256]}, "activation_fn": torch.nn.ReLU,
                       "optimizer_kwargs": {"eps": 1e-8, **adam}},
        tensorboard_log=log_dir, seed=seed, verbose=1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cbp", action="store_true", help="attach continual backprop to both networks")
    parser.add_argument("--steps", type=int, default=20480, help="env steps (default 10 rollouts)")
    parser.add_argument("--change-every", type=int, default=10240, help="steps between friction draws")
    parser.add_argument("--trainer-schedule", action="store_true",
                        help="let the callback set the friction: 1.0, then 0.1 from step --change-every")
    parser.add_argument("--replacement-rate", type=float, default=3e-4, help="paper: 1e-4")
    parser.add_argument("--maturity", type=int, default=320, help="updates before a unit can be replaced "
                        "(paper: 10000; 160 updates per rollout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default="runs/sb3_slippery_ant")
    parser.add_argument("--save", type=Path, help="save the model (and CBP state) to this path at the end")
    args = parser.parse_args()

    torch.set_num_threads(1)  # batch-1 rollout inference is fastest on one thread
    change_every = 10**12 if args.trainer_schedule else args.change_every
    env = make_vec_env("SlipperyAnt-v5", n_envs=1, seed=args.seed,
                       env_kwargs={"change_every": change_every, "schedule_seed": args.seed})
    model = paper_ppo(env, args.seed, args.cbp, args.logdir)
    cbps = None
    if args.cbp:
        cbps = attach_cbp(model, replacement_rate=args.replacement_rate, maturity_threshold=args.maturity,
                          decay_rate=0.99, utility="contribution", init="lecun")
    schedule = [(0, 1.0), (args.change_every, 0.1)] if args.trainer_schedule else None
    callback = PlasticityCallback(probe_batch_size=1024, friction_schedule=schedule)
    model.learn(args.steps, callback=callback, tb_log_name="ppo_cbp" if args.cbp else "ppo")

    if cbps is not None:
        print(f"CBP replaced units per hidden layer: policy {cbps.policy.replaced_total}, "
              f"value {cbps.value.replaced_total}")
    if args.save is not None:
        if cbps is not None:
            print(f"saved {args.save} and {save_with_cbp(model, args.save, cbps)}")
        else:
            model.save(args.save)
            print(f"saved {args.save}")
    env.close()


if __name__ == "__main__":
    main()
