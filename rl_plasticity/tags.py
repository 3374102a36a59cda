"""Every TensorBoard tag rl-plasticity writes or reads, in one place: the trainer's logger and the SB3
callback write them, `rl_plasticity.experiment.runs` and the report read them.

Every scalar's step is the global env step, so runs of different configs overlay. Tags:

- ``charts/{episodic_return,episodic_length,SPS,learning_rate}`` (CleanRL's names)
- ``losses/{policy_loss,value_loss,entropy,approx_kl,clipfrac,explained_variance}``
- ``env/<parameter>`` for each drifting physics parameter (``env/friction``, ``env/gravity``, ...)
- ``plasticity/{policy,value}/layer{k}/{dormant_fraction,inactive_fraction,approx_rank,effective_rank,
  weight_magnitude,feature_norm}``, ``plasticity/{policy,value}/grad_norm`` (mean over the update's
  minibatches, before clipping) and ``plasticity/{policy,value}/weight_change`` (L2 norm of the update's
  parameter change)
- ``cbp/{policy,value}/layer{k}/replaced`` (cumulative; 0 without CBP) and the histograms
  ``cbp/{policy,value}/layer{k}/utility``
- ``methods/<method>/{policy,value}/<statistic>`` for every other plasticity method attached (its
  ``statistics()``: ``reset_total`` for ReDo, ``penalty`` for L2-Init, ``clipped`` for weight clipping, ...)
- the text ``hyperparameters``: every config key as a Markdown table

Readers match over layers with the ``*_pattern`` functions (regular expressions, for ``re.fullmatch``).
"""

from __future__ import annotations

NETWORKS = ("policy", "value")

EPISODIC_RETURN = "charts/episodic_return"
EPISODIC_LENGTH = "charts/episodic_length"
STEPS_PER_SECOND = "charts/SPS"
LEARNING_RATE = "charts/learning_rate"
HYPERPARAMETERS = "hyperparameters"
LOSSES = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance")

ENV_PREFIX = "env/"
ANY_NETWORK = "(?:policy|value)"


def loss(name: str) -> str:
    return f"losses/{name}"


def env_parameter(name: str) -> str:
    """``env/<name>``: the value of a drifting physics parameter (e.g. friction)."""
    return f"{ENV_PREFIX}{name}"


def plasticity(network: str, metric: str, layer: int | None = None) -> str:
    """``plasticity/<network>/layer<k>/<metric>`` for a per-layer metric, or
    ``plasticity/<network>/<metric>`` for a whole-network one (``grad_norm``, ``weight_change``)."""
    where = network if layer is None else f"{network}/layer{layer}"
    return f"plasticity/{where}/{metric}"


def cbp_replaced(network: str, layer: int) -> str:
    return f"cbp/{network}/layer{layer}/replaced"


def cbp_utility(network: str, layer: int) -> str:
    return f"cbp/{network}/layer{layer}/utility"


def method_statistic(method: str, network: str, statistic: str) -> str:
    return f"methods/{method}/{network}/{statistic}"


def method_statistics_pattern(method: str = r"[^/]+", network: str = ANY_NETWORK) -> str:
    """Matches every `method_statistic` of ``method`` on ``network`` (any of either by default)."""
    return rf"methods/{method}/{network}/[^/]+"


def plasticity_layers_pattern(network: str, metric: str) -> str:
    """Matches `plasticity` for every hidden layer of ``network`` (a name, or `ANY_NETWORK`)."""
    return rf"plasticity/{network}/layer\d+/{metric}"


def cbp_replaced_pattern(network: str = ANY_NETWORK) -> str:
    """Matches `cbp_replaced` for every hidden layer of ``network`` (both networks by default)."""
    return rf"cbp/{network}/layer\d+/replaced"
