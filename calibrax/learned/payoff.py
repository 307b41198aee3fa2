"""Does training LPIPS heads pay off? Held-out 2AFC side by side, with bootstrap intervals.

:func:`payoff_table` scores one held-out :class:`~calibrax.learned.SyntheticTwoAFC` set with

- the **oracle**: a "distance" equal to each patch's true severity
  (:meth:`SyntheticTwoAFC.severities`: its distortion level, or the synthetic observer's
  severity), the best any metric can do against the generator's judgment (the mean of
  :math:`\\max(h, 1 - h)` over pairs);
- the **untrained** and the **trained** LPIPS heads;
- the LPIPS paper's baselines, L2 and SSIM in Lab and RGB (:func:`baseline_distance`);

each as a 2AFC score with a percentile-bootstrap 95% interval over pairs
(:func:`bootstrap_interval`, seeded; every row is resampled with the same indices, so the rows
are comparable pair for pair). :func:`gap_closed` is the fraction of the untrained-to-oracle gap
that training closed. :func:`per_type_2afc` and :func:`plot_per_type` break the score down by
distortion type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from calibrax.core import checks
from calibrax.learned.baselines import BASELINES
from calibrax.learned.baselines import baseline_distance
from calibrax.learned.data import SyntheticTwoAFC
from calibrax.learned.evaluation import two_afc_score
from calibrax.learned.lpips import LPIPS

__all__ = [
    "TwoAFCRow",
    "bootstrap_interval",
    "format_payoff_table",
    "gap_closed",
    "pair_distances",
    "payoff_table",
    "per_type_2afc",
    "plot_per_type",
]


@dataclasses.dataclass(frozen=True)
class TwoAFCRow:
    """One method's held-out 2AFC score and its bootstrap interval."""

    name: str
    score: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | str]:
        return dataclasses.asdict(self)


def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_interval(
    values: np.ndarray, *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (NumPy, seeded).

    Resample ``i`` draws ``n`` indices with replacement (row ``i`` of
    ``np.random.default_rng(seed).integers(0, n, size=(resamples, n))``); the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles (NumPy's default linear interpolation)
    of the resampled means.

    Args:
        values: Per-pair values, shape (n,) (for a 2AFC score: each pair's agreement).
        level: Coverage of the interval, in (0, 1).
        resamples: Number of bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: If ``values`` is not 1-D, is empty or not finite, ``level`` is not in (0, 1),
            or ``resamples`` is not a positive integer.
    """
    values = np.asarray(values)
    checks.check_rank(values, 1, "values", "pairs")
    checks.check_nonempty(values, "values")
    checks.check_floating(values, "values")
    checks.check_finite(values, "values")
    checks.check_positive_int(resamples, "resamples")
    if not 0.0 < level < 1.0:
        raise ValueError(f"expected `level` in (0, 1), got {level}")
    means = values[_resample_indices(values.shape[0], resamples, seed)].mean(axis=1)
    low, high = np.percentile(means, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(low), float(high)


def _agreement(d0: np.ndarray, d1: np.ndarray, judge: np.ndarray) -> np.ndarray:
    """Per-pair 2AFC agreement (the terms :func:`two_afc_score` averages)."""
    return np.where(d0 < d1, 1.0 - judge, np.where(d1 < d0, judge, 0.5))


def pair_distances(
    distance, dataset, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``distance(ref, p)`` for ``p0`` and ``p1`` of every example, and the judgments.

    Args:
        distance: An :class:`LPIPS` model (run jitted, on [0, 1] input) or a function of two
            NHWC batches in [0, 1] returning distances, shape (batch,).
        dataset: 2AFC examples (``ref``, ``p0``, ``p1``, ``judge``).
        batch_size: Examples per call.

    Returns:
        ``(d0, d1, judge)``, NumPy arrays of shape (n,).
    """
    if isinstance(distance, LPIPS):
        distance = _lpips_distance(distance)
    d0s, d1s, judges = [], [], []
    for start in range(0, len(dataset), batch_size):
        batch = dataset.get_batch(batch_size, start)
        ref = jnp.asarray(batch["ref"])
        d0s.append(np.asarray(distance(ref, jnp.asarray(batch["p0"]))))
        d1s.append(np.asarray(distance(ref, jnp.asarray(batch["p1"]))))
        judges.append(np.asarray(batch["judge"], np.float64))
    return np.concatenate(d0s), np.concatenate(d1s), np.concatenate(judges)


def _lpips_distance(model: LPIPS):
    def run(m, a, b):
        d = m(a, b, normalize=True)  # 2AFC data is in [0, 1]
        return jnp.mean(d, axis=(1, 2)) if m.spatial else d

    dist = nnx.jit(run)
    return lambda a, b: dist(model, a, b)


def _row(name, d0, d1, judge, idx, level) -> TwoAFCRow:
    agree = _agreement(np.asarray(d0), np.asarray(d1), judge)
    score = float(two_afc_score(jnp.asarray(d0), jnp.asarray(d1), jnp.asarray(judge)))
    means = agree[idx].mean(axis=1)
    low, high = np.percentile(means, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return TwoAFCRow(name, score, float(low), float(high))


def payoff_table(
    dataset: SyntheticTwoAFC,
    *,
    untrained: tuple[np.ndarray, np.ndarray],
    trained: tuple[np.ndarray, np.ndarray],
    batch_size: int = 32,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> list[TwoAFCRow]:
    """Held-out 2AFC of the oracle, untrained and trained heads, and the paper's baselines.

    The LPIPS distances are passed in (from :func:`pair_distances`), so that the untrained ones
    can be taken before the same model is trained in place.

    Args:
        dataset: Held-out synthetic 2AFC examples (their true severities give the oracle).
        untrained: ``(d0, d1)`` of the LPIPS model before training, each shape (n,).
        trained: ``(d0, d1)`` of the same model after training.
        batch_size: Examples per baseline distance call.
        level: Coverage of the bootstrap intervals.
        resamples: Number of bootstrap resamples.
        seed: Seed of the resampling (shared by every row).

    Returns:
        Rows ``oracle (true severities)``, ``LPIPS untrained heads``, ``LPIPS trained heads``,
        ``L2 Lab``, ``L2 RGB``, ``SSIM Lab``, ``SSIM RGB``.

    Raises:
        TypeError: If ``dataset`` is not a :class:`SyntheticTwoAFC` (only it knows the true
            severities).
        ValueError: On distances whose length is not the dataset's, a bad ``level`` or
            ``resamples``.
    """
    if not isinstance(dataset, SyntheticTwoAFC):
        raise TypeError(
            "expected `dataset` to be a SyntheticTwoAFC (the oracle needs the true severities), "
            f"got {type(dataset).__name__}"
        )
    n = len(dataset)
    for name, pair in (("untrained", untrained), ("trained", trained)):
        for d in pair:
            if np.shape(d) != (n,):
                raise ValueError(
                    f"expected `{name}` to hold two distance vectors of shape ({n},) (one per "
                    f"example), got shape {np.shape(d)}"
                )
    checks.check_positive_int(resamples, "resamples")
    if not 0.0 < level < 1.0:
        raise ValueError(f"expected `level` in (0, 1), got {level}")
    idx = _resample_indices(n, resamples, seed)
    levels = dataset.severities()
    rows = []
    judge = None
    for model, cs in BASELINES:

        def dist(a, b, m=model, c=cs):
            return baseline_distance(a, b, model=m, colorspace=c)

        d0, d1, judge = pair_distances(dist, dataset, batch_size)
        rows.append(_row(f"{model.upper()} {cs}", d0, d1, judge, idx, level))
    return [
        _row("oracle (true severities)", levels[:, 0], levels[:, 1], judge, idx, level),
        _row("LPIPS untrained heads", *untrained, judge, idx, level),
        _row("LPIPS trained heads", *trained, judge, idx, level),
        *rows,
    ]


def gap_closed(rows: Sequence[TwoAFCRow]) -> float:
    """(trained - untrained) / (oracle - untrained) from a :func:`payoff_table`.

    Raises:
        ValueError: If a row is missing, or the oracle does not beat the untrained heads.
    """
    by_name = {r.name: r.score for r in rows}
    names = ("oracle (true severities)", "LPIPS untrained heads", "LPIPS trained heads")
    for n in names:
        if n not in by_name:
            raise ValueError(f"expected a row named {n!r}, got rows {sorted(by_name)}")
    oracle, before, after = (by_name[n] for n in names)
    if not oracle > before:
        raise ValueError(
            f"expected the oracle to beat the untrained heads, got {oracle:.4f} <= {before:.4f}"
        )
    return (after - before) / (oracle - before)


def format_payoff_table(rows: Sequence[TwoAFCRow], level: float = 0.95) -> str:
    """The rows as a plain-text table: method, 2AFC score, bootstrap interval."""
    width = max(len(r.name) for r in rows)
    head = f"{'method':{width}s}  2AFC    {round(100 * level)}% bootstrap interval"
    lines = [head, "-" * len(head)]
    lines += [f"{r.name:{width}s}  {r.score:.4f}  [{r.low:.4f}, {r.high:.4f}]" for r in rows]
    return "\n".join(lines)


def per_type_2afc(
    kinds: np.ndarray,
    d0: np.ndarray,
    d1: np.ndarray,
    judge: np.ndarray,
    distortions: Sequence[str],
) -> dict[str, tuple[float, int]]:
    """2AFC over the pairs in which each distortion type appears (in ``p0`` or ``p1``).

    Args:
        kinds: Distortion types of ``p0`` and ``p1``, shape (n, 2) (:meth:`SyntheticTwoAFC.kinds`).
        d0: Distances to ``p0``, shape (n,).
        d1: Distances to ``p1``, shape (n,).
        judge: Judgments, shape (n,).
        distortions: The types to report, in order.

    Returns:
        ``{type: (score, number of pairs)}`` for every type in ``distortions`` that appears; a
        pair with two types counts toward both.
    """
    kinds = np.asarray(kinds)
    agree = _agreement(np.asarray(d0), np.asarray(d1), np.asarray(judge, np.float64))
    out = {}
    for kind in distortions:
        mask = (kinds[:, 0] == kind) | (kinds[:, 1] == kind)
        if mask.any():
            out[kind] = (float(agree[mask].mean()), int(mask.sum()))
    return out


def plot_per_type(
    before: dict[str, tuple[float, int]],
    after: dict[str, tuple[float, int]],
    path: str | Path,
    *,
    oracle: dict[str, tuple[float, int]] | None = None,
) -> Path:
    """Bar chart of 2AFC per distortion type before and after training (PNG).

    Raises:
        ImportError: If matplotlib is missing (``pip install 'calibrax[plots]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is an optional extra
        raise ImportError("plots need matplotlib: pip install 'calibrax[plots]'") from err
    kinds = list(before)
    series = [("untrained heads", before), ("trained heads", after)]
    if oracle is not None:
        series.append(("oracle", oracle))
    x = np.arange(len(kinds))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, (label, values) in enumerate(series):
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            [values[k][0] for k in kinds],
            width,
            label=label,
        )
    ax.set_xticks(x, kinds)
    ax.set(ylabel="held-out 2AFC", ylim=(0.5, 1.0), title="2AFC per distortion type")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
