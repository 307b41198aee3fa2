"""Parity of the class-weight losses with pytorch-metric-learning 2.9 (torch CPU).

The class weights/proxies of a freshly built pytorch-metric-learning loss are copied into ours (same
layout: ``W`` is (embedding_size, num_classes) for the softmax losses, ``proxies`` is (num_classes,
embedding_size)), then the loss and its gradients with respect to the embeddings and to the weights
are compared on batches that exercise the edge cases: classes with a single sample and absent
classes, a batch of one class, duplicate embeddings, a batch of one, embeddings opposite their
class weight (ArcFace's monotonic branch), non-default hyperparameters and other reducers.

Tolerances: the loss to 1e-5 relative and gradients to 1e-4 relative (plus 1e-4 of the largest
gradient entry, for entries near zero). Both sides evaluate the same formulas in the same dtype, so
the differences are rounding only: ~1e-15 in float64 and ~1e-7 in float32 (measured), far inside
these bounds, which are the acceptance bounds of the spec.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_reducers = pytest.importorskip("pytorch_metric_learning.reducers")

from calibrax.metric_learning.losses.arcface import ArcFaceLoss  # noqa: E402
from calibrax.metric_learning.losses.cosface import CosFaceLoss  # noqa: E402
from calibrax.metric_learning.losses.normalized_softmax import NormalizedSoftmaxLoss  # noqa: E402
from calibrax.metric_learning.losses.proxy_anchor import ProxyAnchorLoss  # noqa: E402
from calibrax.metric_learning.losses.proxy_nca import ProxyNCALoss  # noqa: E402
from calibrax.metric_learning.losses.subcenter_arcface import SubCenterArcFaceLoss  # noqa: E402
from calibrax.metric_learning.reducers import MeanReducer  # noqa: E402
from calibrax.metric_learning.reducers import SumReducer  # noqa: E402

NUM_CLASSES = 6
EMBEDDING_SIZE = 8


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    ours: Any
    theirs: Any
    attr: str
    ours_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    theirs_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


SPECS = [
    Spec("arcface", ArcFaceLoss, pml_losses.ArcFaceLoss, "W"),
    Spec(
        "arcface_m40_s30",
        ArcFaceLoss,
        pml_losses.ArcFaceLoss,
        "W",
        {"margin": 40.0, "scale": 30.0},
        {"margin": 40.0, "scale": 30.0},
    ),
    Spec(
        "arcface_sum",
        ArcFaceLoss,
        pml_losses.ArcFaceLoss,
        "W",
        {"reducer": SumReducer()},
        {"reducer": pml_reducers.SumReducer()},
    ),
    Spec("cosface", CosFaceLoss, pml_losses.CosFaceLoss, "W"),
    Spec(
        "cosface_m02_s16",
        CosFaceLoss,
        pml_losses.CosFaceLoss,
        "W",
        {"margin": 0.2, "scale": 16.0},
        {"margin": 0.2, "scale": 16.0},
    ),
    Spec("subcenter_arcface", SubCenterArcFaceLoss, pml_losses.SubCenterArcFaceLoss, "W"),
    Spec(
        "subcenter_arcface_k2",
        SubCenterArcFaceLoss,
        pml_losses.SubCenterArcFaceLoss,
        "W",
        {"sub_centers": 2, "margin": 20.0, "scale": 32.0},
        {"sub_centers": 2, "margin": 20.0, "scale": 32.0},
    ),
    Spec("proxy_nca", ProxyNCALoss, pml_losses.ProxyNCALoss, "proxies"),
    Spec(
        "proxy_nca_s8",
        ProxyNCALoss,
        pml_losses.ProxyNCALoss,
        "proxies",
        {"softmax_scale": 8.0},
        {"softmax_scale": 8.0},
    ),
    Spec("proxy_anchor", ProxyAnchorLoss, pml_losses.ProxyAnchorLoss, "proxies"),
    Spec(
        "proxy_anchor_m02_a16",
        ProxyAnchorLoss,
        pml_losses.ProxyAnchorLoss,
        "proxies",
        {"margin": 0.2, "alpha": 16.0},
        {"margin": 0.2, "alpha": 16.0},
    ),
    Spec(
        "proxy_anchor_mean",
        ProxyAnchorLoss,
        pml_losses.ProxyAnchorLoss,
        "proxies",
        {"reducer": MeanReducer()},
        {"reducer": pml_reducers.MeanReducer()},
    ),
    Spec("normalized_softmax", NormalizedSoftmaxLoss, pml_losses.NormalizedSoftmaxLoss, "W"),
    Spec(
        "normalized_softmax_t02",
        NormalizedSoftmaxLoss,
        pml_losses.NormalizedSoftmaxLoss,
        "W",
        {"temperature": 0.2},
        {"temperature": 0.2},
    ),
]


def _class_vectors(weights: np.ndarray, attr: str, spec: Spec) -> np.ndarray:
    """One weight vector per class, shape (num_classes, embedding_size)."""
    if attr == "proxies":
        return weights
    sub_centers = spec.ours_kwargs.get("sub_centers", 3) if spec.ours is SubCenterArcFaceLoss else 1
    return weights.T[::sub_centers]


def _batch(case: str, class_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(sum(map(ord, case)))
    if case == "mixed":
        # class 2 and 4 have one sample each, class 5 none
        labels = np.array([0, 0, 3, 1, 1, 2, 3, 4])
    elif case == "one_class":
        labels = np.full(8, 2)
    elif case == "duplicates":
        labels = np.array([0, 1, 1, 3, 0, 1, 1, 3])
    elif case == "single":
        labels = np.array([4])
    elif case == "opposite":
        labels = np.array([0, 1, 2, 3, 4, 5, 0, 1])
    else:
        raise AssertionError(case)
    embeddings = rng.normal(size=(labels.size, EMBEDDING_SIZE)) * rng.uniform(0.5, 3.0)
    if case == "duplicates":
        embeddings[4:] = embeddings[:4]
    if case == "opposite":
        # Angles near 180 degrees from the own class, where ArcFace switches to its monotonic
        # branch cos(theta) - m sin(m).
        embeddings = -class_vectors[labels] + 0.05 * embeddings
    return embeddings, labels


CASES = ["mixed", "one_class", "duplicates", "single", "opposite"]
DEFAULTS = {
    "arcface",
    "cosface",
    "subcenter_arcface",
    "proxy_nca",
    "proxy_anchor",
    "normalized_softmax",
}
# Every edge case in float64 with the default hyperparameters, the other settings on two batches,
# and float32 on the mixed batch with the defaults (kept small: each combination costs seconds of
# op-by-op compilation).
PARAMS = [
    pytest.param(spec, case, dtype, id=f"{spec.name}-{case}-{dtype}")
    for spec in SPECS
    for case in CASES
    for dtype in ("float64", "float32")
    if (dtype == "float32" and case == "mixed" and spec.name in DEFAULTS)
    or (dtype == "float64" and (spec.name in DEFAULTS or case in ("mixed", "one_class")))
]


@pytest.mark.parametrize(("spec", "case", "dtype"), PARAMS)
def test_matches_pytorch_metric_learning(spec: Spec, case: str, dtype: str) -> None:
    torch.manual_seed(0)
    theirs = spec.theirs(
        num_classes=NUM_CLASSES, embedding_size=EMBEDDING_SIZE, **spec.theirs_kwargs
    )
    theirs = theirs.double() if dtype == "float64" else theirs.float()
    weights = getattr(theirs, spec.attr).detach().numpy()
    embeddings, labels = _batch(case, _class_vectors(weights, spec.attr, spec))
    embeddings = embeddings.astype(dtype)

    emb_t = torch.tensor(embeddings, requires_grad=True)
    loss_t = theirs(emb_t, torch.tensor(labels))
    loss_t.backward()

    ours = spec.ours(
        NUM_CLASSES,
        EMBEDDING_SIZE,
        param_dtype=jnp.dtype(dtype),
        rngs=nnx.Rngs(0),
        **spec.ours_kwargs,
    )
    assert getattr(ours, spec.attr)[...].shape == weights.shape
    getattr(ours, spec.attr)[...] = jnp.asarray(weights)

    def loss_fn(embeddings: Any, model: Any) -> Any:
        return model(embeddings, jnp.asarray(labels))

    loss, (grad_emb, grad_model) = nnx.value_and_grad(loss_fn, argnums=(0, 1))(
        jnp.asarray(embeddings), ours
    )
    assert loss.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(float(loss), loss_t.item(), rtol=1e-5)

    ref_emb_grad = emb_t.grad.numpy()
    ref_w_grad = getattr(theirs, spec.attr).grad.numpy()
    for got, want in [(grad_emb, ref_emb_grad), (getattr(grad_model, spec.attr)[...], ref_w_grad)]:
        np.testing.assert_allclose(
            np.asarray(got), want, rtol=1e-4, atol=1e-4 * max(np.abs(want).max(), 1e-30)
        )


@pytest.mark.parametrize("threshold", [75.0, 40.0])
def test_subcenter_get_outliers_matches(threshold: float) -> None:
    torch.manual_seed(1)
    theirs = pml_losses.SubCenterArcFaceLoss(
        num_classes=NUM_CLASSES, embedding_size=EMBEDDING_SIZE
    ).double()
    weights = theirs.W.detach().numpy()
    rng = np.random.default_rng(3)
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 3, 3, 3, 0, 1, 2, 2])  # classes 4, 5 absent
    # Samples near sub-centre 1 of their class (so a dominant centre exists), a few random ones.
    embeddings = weights.T[labels * 3 + 1] + 0.3 * rng.normal(size=(labels.size, EMBEDDING_SIZE))
    embeddings[[3, 9, 12]] = rng.normal(size=(3, EMBEDDING_SIZE))

    want_outliers, want_centers = theirs.get_outliers(
        torch.tensor(embeddings), torch.tensor(labels), threshold=threshold
    )
    ours = SubCenterArcFaceLoss(
        NUM_CLASSES, EMBEDDING_SIZE, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
    ours.W[...] = jnp.asarray(weights)
    outliers, centers = ours.get_outliers(
        jnp.asarray(embeddings), jnp.asarray(labels), threshold=threshold
    )
    np.testing.assert_array_equal(
        np.flatnonzero(np.asarray(outliers)), np.sort(want_outliers.numpy())
    )
    present = np.unique(labels)
    # Exact: both pick columns of the same weight matrix.
    np.testing.assert_array_equal(np.asarray(centers)[:, present], want_centers.numpy()[:, present])
    np.testing.assert_array_equal(np.asarray(centers)[:, [4, 5]], 0.0)
