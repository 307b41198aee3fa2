"""Training learned metrics with optax: a generic loop and the LPIPS recipe.

:func:`fit` trains the ``nnx.Param`` leaves of any module on any loss, with a jitted step, an
optional projection after every step, a per-epoch history, Orbax checkpoints with resume, and a
tqdm progress bar. :func:`train_lpips` is the LPIPS recipe of Zhang et al. (2018) on top of it.

Determinism: the example order of epoch ``e`` is ``np.random.default_rng([seed, e])``'s
permutation, and nothing else is random after construction, so a run stopped after any epoch and
resumed from its checkpoint ends exactly where an uninterrupted run does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from calibrax.core import checks
from calibrax.core.protocols import DatasetProtocol
from calibrax.core.state import TunedWeight
from calibrax.learned.dists import DISTS
from calibrax.learned.evaluation import two_afc_score
from calibrax.learned.lpips import LPIPS
from calibrax.learned.ranking import RankingHead
from calibrax.learned.ranking import ranking_loss

__all__ = [
    "LPIPSTrainer",
    "evaluate_2afc",
    "fit",
    "lpips_schedule",
    "plot_history",
    "train_dists",
    "train_lpips",
]

LossFn = Callable[[nnx.Module, dict[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]


def _batches(dataset: DatasetProtocol, batch_size: int, order: np.ndarray):
    # Fixed-size batches only (the remainder is dropped) so the jitted step compiles once.
    for start in range(0, len(order) - batch_size + 1, batch_size):
        items = [dataset[int(i)] for i in order[start : start + batch_size]]
        yield {k: jnp.asarray(np.stack([np.asarray(it[k]) for it in items])) for k in items[0]}


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is an optional extra
        return None
    return tqdm(total=total, desc=desc, leave=False, disable=None)  # terminal only


class _TrainingState(nnx.Module):
    """What a training checkpoint holds: the module and its optimizer's state."""

    def __init__(self, module: nnx.Module, optimizer: nnx.Optimizer) -> None:
        self.module = module
        self.optimizer = optimizer


def fit(
    module: nnx.Module,
    loss_fn: LossFn,
    dataset: DatasetProtocol,
    *,
    tx: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    eval_fn: Callable[[nnx.Module], dict[str, float]] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train the ``nnx.Param`` leaves of ``module`` on ``loss_fn`` over ``dataset``.

    Frozen weights (:class:`~calibrax.core.FrozenWeight`) are not parameters and never change; a
    trunk unfrozen with :func:`calibrax.backbones.unfreeze` (or ``LPIPS(tune=True)``) holds
    :class:`~calibrax.core.TunedWeight` parameters and is trained with everything else. Checkpoints
    hold the whole module, tuned trunk included, and its optimizer state.

    Args:
        module: The module to train; if it has a ``project()`` method it is called after every
            optimizer step (e.g. to keep heads non-negative).
        loss_fn: ``loss_fn(module, batch) -> (loss, aux)``, ``aux`` a dict of scalars averaged
            into the history.
        dataset: Indexable examples (dicts of arrays), ``DatasetProtocol``.
        tx: The optax transformation.
        epochs: Number of epochs in the run (also the step count of a resumed run's schedule).
        batch_size: Examples per step; the last incomplete batch of an epoch is dropped.
        seed: Seed of the example order.
        eval_fn: Called after every epoch; its values join the history.
        checkpoint_dir: If given, the module and optimizer state are saved there after every
            epoch (Orbax), and with ``resume`` a run continues after the latest saved epoch.
        resume: Continue from the latest checkpoint in ``checkpoint_dir`` when there is one.
        stop_after: Stop after this many epochs of this call (to simulate an interruption).
        progress: Show a tqdm progress bar.

    Returns:
        The history: ``{"epoch": [...], "loss": [...], <aux keys>..., <eval keys>...}``.

    Raises:
        ValueError: If ``epochs`` or ``batch_size`` is not positive, or the dataset has fewer
            examples than one batch.
    """
    checks.check_positive_int(epochs, "epochs")
    checks.check_positive_int(batch_size, "batch_size")
    if len(dataset) < batch_size:
        raise ValueError(
            f"expected the dataset to hold at least one batch ({batch_size} examples), "
            f"got {len(dataset)}"
        )
    optimizer = nnx.Optimizer(module, tx, wrt=nnx.Param)
    project = getattr(module, "project", None)

    @nnx.jit
    def step(module, optimizer, batch):
        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(module, batch)
        # optax mixes Python floats with its int32 step count (Adam's bias correction), which
        # strict dtype promotion rejects; the promotion it relies on is the standard one.
        with jax.numpy_dtype_promotion("standard"):
            optimizer.update(module, grads)
        if project is not None:
            module.project()
        return loss, aux

    history: dict[str, list[float]] = {"epoch": [], "loss": []}
    start_epoch = 0
    manager = None
    if checkpoint_dir is not None:
        from calibrax.io.checkpoint import CheckpointManager

        manager = CheckpointManager(checkpoint_dir, max_to_keep=2)
        latest = manager.latest_step() if resume else None
        if latest is not None:
            # Restores in place: the trained parameters and the optimizer state together.
            manager.restore(_TrainingState(module, optimizer), step=latest)
            history = manager.read_metadata(latest)["metadata"]["history"]
            start_epoch = latest

    ran = 0
    for epoch in range(start_epoch, epochs):
        if stop_after is not None and ran >= stop_after:
            break
        order = np.random.default_rng([seed, epoch]).permutation(len(dataset))
        n_steps = len(dataset) // batch_size
        bar = _progress(n_steps, f"epoch {epoch + 1}/{epochs}", progress)
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        for batch in _batches(dataset, batch_size, order):
            loss, aux = step(module, optimizer, batch)
            for k, v in {"loss": loss, **aux}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.4f}")
        if bar is not None:
            bar.close()
        history["epoch"].append(epoch + 1)
        for k, v in sums.items():
            history.setdefault(k, []).append(v / n_steps)
        history.setdefault("seconds", []).append(time.perf_counter() - t0)
        if eval_fn is not None:
            for k, v in eval_fn(module).items():
                history.setdefault(k, []).append(float(v))
        if manager is not None:
            manager.save(
                epoch + 1, _TrainingState(module, optimizer), metadata={"history": history}
            )
        ran += 1
    return history


def lpips_schedule(
    lr: float, steps_per_epoch: int, epochs: int, decay_epochs: int
) -> optax.Schedule:
    """Constant ``lr`` for ``epochs`` epochs, then linear decay to 0 over ``decay_epochs``."""
    constant = optax.constant_schedule(lr)
    if decay_epochs == 0:
        return constant
    decay = optax.linear_schedule(lr, 0.0, decay_epochs * steps_per_epoch)
    return optax.join_schedules([constant, decay], [epochs * steps_per_epoch])


class LPIPSTrainer(nnx.Module):
    """An LPIPS (or DISTS) model and its ranking head, trained together (heads projected >= 0).

    Built for training: it makes the model's heads trainable (``model.set_trainable(True)``, in
    place). Freeze them again with ``model.set_trainable(False)`` before using the model as a loss
    (:func:`train_lpips` does that itself).
    """

    def __init__(self, model: LPIPS | DISTS, *, rngs: nnx.Rngs) -> None:
        model.set_trainable(True)
        self.model = model
        self.ranker = RankingHead(rngs=rngs)

    def project(self) -> None:
        self.model.project()


def _lpips_loss(trainer: LPIPSTrainer, batch: dict[str, jax.Array]):
    model = trainer.model
    d0 = model.distance(batch["ref"], batch["p0"])
    d1 = model.distance(batch["ref"], batch["p1"])
    loss = ranking_loss(trainer.ranker, d0, d1, batch["judge"])
    h = batch["judge"]
    agree = jnp.where(d0 < d1, 1.0 - h, jnp.where(d1 < d0, h, 0.5))
    return loss, {"train_2afc": jnp.mean(agree)}


def _trunk_labels(module: nnx.Module) -> nnx.State:
    """``"trunk"`` for each tuned trunk weight, ``"heads"`` for every other parameter.

    A fixed tree rather than a function of the parameters: ``nnx.Optimizer.update`` hands optax
    plain arrays, which no longer carry their Variable type.
    """
    return jax.tree.map(
        lambda v: "trunk" if isinstance(v, TunedWeight) else "heads",
        nnx.state(module, nnx.Param),
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


def evaluate_2afc(model: LPIPS | DISTS, dataset: DatasetProtocol, batch_size: int = 32) -> float:
    """2AFC score of ``model`` on every example of ``dataset``."""
    dist = nnx.jit(lambda m, a, b: m.distance(a, b))
    d0s, d1s, judges = [], [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: jnp.asarray(np.stack([it[k] for it in items])) for k in items[0]}
        d0s.append(np.asarray(dist(model, batch["ref"], batch["p0"])))
        d1s.append(np.asarray(dist(model, batch["ref"], batch["p1"])))
        judges.append(np.asarray(batch["judge"]))
    return float(
        two_afc_score(
            jnp.asarray(np.concatenate(d0s)),
            jnp.asarray(np.concatenate(d1s)),
            jnp.asarray(np.concatenate(judges)),
        )
    )


def train_lpips(
    model: LPIPS,
    train_data: DatasetProtocol,
    *,
    val_data: DatasetProtocol | None = None,
    epochs: int = 5,
    decay_epochs: int = 5,
    batch_size: int = 50,
    lr: float = 1e-4,
    beta1: float = 0.5,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    plot_path: str | Path | None = None,
    progress: bool = True,
    trunk_lr: float | None = None,
) -> dict[str, list[float]]:
    """Train LPIPS heads (and a tuned trunk) on 2AFC data with the paper's recipe.

    Each step computes :math:`d_0 = d(\\text{ref}, p_0)` and :math:`d_1 = d(\\text{ref}, p_1)`,
    feeds them to a :class:`RankingHead` and minimises the binary cross-entropy against the
    judgment; Adam (``lr`` 1e-4, :math:`\\beta_1` 0.5) over the heads and the ranking head, the
    learning rate constant for ``epochs`` and then decaying linearly to 0 over ``decay_epochs``;
    the heads are clamped at 0 after every step. The heads are trained whether or not the model
    was built with ``trainable=True``; the model is handed back as it came (heads frozen again if
    they were frozen, now with the trained values) and in evaluation mode. A model built with
    ``use_dropout=True`` trains with dropout before the heads (the reference trainer's setting);
    validation scores are computed without it. The trunk stays frozen (its weights are
    :class:`~calibrax.core.FrozenWeight`, never ``nnx.Param``) unless the model was built with
    ``LPIPS(tune=True)``, the paper's "tune" variant: then the trunk's weights are trained too, by
    the same Adam with the same learning rate and schedule, as in the reference trainer (one
    ``torch.optim.Adam`` over every parameter that requires a gradient); ``trunk_lr`` gives the
    trunk its own rate instead. Only the heads are clamped. (The reference clamps every 1x1
    convolution it finds, which with the ``squeeze`` trunk also hits the trunk's own 1x1 Fire
    convolutions, frozen or not; calibrax leaves trunk weights unconstrained.)

    Args:
        model: The LPIPS model whose heads are trained (in place), with ``lpips=True``.
        train_data: 2AFC examples (``ref``, ``p0``, ``p1`` in [0, 1], ``judge``).
        val_data: Held-out 2AFC examples: their 2AFC score joins the history every epoch.
        epochs: Epochs at the constant learning rate.
        decay_epochs: Epochs of linear decay after those.
        batch_size: Examples per step.
        lr: Initial learning rate.
        beta1: Adam's first-moment decay.
        seed: Seed of the ranking head and of the example order.
        checkpoint_dir: Orbax checkpoints after every epoch, with resume.
        resume: Continue from the latest checkpoint in ``checkpoint_dir``.
        stop_after: Stop after this many epochs of this call (simulates an interruption).
        plot_path: Write a PNG of loss and 2AFC score per epoch (needs matplotlib).
        progress: Show tqdm progress bars.
        trunk_lr: Initial learning rate of a tuned trunk (same schedule shape, same Adam
            settings); by default ``lr``, as in the reference.

    Returns:
        The history: ``epoch``, ``loss``, ``train_2afc``, ``seconds`` and (with ``val_data``)
        ``val_2afc`` per epoch.

    Raises:
        ValueError: If ``model.lpips`` is False (there are no heads to train), on bad sizes, or if
            ``trunk_lr`` is given for a model whose trunk is frozen or is not positive.
    """
    if not model.lpips:
        raise ValueError("expected an LPIPS model with `lpips=True` (heads to train), got False")
    if trunk_lr is not None:
        if not model.tune:
            raise ValueError(
                "expected a model with a tuned trunk (`LPIPS(tune=True)`) for `trunk_lr`, "
                "got a frozen trunk"
            )
        if not trunk_lr > 0.0:
            raise ValueError(f"expected `trunk_lr` to be positive, got {trunk_lr}")
    model.normalize = True  # 2AFC data is in [0, 1]
    return _train_two_afc(
        model,
        train_data,
        val_data=val_data,
        epochs=epochs,
        decay_epochs=decay_epochs,
        batch_size=batch_size,
        lr=lr,
        beta1=beta1,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        stop_after=stop_after,
        plot_path=plot_path,
        progress=progress,
        trunk_lr=trunk_lr,
    )


def train_dists(
    model: DISTS,
    train_data: DatasetProtocol,
    *,
    val_data: DatasetProtocol | None = None,
    epochs: int = 5,
    decay_epochs: int = 5,
    batch_size: int = 50,
    lr: float = 1e-4,
    beta1: float = 0.5,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    plot_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train DISTS's alpha/beta on 2AFC data with the LPIPS recipe (see :func:`train_lpips`).

    The same loop as :func:`train_lpips`: :math:`d_0`, :math:`d_1` from the model, a
    :class:`RankingHead`, binary cross-entropy against the judgment, Adam with the constant then
    linearly decaying rate, and alpha/beta clamped at 0 after every step (:meth:`DISTS.project`).
    The VGG16 trunk is frozen. Alpha/beta are trained whether or not the model was built with
    ``trainable=True``, and the model is handed back as it came (frozen again if it was frozen).
    Ding et al. trained their weights with another objective; this is the 2AFC route of LPIPS,
    for adapting DISTS to your own judgments.

    Args:
        model: The :class:`DISTS` model (trained in place).
        train_data: 2AFC examples (``ref``, ``p0``, ``p1`` in [0, 1], ``judge``).
        val_data: Held-out 2AFC examples: their 2AFC score joins the history every epoch.
        epochs: Epochs at the constant learning rate.
        decay_epochs: Epochs of linear decay after those.
        batch_size: Examples per step.
        lr: Initial learning rate.
        beta1: Adam's first-moment decay.
        seed: Seed of the ranking head and of the example order.
        checkpoint_dir: Orbax checkpoints after every epoch, with resume.
        resume: Continue from the latest checkpoint in ``checkpoint_dir``.
        stop_after: Stop after this many epochs of this call (simulates an interruption).
        plot_path: Write a PNG of loss and 2AFC score per epoch (needs matplotlib).
        progress: Show tqdm progress bars.

    Returns:
        The history: ``epoch``, ``loss``, ``train_2afc``, ``seconds`` and (with ``val_data``)
        ``val_2afc`` per epoch.

    Raises:
        TypeError: If ``model`` is not a :class:`DISTS`.
        ValueError: On bad sizes (as :func:`fit`).
    """
    if not isinstance(model, DISTS):
        raise TypeError(f"expected `model` to be a DISTS, got {type(model).__name__}")
    return _train_two_afc(
        model,
        train_data,
        val_data=val_data,
        epochs=epochs,
        decay_epochs=decay_epochs,
        batch_size=batch_size,
        lr=lr,
        beta1=beta1,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        stop_after=stop_after,
        plot_path=plot_path,
        progress=progress,
        trunk_lr=None,
    )


def _train_two_afc(
    model: LPIPS | DISTS,
    train_data: DatasetProtocol,
    *,
    val_data: DatasetProtocol | None,
    epochs: int,
    decay_epochs: int,
    batch_size: int,
    lr: float,
    beta1: float,
    seed: int,
    checkpoint_dir: str | Path | None,
    resume: bool,
    stop_after: int | None,
    plot_path: str | Path | None,
    progress: bool,
    trunk_lr: float | None,
) -> dict[str, list[float]]:
    """The 2AFC training loop shared by :func:`train_lpips` and :func:`train_dists`."""
    # A negative epoch count or rate would quietly bend the schedule (or ascend the loss).
    for name, value in (("epochs", epochs), ("decay_epochs", decay_epochs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"expected `{name}` to be a non-negative integer, got {value!r}")
    for name, value in (("lr", lr), ("trunk_lr", trunk_lr)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
            raise ValueError(f"expected `{name}` to be a positive finite number, got {value!r}")
        if not (math.isfinite(value) and value > 0.0):
            raise ValueError(f"expected `{name}` to be a positive finite number, got {value!r}")
    if isinstance(beta1, bool) or not isinstance(beta1, (int, float)) or not 0.0 <= beta1 < 1.0:
        raise ValueError(f"expected `beta1` to be in [0, 1), got {beta1!r}")
    total = epochs + decay_epochs
    steps = max(1, len(train_data) // batch_size)
    was_trainable = model.trainable
    trainer = LPIPSTrainer(model, rngs=nnx.Rngs(seed))
    tx = optax.adam(lpips_schedule(lr, steps, epochs, decay_epochs), b1=beta1)
    if trunk_lr is not None:
        trunk_tx = optax.adam(lpips_schedule(trunk_lr, steps, epochs, decay_epochs), b1=beta1)
        tx = optax.multi_transform({"heads": tx, "trunk": trunk_tx}, _trunk_labels(trainer))
    eval_fn = None
    if val_data is not None:

        def eval_fn(t: LPIPSTrainer) -> dict[str, float]:
            t.model.eval()  # no dropout when scoring
            try:
                return {"val_2afc": evaluate_2afc(t.model, val_data, batch_size)}
            finally:
                t.model.train()

    model.train()
    try:
        history = fit(
            trainer,
            _lpips_loss,
            train_data,
            tx=tx,
            epochs=total,
            batch_size=batch_size,
            seed=seed,
            eval_fn=eval_fn,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            stop_after=stop_after,
            progress=progress,
        )
    finally:
        model.eval()
        model.set_trainable(was_trainable)
    if plot_path is not None:
        plot_history(history, plot_path)
    return history


def plot_history(history: dict[str, list[float]], path: str | Path) -> Path:
    """Plot loss and 2AFC scores per epoch to a PNG file.

    Raises:
        ImportError: If matplotlib is missing (``pip install 'calibrax[plots]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is an optional extra
        raise ImportError("plots need matplotlib: pip install 'calibrax[plots]'") from err
    epochs = history["epoch"]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax0.plot(epochs, history["loss"], marker="o")
    ax0.set(xlabel="epoch", ylabel="BCE loss", title="training loss")
    for key in ("train_2afc", "val_2afc"):
        if key in history:
            ax1.plot(epochs, history[key], marker="o", label=key)
    ax1.set(xlabel="epoch", ylabel="2AFC score", title="agreement with judgments")
    ax1.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
