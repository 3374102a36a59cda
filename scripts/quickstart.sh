#!/usr/bin/env bash
# The main job on a fresh machine: install rl-plasticity, train standard PPO and PPO+CBP on Slippery
# Hopper over 2 seeds each (one run per core), then write the comparison report. About 6 minutes on a
# 2-core laptop. Run it again after an interruption: finished runs are skipped, the others resume.
# Arguments go to `rl-plasticity compare`; LOGDIR picks the output directory, e.g. the paper's Ant:
#   LOGDIR=runs/quickstart_ant bash scripts/quickstart.sh --set env.id=SlipperyAnt-v5
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet -e .

LOGDIR=${LOGDIR:-runs/quickstart}
python3 -m rl_plasticity compare configs/quickstart/ppo.yaml configs/quickstart/cbp.yaml \
    --seeds 2 --logdir "$LOGDIR" "$@"
python3 -m rl_plasticity report "$LOGDIR" --out "$LOGDIR/report"

cat <<MESSAGE

Results in $LOGDIR/:
  ppo/seed{0,1}/  standard PPO          cbp/seed{0,1}/  PPO + continual backprop
  each holds the TensorBoard events, the resolved config.yaml, checkpoints/ and train.log.
  report/report.png  return with 95% bands, friction changes, dormant units, rank, weights, replacements
  report/report.md   per-config table (return at the end of each friction segment, final return, AUC)

Open TensorBoard to overlay all four runs:
  tensorboard --logdir $LOGDIR        # then browse http://localhost:6006
Look at charts/episodic_return against env/friction, plasticity/*/layer*/dormant_fraction and
approx_rank, and cbp/*/layer*/replaced.
MESSAGE
