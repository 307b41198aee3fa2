"""The ``calibrax`` command line.

Commands::

    calibrax fid A B            FID-style distance between two image folders or .npz statistics
    calibrax kid A B            kernel (KID) distance between two image folders
    calibrax stats DIR -o F     save a folder's feature mean and covariance (pytorch-fid .npz keys)
    calibrax lpips IMG1 IMG2    LPIPS distance between two images
    calibrax train-lpips        train LPIPS heads on synthetic 2AFC data
    calibrax weights list       known weight files, whether present, sha256, source, licence
    calibrax weights import NAME PATH
    calibrax bench [NAME]       run a benchmark against its performance targets

Exit codes: 0 success; 1 an error in the input or the environment (a one-line message on stderr,
``--debug`` for the traceback); 2 a usage error (argparse); 3 a benchmark missed a target.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TARGET_MISSED = 3
DEFAULT_BACKBONE = "efficientnet-lite0"
# calibrax.functional.RESIZE_MODES and "none", spelled out so that parsing does not import jax.
RESIZE_CHOICES = ("pytorch-fid", "tf1", "clean", "antialias", "none")


class CLIError(Exception):
    """An error reported to the user as one line."""


def _setup_jax() -> None:
    import jax

    # Feature statistics are accumulated in float64 (see FrechetDistance).
    jax.config.update("jax_enable_x64", True)


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is an optional extra
        return iterable
    # disable=None: bars on a terminal only, never in logs or pipes.
    return tqdm(iterable, total=total, desc=desc, unit="batch", file=sys.stderr, disable=None)


def _folder(path: str, size: tuple[int, int], args: argparse.Namespace):
    from calibrax.io import ImageFolder

    if args.resize == "none":
        # Images keep their size (they must all share it); the metric resizes each batch.
        return ImageFolder(path, skip_unreadable=args.skip_unreadable)
    return ImageFolder(path, size=size, method=args.resize, skip_unreadable=args.skip_unreadable)


def _image_options(args: argparse.Namespace, backbone: Any) -> dict[str, Any]:
    """The metric's image settings for ``--resize``, whose default becomes the backbone's mode."""
    from calibrax.functional import RESIZE_MODES

    if args.resize is None:
        mode = getattr(backbone, "resize_method", None)
        # A backbone without a named mode is resized with jax's bilinear: pytorch-fid's kernel.
        args.resize = mode if mode in RESIZE_MODES else "pytorch-fid"
    if args.resize == "none":
        return {}
    # ImageFolder resizes each image from its own size and yields float32 in [0, 1].
    return {"normalize": True, "resize_method": args.resize}


@functools.cache
def _jitted_update():
    from flax import nnx

    # One compiled update per (metric graph, batch shape, side), shared by every folder.
    return nnx.jit(lambda m, x, real: m.update(images=x, real=real), static_argnums=2)


def _feed(metric: Any, folder: Any, real: bool, args: argparse.Namespace) -> int:
    """Stream a folder's images through ``metric.update(images=..., real=...)``; returns count."""
    import jax.numpy as jnp

    update = _jitted_update()
    n = 0
    total = -(-len(folder) // args.batch_size)
    for batch in _progress(folder.batches(args.batch_size), total, folder.folder, args.progress):
        update(metric, jnp.asarray(batch), real)
        n += batch.shape[0]
    if folder.skipped:
        print(
            f"skipped {len(folder.skipped)} unreadable file(s) in {folder.folder}", file=sys.stderr
        )
    return n


def _backbone(name: str):
    from calibrax.backbones import load

    return load(name)


def _check_sources(*paths: str) -> None:
    """Fail fast on a missing or empty folder or .npz, before any backbone is loaded."""
    from calibrax.io import list_images

    for p in paths:
        if p.endswith(".npz"):
            if not Path(p).is_file():
                raise CLIError(f"expected an existing .npz statistics file, got {p!r}")
        else:
            list_images(p)


def _read_npz(path: str):
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        if "mu" not in data or "sigma" not in data:
            raise CLIError(f"expected keys 'mu' and 'sigma' in {path!r}, got {sorted(data.keys())}")
        n = int(data["num_samples"]) if "num_samples" in data else None
        return np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64), n


def _real_statistics(path: str, args: argparse.Namespace, backbone: Any):
    """(mu, sigma, n) of a folder, fed through the backbone as the real side."""
    import numpy as np

    from calibrax.metrics import FrechetDistance

    metric = FrechetDistance(backbone=backbone, **_image_options(args, backbone))
    n = _feed(metric, _folder(path, metric.input_size, args), True, args)
    if n < 2:
        raise CLIError(f"expected at least 2 readable images in {path!r}, got {n}")
    mu, sigma = metric._statistics("real")
    return np.asarray(mu), np.asarray(sigma), n


def cmd_fid(args: argparse.Namespace) -> dict[str, Any]:
    """Folders go through one FrechetDistance exactly as the Python API does: the first source
    as the real side, the second as the generated side (a .npz is loaded as the real side; the
    distance is symmetric)."""
    import jax.numpy as jnp

    from calibrax.functional import frechet_distance
    from calibrax.metrics import FrechetDistance

    _check_sources(args.a, args.b)
    name = "fid" if args.backbone == "inception-v3-fid" else "frechet_distance"
    if args.a.endswith(".npz") and args.b.endswith(".npz"):
        mu1, s1, n1 = _read_npz(args.a)
        mu2, s2, n2 = _read_npz(args.b)
        if mu1.shape != mu2.shape:
            raise CLIError(
                f"expected both statistics to have the same dimension, got {mu1.shape[0]} and "
                f"{mu2.shape[0]} (from different backbones?)"
            )
        value = frechet_distance(
            jnp.asarray(mu1), jnp.asarray(s1), jnp.asarray(mu2), jnp.asarray(s2)
        )
        return {name: float(value), "backbone": "from .npz", "num_a": n1, "num_b": n2}
    backbone = _backbone(args.backbone)
    metric = FrechetDistance(backbone=backbone, **_image_options(args, backbone))
    real, fake = (args.b, args.a) if args.b.endswith(".npz") else (args.a, args.b)
    if real.endswith(".npz"):
        # The sample count only weights later real batches, and none follow.
        n_real = _read_npz(real)[2] or 2
        metric.load_real_statistics(real, num_samples=n_real)
    else:
        n_real = _feed(metric, _folder(real, metric.input_size, args), True, args)
    n_fake = _feed(metric, _folder(fake, metric.input_size, args), False, args)
    for n, p in ((n_real, real), (n_fake, fake)):
        if n < 2:
            raise CLIError(f"expected at least 2 readable images in {p!r}, got {n}")
    value = float(metric.compute()["frechet_distance"])
    n_a, n_b = (n_real, n_fake) if real == args.a else (n_fake, n_real)
    return {
        name: value,
        "backbone": args.backbone,
        "resize": args.resize,
        "num_a": n_a,
        "num_b": n_b,
    }


def cmd_kid(args: argparse.Namespace) -> dict[str, Any]:
    from calibrax.io import ImageFolder
    from calibrax.metrics import KernelDistance

    for p in (args.a, args.b):
        if p.endswith(".npz"):
            raise CLIError(
                f"expected an image folder for KID (it needs features, not statistics), got {p!r}"
            )
    _check_sources(args.a, args.b)
    backbone = _backbone(args.backbone)
    capacity = max(len(ImageFolder(args.a)), len(ImageFolder(args.b)))
    subset_size = min(args.subset_size, capacity)
    metric = KernelDistance(
        backbone=backbone,
        max_samples=capacity,
        subsets=args.subsets,
        subset_size=subset_size,
        **_image_options(args, backbone),
    )
    n1 = _feed(metric, _folder(args.a, metric.input_size, args), True, args)
    n2 = _feed(metric, _folder(args.b, metric.input_size, args), False, args)
    if min(n1, n2) < subset_size:
        raise CLIError(
            f"expected at least {subset_size} readable images per folder for KID subsets, "
            f"got {n1} and {n2}"
        )
    out = metric.compute()
    return {k: float(v) for k, v in out.items()} | {
        "backbone": args.backbone,
        "resize": args.resize,
        "num_a": n1,
        "num_b": n2,
    }


def cmd_stats(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    _check_sources(args.dir)
    mu, sigma, n = _real_statistics(args.dir, args, _backbone(args.backbone))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, mu=mu, sigma=sigma, num_samples=np.asarray(n))
    return {
        "output": str(out),
        "num_samples": n,
        "dim": int(mu.shape[0]),
        "backbone": args.backbone,
        "resize": args.resize,
    }


def cmd_lpips(args: argparse.Namespace) -> dict[str, Any]:
    import jax.numpy as jnp

    from calibrax.io import load_image
    from calibrax.learned import LPIPS

    a = load_image(args.img1)
    b = load_image(args.img2, size=a.shape[:2], method="clean")  # float32 in [0, 1]
    if args.heads:
        model = LPIPS.from_checkpoint(args.heads, normalize=True)
    else:
        model = LPIPS(net=args.net, pretrained=args.net != "efficientnet-lite0", normalize=True)
    x = jnp.asarray(a[None], jnp.float32) / 255.0
    y = jnp.asarray(b[None], jnp.float32)
    return {"lpips": float(model(x, y)[0]), "net": model.net}


def cmd_train_lpips(args: argparse.Namespace) -> dict[str, Any]:
    from calibrax.learned import LPIPS
    from calibrax.learned import SyntheticTwoAFC
    from calibrax.learned import evaluate_2afc
    from calibrax.learned import train_lpips

    if args.trunk_lr is not None and not args.tune:
        raise CLIError(
            "expected --tune with --trunk-lr (a frozen trunk has no learning rate), "
            "got --trunk-lr alone"
        )
    out = Path(args.out)
    train = SyntheticTwoAFC(args.examples, patch_size=args.patch_size, seed=args.seed)
    val = SyntheticTwoAFC(args.val_examples, patch_size=args.patch_size, seed=args.seed + 1)
    model = LPIPS(net=args.net, pretrained=False, tune=args.tune)
    baseline = evaluate_2afc(model, val, args.batch_size)
    history = train_lpips(
        model,
        train,
        val_data=val,
        epochs=args.epochs,
        decay_epochs=args.decay_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_dir=out / "checkpoints",
        plot_path=out / "lpips_training.png",
        progress=args.progress,
        trunk_lr=args.trunk_lr,
    )
    model.save_heads(out / "heads", overwrite=True)
    return {
        "net": args.net,
        "tuned": args.tune,
        "untrained_val_2afc": baseline,
        "val_2afc": history["val_2afc"][-1],
        "loss_first_epoch": history["loss"][0],
        "loss_last_epoch": history["loss"][-1],
        "heads": str(out / "heads"),
        "plot": str(out / "lpips_training.png"),
    }


def cmd_weights(args: argparse.Namespace) -> dict[str, Any]:
    from calibrax.io import weights

    if args.action == "import":
        if not args.name or not args.path:
            raise CLIError("expected `calibrax weights import NAME PATH`, got a missing argument")
        path = weights.import_weights(args.name, args.path)
        return {"imported": args.name, "cache": str(path)}
    return {"weights": weights.weights_status()}


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from calibrax.benchmarks.runner import BENCHMARKS
    from calibrax.benchmarks.runner import run_named

    if not args.name:
        return {"benchmarks": sorted(BENCHMARKS)}
    report = run_named(args.name)
    if not args.json:
        print(report.table())
    args.exit_code = EXIT_OK if report.passed else EXIT_TARGET_MISSED
    return report.as_dict()


def _print_human(result: dict[str, Any]) -> None:
    if "weights" in result:
        for row in result["weights"]:
            state = "present" if row["present"] else "missing"
            print(
                f"{row['name']:18s} {state:8s} {row['sha256'] or '-':64s} {row['licence']:12s} {row['source']}"
            )
        return
    if "benchmarks" in result:
        print("\n".join(result["benchmarks"]) or "no benchmarks registered")
        return
    if "targets" in result:
        return  # the table was printed
    for k, v in result.items():
        print(f"{k}: {v:.6f}" if isinstance(v, float) else f"{k}: {v}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calibrax", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, backbone: bool = True) -> None:
        if backbone:
            p.add_argument(
                "--backbone", default=DEFAULT_BACKBONE, help="backbone name (default %(default)s)"
            )
            p.add_argument(
                "--resize",
                choices=RESIZE_CHOICES,
                default=None,
                help=(
                    "resize each image from its own size to the backbone's input as a reference "
                    "tool does: pytorch-fid (bilinear), tf1 (torch-fidelity/torchmetrics), clean "
                    "(clean-fid), antialias; none keeps the size (images must share one). "
                    "Default: the backbone's mode (inception-v3-fid: pytorch-fid, "
                    "efficientnet-lite0: antialias)"
                ),
            )
            p.add_argument(
                "--skip-unreadable",
                action="store_true",
                help="skip and count unreadable images instead of stopping",
            )
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.add_argument(
            "--no-progress", dest="progress", action="store_false", help="hide progress bars"
        )
        p.add_argument("--debug", action="store_true", help="show the traceback on errors")

    p = sub.add_parser("fid", help="Fréchet distance between two folders or .npz statistics")
    p.add_argument("a")
    p.add_argument("b")
    common(p)
    p.set_defaults(func=cmd_fid)

    p = sub.add_parser("kid", help="kernel (KID) distance between two image folders")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--subsets", type=int, default=100)
    p.add_argument("--subset-size", type=int, default=1000)
    common(p)
    p.set_defaults(func=cmd_kid)

    p = sub.add_parser("stats", help="save a folder's feature statistics (mu, sigma) to .npz")
    p.add_argument("dir")
    p.add_argument("-o", "--output", required=True)
    common(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("lpips", help="LPIPS distance between two images")
    p.add_argument("img1")
    p.add_argument("img2")
    p.add_argument(
        "--net", default="alex", choices=("alex", "vgg", "squeeze", "efficientnet-lite0")
    )
    p.add_argument("--heads", help="a heads checkpoint saved by train-lpips")
    common(p, backbone=False)
    p.set_defaults(func=cmd_lpips)

    p = sub.add_parser("train-lpips", help="train LPIPS heads on synthetic 2AFC data")
    p.add_argument(
        "--net",
        default="efficientnet-lite0",
        choices=("alex", "vgg", "squeeze", "efficientnet-lite0"),
    )
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--val-examples", type=int, default=256)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--decay-epochs", type=int, default=2)
    # The paper's 1e-4 suits ~150k human judgments; a few hundred synthetic ones need more.
    p.add_argument("--lr", type=float, default=5e-2)
    p.add_argument(
        "--tune",
        action="store_true",
        help="also train the trunk (the paper's 'tune'); the heads checkpoint then holds it too",
    )
    p.add_argument(
        "--trunk-lr",
        type=float,
        default=None,
        help="the tuned trunk's initial learning rate (default: --lr, as in the reference)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="lpips_run")
    common(p, backbone=False)
    p.set_defaults(func=cmd_train_lpips)

    p = sub.add_parser("weights", help="list or import weight files")
    p.add_argument("action", choices=("list", "import"))
    p.add_argument("name", nargs="?")
    p.add_argument("path", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_weights, progress=False)

    p = sub.add_parser("bench", help="run a benchmark against its performance targets")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_bench, progress=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``calibrax`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    args.exit_code = EXIT_OK
    if getattr(args, "batch_size", 1) < 1:
        print(
            f"calibrax: error: expected `--batch-size` >= 1, got {args.batch_size}", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        _setup_jax()
        result = args.func(args)
    except KeyboardInterrupt:
        print("calibrax: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except Exception as err:
        if args.debug:
            raise
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"calibrax: error: {msg}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_human(result)
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
