"""The experiment layer: configs, the trainer that composes agents and envs, logging, checkpoints, reports.

Nothing is imported here, so ``import rl_plasticity`` and the CLI's ``--help`` stay light.
"""
