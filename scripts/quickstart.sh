#!/usr/bin/env bash
# The main job on a fresh machine: install rl-plasticity, then show loss of plasticity and its fix.
# Standard PPO and the paper's PPO+CBP train on Slippery Hopper whose friction alternates 2.0 / 0.2 every
# 50k steps (configs/plasticity_demo/), 3 seeds each, two runs at a time, for 300k steps (6 visits, 3 of
# each friction; the presets run 1M); then `report` measures how well each agent still does on frictions
# it has already learned (retention). About 6 minutes on 2 cores.
# Run it again after an interruption: finished runs are skipped, the others resume.
# Arguments go to `rl-plasticity compare` (e.g. --seeds 10: the protocol); LOGDIR picks the output directory.
# The protocol (the same 300k steps at 10 seeds of PPO and PPO+CBP, ~20 minutes on 2 cores):
#   rl-plasticity compare configs/plasticity_demo/{ppo,paper_cbp}.yaml --seeds 10 --total-steps 300000 \
#       --logdir runs/plasticity_demo
# and its long view, the presets' full 1M steps (~72 minutes): the same without --total-steps.
# (the other files there are the other methods: benchmarks/methods.py --ranking, docs/methods.md)
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet -c constraints.txt -e .

LOGDIR=${LOGDIR:-runs/quickstart}
python3 -m rl_plasticity compare configs/plasticity_demo/ppo.yaml configs/plasticity_demo/paper_cbp.yaml \
    --seeds 3 --total-steps 300000 --logdir "$LOGDIR" "$@"
python3 -m rl_plasticity report "$LOGDIR" --out "$LOGDIR/report"

cat <<MESSAGE

Results in $LOGDIR/:
  ppo/seed{0,1,2}/        standard PPO     paper_cbp/seed{0,1,2}/   PPO + continual backprop (the paper's)
  each holds the TensorBoard events, the resolved config.yaml, checkpoints/ and train.log.
  report/report.md   retention (last visits / first visits of the same frictions) with bootstrap and IQM
                     intervals, the return at the end of every visit, plasticity of both networks
  report/report.png  return, return per visit, dormant units, rank, weights, weight change, replacements

Open TensorBoard to overlay the runs:
  tensorboard --logdir $LOGDIR        # then browse http://localhost:6006
Look at charts/episodic_return against env/friction, plasticity/*/layer*/dormant_fraction and
approx_rank, and cbp/*/layer*/replaced.
MESSAGE
