"""Data-parallel training steps over 8 simulated devices equal the same steps on one device.

Each test runs the same steps from the same initial module twice: with the batch split over 8
devices (tests/conftest.py simulates them) and on a 1-device mesh. XLA splits the batch sums of
the forward and backward passes over the devices and all-reduces them, which reassociates float32
sums: parameters and losses agree to 1e-6 (relative and absolute; the heads move by ~1e-2 per
step, so a wrong gradient or a missing reduction shows up far above that).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from calibrax.learned import LPIPS
from calibrax.learned import LPIPSTrainer
from calibrax.learned import ranking_loss
from calibrax.learned._toy import ToyTrunk
from calibrax.metric_learning import ArcFaceLoss
from calibrax.metric_learning import TripletMarginLoss
from calibrax.metric_learning import TripletMarginMiner
from calibrax.parallel import data_mesh
from calibrax.parallel import data_parallel_train_step

STEPS = 3
TOL = 1e-6


@pytest.fixture(scope="module")
def meshes():
    assert len(jax.devices()) >= 8, "tests/conftest.py simulates 8 CPU devices"
    return data_mesh(jax.devices()[:8]), data_mesh(jax.devices()[:1])


def _params(module):
    return {
        "/".join(map(str, path)): np.asarray(v[...])
        for path, v in nnx.iter_graph(module)
        if isinstance(v, nnx.Param)
    }


def _run(make, loss_fn, tx, batches, mesh):
    module = make()
    optimizer = nnx.Optimizer(module, tx, wrt=nnx.Param)
    step = data_parallel_train_step(loss_fn, mesh)
    history = [step(module, optimizer, batch) for batch in batches]
    losses = np.array([float(loss) for loss, _ in history])
    return module, losses, history


def _assert_same_training(make, loss_fn, tx, batches, meshes, param_tol=TOL):
    eight, one = meshes
    initial = _params(make())
    m8, losses8, hist8 = _run(make, loss_fn, tx, batches, eight)
    m1, losses1, hist1 = _run(make, loss_fn, tx, batches, one)
    np.testing.assert_allclose(losses8, losses1, rtol=TOL, atol=TOL)
    p8, p1 = _params(m8), _params(m1)
    assert p8.keys() == p1.keys() == initial.keys()
    for key in p1:
        np.testing.assert_allclose(p8[key], p1[key], rtol=param_tol, atol=param_tol, err_msg=key)
        assert not np.allclose(p1[key], initial[key]), f"{key} was not trained"
    # The parameters stay replicated on all 8 devices after the update.
    for _, var in nnx.iter_graph(m8):
        if isinstance(var, nnx.Param):
            assert var[...].sharding.is_fully_replicated
            assert len(var[...].sharding.device_set) == 8
    for (_, aux8), (_, aux1) in zip(hist8, hist1, strict=True):
        for key in aux1:
            np.testing.assert_allclose(float(aux8[key]), float(aux1[key]), rtol=TOL, atol=TOL)
    return m8, losses8


# --------------------------------------------------------------------------- LPIPS heads
def _lpips_trainer():
    model = LPIPS(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False, normalize=True)
    return LPIPSTrainer(model, rngs=nnx.Rngs(1))


def _lpips_loss(trainer, batch):
    d0 = trainer.model.distance(batch["ref"], batch["p0"])
    d1 = trainer.model.distance(batch["ref"], batch["p1"])
    return ranking_loss(trainer.ranker, d0, d1, batch["judge"]), {"mean_d0": jnp.mean(d0)}


def test_lpips_heads_train_the_same_on_eight_devices(meshes):
    # Random 2AFC triplets (patches in [0, 1], judgments in [0, 1]): the steps only need to agree.
    rng = np.random.default_rng(0)
    batches = [
        {
            **{
                k: rng.uniform(size=(16, 16, 16, 3)).astype(np.float32) for k in ("ref", "p0", "p1")
            },
            "judge": rng.uniform(size=16).astype(np.float32),
        }
        for _ in range(STEPS)
    ]
    # Adam with lr 3e-2, beta1 0.5 (the LPIPS recipe's beta1): some heads reach 0 and are clamped
    # by `project`, which the step must run on every device.
    # Parameters to 1e-4: the 8-device gradient is the 1-device one summed in another order
    # (float32), and Adam divides each coordinate by its own gradient scale, which turns a
    # rounding-level difference of a near-zero coordinate into a visible one (measured 3.4e-6
    # absolute, 1.9e-5 relative, on 2 of 160 ranker weights; 0 before on another CPU). A wrong
    # reduction (a mean taken twice, a device's rows dropped) moves them by far more than 1e-4.
    model, _ = _assert_same_training(
        _lpips_trainer, _lpips_loss, optax.adam(3e-2, b1=0.5), batches, meshes, param_tol=1e-4
    )
    for head in model.model.heads:
        assert np.all(np.asarray(head.weight[...]) >= 0.0)


# --------------------------------------------------------------------------- metric learning
class Embedder(nnx.Module):
    """A linear embedding trained with a mined triplet loss plus ArcFace's class weights."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.linear = nnx.Linear(6, 4, rngs=rngs)
        self.arcface = ArcFaceLoss(4, 4, margin=10.0, scale=8.0, rngs=rngs)
        self.triplet = TripletMarginLoss(margin=0.2)


MINER = TripletMarginMiner(margin=0.3, type_of_triplets="semihard")


def _metric_learning_loss(model, batch):
    # The miner and the loss see the whole (global) batch, so triplets whose rows live on
    # different devices count: per-device losses would not equal the one-device loss.
    embeddings = model.linear(batch["x"])
    labels = batch["labels"]
    triplet = model.triplet(embeddings, labels, MINER(embeddings, labels))
    arcface = model.arcface(embeddings, labels)
    return triplet + arcface, {"triplet": triplet, "arcface": arcface}


def _metric_learning_batches():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6))
    out = []
    for _ in range(STEPS):
        labels = rng.integers(0, 4, size=32).astype(np.int32)
        x = (centres[labels] + 0.8 * rng.normal(size=(32, 6))).astype(np.float32)
        out.append({"x": x, "labels": labels})
    return out


def test_triplet_with_miner_and_arcface_train_the_same_on_eight_devices(meshes):
    _, losses = _assert_same_training(
        lambda: Embedder(rngs=nnx.Rngs(0)),
        _metric_learning_loss,
        optax.sgd(0.1),
        _metric_learning_batches(),
        meshes,
    )
    assert np.all(np.isfinite(losses))


# --------------------------------------------------------------------------- bad input
def test_train_step_rejects_bad_input(meshes):
    eight, _ = meshes
    model = Embedder(rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    step = data_parallel_train_step(_metric_learning_loss, eight)
    batch = _metric_learning_batches()[0]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `labels` to have a batch size divisible by 8 (the devices on mesh axis "
            "'data'), got 12"
        ),
    ):
        step(model, optimizer, {"x": batch["x"][:12], "labels": batch["labels"][:12]})
    with pytest.raises(
        ValueError, match=re.escape("expected `labels` to be non-empty, got shape (0,)")
    ):
        step(model, optimizer, {"x": batch["x"][:0], "labels": batch["labels"][:0]})
    with pytest.raises(
        ValueError, match=re.escape("expected `batch` to hold at least one array, got none")
    ):
        step(model, optimizer, {})
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `optimizer` to be an nnx.Optimizer, got GradientTransformationExtraArgs"
        ),
    ):
        step(model, optax.sgd(0.1), batch)
    with pytest.raises(
        ValueError, match=re.escape("expected `axis_name` to be one of 'data', got 'batch'")
    ):
        data_parallel_train_step(_metric_learning_loss, eight, axis_name="batch")
    with pytest.raises(TypeError, match=re.escape("expected `loss_fn` to be callable, got str")):
        data_parallel_train_step("loss", eight)
    with pytest.raises(
        TypeError, match=re.escape("expected `mesh` to be a jax.sharding.Mesh, got NoneType")
    ):
        data_parallel_train_step(_metric_learning_loss, None)
    # Nothing was trained by the rejected calls.
    np.testing.assert_array_equal(
        np.asarray(model.linear.kernel[...]),
        np.asarray(Embedder(rngs=nnx.Rngs(0)).linear.kernel[...]),
    )
