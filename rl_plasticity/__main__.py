"""``python -m rl_plasticity``: the same as the ``rl-plasticity`` command."""

import sys

from rl_plasticity.experiment.cli import main

sys.exit(main())
