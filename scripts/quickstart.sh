#!/usr/bin/env bash
# The main job on a fresh machine: install rl-plasticity, then show loss of plasticity and its fix.
# Standard PPO and the paper's PPO+CBP train on Slippery Hopper whose friction alternates 2.0 / 0.2 every
# 50k steps (configs/plasticity_demo/), 3 seeds each, two runs at a time, for the first 300k of the
# protocol's 1M steps (6 of its 20 visits); then `report` measures how well each agent still does on
# frictions it has already learned (retention). About 6 minutes on 2 cores.
# Run it again after an interruption: finished runs are skipped, the others resume.
# Arguments go to `rl-plasticity compare` (e.g. --seeds 5); LOGDIR picks the output directory.
# The full protocol (1M steps, 10 seeds of PPO and PPO+CBP, ~72 minutes on 2 cores):
#   rl-plasticity compare configs/plasticity_demo/{ppo,paper_cbp}.yaml --seeds 10 --logdir runs/plasticity_demo
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
