#!/usr/bin/env bash
# The main job on a fresh machine: install rl-plasticity, then train standard PPO and PPO+CBP side by
# side (one per core) on Slippery Hopper into runs/quickstart/. About 4 minutes on a 2-core laptop.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet -e .

LOGDIR=runs/quickstart
mkdir -p "$LOGDIR"
echo "Training PPO (progress below) and PPO+CBP (progress in $LOGDIR/cbp.log) at the same time..."
python3 -m rl_plasticity train configs/quickstart/cbp.yaml --logdir "$LOGDIR" --overwrite \
    > "$LOGDIR/cbp.log" 2>&1 &
cbp_pid=$!
# A background job ignores Ctrl-C in a script: stop it with the script.
trap 'kill "$cbp_pid" 2>/dev/null || true' EXIT

python3 -m rl_plasticity train configs/quickstart/ppo.yaml --logdir "$LOGDIR" --overwrite
if ! wait "$cbp_pid"; then
    echo "PPO+CBP failed; its output is in $LOGDIR/cbp.log" >&2
    exit 1
fi
trap - EXIT
echo
echo "PPO+CBP: $(grep '^done:' "$LOGDIR/cbp.log")"
cat <<MESSAGE

Results:
  $LOGDIR/ppo/seed0/   standard PPO
  $LOGDIR/cbp/seed0/   PPO + continual backprop
  each holds the TensorBoard events, the resolved config.yaml and checkpoints/.

Open TensorBoard and compare the two runs:
  tensorboard --logdir $LOGDIR        # then browse http://localhost:6006
Look at charts/episodic_return against env/friction, plasticity/policy/layer1/dormant_fraction,
plasticity/*/layer*/approx_rank and cbp/*/layer*/replaced.
MESSAGE
