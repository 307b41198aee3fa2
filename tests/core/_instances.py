"""Instances of registered metrics and losses for the protocol and lifecycle tests.

Every entry is built with its defaults unless :data:`KWARGS` names it. An entry that cannot be
built is a test failure that says what to add here, never a silent skip.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calibrax import registry


@functools.cache
def _backbone() -> Any:
    # Its four eager ``jax.random.normal`` draws each compile (~7 s apiece on a busy machine), so
    # the structure comes from ``nnx.eval_shape`` and the values from numpy: the state checks do
    # not depend on the weights. Built once and shared; the metrics never write frozen weights.
    from calibrax.metrics.random_backbone import RandomConvBackbone

    graphdef, state = nnx.split(nnx.eval_shape(lambda: RandomConvBackbone(rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)
    state = jax.tree.map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(s.dtype) / 3), state
    )
    return nnx.merge(graphdef, state)


def _small_backbone() -> dict[str, Any]:
    # The default backbone loads 17 MB of pretrained weights; the protocol and state checks only
    # need the structure, which a small random frozen backbone has too.
    return {"backbone": _backbone()}


def _buffered(**extra: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {**_small_backbone(), "max_samples": 16, **extra}


def _unit_range() -> dict[str, Any]:
    return {"data_range": 1.0}


def _three_classes() -> dict[str, Any]:
    return {"num_classes": 3}


def _classifier_loss() -> dict[str, Any]:
    return {"num_classes": 3, "embedding_size": 4, "rngs": nnx.Rngs(0)}


KWARGS: dict[str, Callable[[], dict[str, Any]]] = {
    "FrechetDistance": _small_backbone,
    "InceptionScore": _buffered(),
    "KernelDistance": _buffered(subset_size=4),
    "PrecisionRecall": _buffered(),
    "StreamingRetrieval": lambda: {"max_samples": 16, "dim": 4},
    **dict.fromkeys(
        ["PSNR", "SSIM", "MSSSIM", "StreamingPSNR", "StreamingSSIM", "StreamingMSSSIM"],
        _unit_range,
    ),
    **dict.fromkeys(
        [
            "arcface_loss",
            "cosface_loss",
            "normalized_softmax_loss",
            "proxy_anchor_loss",
            "proxy_nca_loss",
            "subcenter_arcface_loss",
        ],
        _classifier_loss,
    ),
    **dict.fromkeys(
        [
            "F1Score",
            "Precision",
            "Recall",
            "StreamingConfusionMatrix",
            "StreamingF1Score",
            "StreamingPrecision",
            "StreamingRecall",
        ],
        _three_classes,
    ),
    # Class-weight losses of issue 16 (PML 2.9 names; P2SGrad keeps PML's argument names).
    **dict.fromkeys(
        ["large_margin_softmax_loss", "soft_triple_loss", "sphereface_loss"], _classifier_loss
    ),
    "p2s_grad_loss": lambda: {"descriptors_dim": 4, "num_classes": 3, "rngs": nnx.Rngs(0)},
    "CMMD": _buffered(),
    "ranked_list_loss": lambda: {"margin": 0.4, "Tn": 1.0},
    "manifold_loss": lambda: {"l": 4, "rngs": nnx.Rngs(0)},
    "cross_batch_memory": lambda: {"loss": _contrastive(), "embedding_size": 4, "memory_size": 8},
    "self_supervised_loss": lambda: {"loss": _contrastive()},
    "multiple_losses": lambda: {"losses": [_contrastive()]},
}


def _contrastive() -> Any:
    from calibrax.metric_learning import ContrastiveLoss

    return ContrastiveLoss()


def names(kind: str) -> list[str]:
    """Names of the registered entries of ``kind``."""
    return registry.names(kind=kind)


def construct(name: str) -> Any:
    """The registered object ``name`` built with its defaults or its :data:`KWARGS`."""
    entry = registry.get_entry(name)
    kwargs = KWARGS.get(name, dict)()
    try:
        return entry.obj(**kwargs)
    except TypeError as err:
        raise AssertionError(
            f"cannot build registered {entry.kind} {name!r} with {sorted(kwargs)}: {err}; "
            "add its constructor arguments to KWARGS in tests/core/_instances.py"
        ) from err
