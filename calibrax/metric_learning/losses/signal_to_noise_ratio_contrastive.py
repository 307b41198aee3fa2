"""SignalToNoiseRatioContrastiveLoss: the contrastive loss on the SNR distance."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from calibrax.core.registry import register
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.snr_distance import SNRDistance
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses.contrastive import ContrastiveLoss
from calibrax.metric_learning.tuples import Reference

__all__ = ["SignalToNoiseRatioContrastiveLoss"]


@register(
    "signal_to_noise_ratio_contrastive_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=loss_example(lambda: SignalToNoiseRatioContrastiveLoss()),
)
class SignalToNoiseRatioContrastiveLoss(ContrastiveLoss):
    r"""Contrastive loss on the signal-to-noise-ratio distance, as pytorch-metric-learning's
    ``SignalToNoiseRatioContrastiveLoss``.

    :class:`~calibrax.metric_learning.ContrastiveLoss` with
    :class:`~calibrax.metric_learning.SNRDistance` (the only distance it accepts):

    .. math::
        L_{pos} = [d_{ap} - m_{pos}]_+, \qquad L_{neg} = [m_{neg} - d_{an}]_+,
        \qquad d_{ap} = \frac{\operatorname{var}(x_a - x_p)}{\operatorname{var}(x_a)}

    each term reduced on its own (default
    :class:`~calibrax.metric_learning.AvgNonZeroReducer`) and the two added. pytorch-metric-learning
    leaves out the paper's regulariser on the embeddings' mean (``embedding_regularizer``), and so
    does this.

    Args:
        pos_margin: Default 0.
        neg_margin: Default 1.
        distance: Default :class:`~calibrax.metric_learning.SNRDistance`.
        reducer: Default :class:`~calibrax.metric_learning.AvgNonZeroReducer`.

    Raises:
        ValueError: If ``distance`` is not an :class:`~calibrax.metric_learning.SNRDistance`.

    References:
        Yuan et al., 2019, "Signal-to-Noise Ratio: A Robust Distance Metric for Deep Metric
        Learning", CVPR, arXiv:1904.02616.
    """

    def __init__(
        self,
        *,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        if distance is not None and not isinstance(distance, SNRDistance):
            raise ValueError(
                f"expected `distance` to be a SNRDistance, got {type(distance).__name__}"
            )
        super().__init__(
            pos_margin=pos_margin, neg_margin=neg_margin, distance=distance, reducer=reducer
        )

    def compute_loss(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        reducer: Any,
        ref: Reference | None = None,
    ) -> jax.Array:
        """The pair loss (against ``ref``'s embeddings when given), NaN when ``embeddings`` or
        the reference embeddings hold NaN/Inf (under jit, where the eager check cannot run,
        masked comparisons would otherwise drop them and give a plausible number)."""
        loss = super().compute_loss(embeddings, labels, indices_tuple, reducer, ref=ref)
        finite = jnp.all(jnp.isfinite(embeddings))
        if ref is not None:
            finite = finite & jnp.all(jnp.isfinite(ref.embeddings))
        return jnp.where(finite, loss, jnp.full_like(loss, jnp.nan))

    def default_distance(self) -> BaseDistance:
        """The SNR distance on normalised embeddings, as in pytorch-metric-learning."""
        return SNRDistance()
