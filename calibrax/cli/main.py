"""The ``calibrax`` command line.

Commands::

    calibrax fid A B            FID-style distance between two image folders or .npz references
    calibrax kid A B            kernel (KID) distance between two image folders or a reference
    calibrax stats DIR -o F     save a folder's reference statistics: FID's mu/sigma (pytorch-fid
                                keys) and the real feature rows KID/PRDC need, in one .npz
    calibrax lpips IMG1 IMG2    LPIPS distance between two images
    calibrax train-lpips        train LPIPS heads on synthetic 2AFC data
    calibrax calibrate F.npz --method M -o HEAD
                                fit a calibration head (temperature, vector, matrix, dirichlet)
                                on held-out logits (.npz keys `logits`, `labels`), print NLL/ECE
                                before and after, save the head
    calibrax weights list       known weight files, whether present, sha256, source, licence
    calibrax weights import NAME PATH [--as ALIAS]
    calibrax bench [NAME]       run a benchmark against its performance targets

Exit codes: 0 success; 1 an error in the input or the environment (a one-line message on stderr,
``--debug`` for the traceback); 2 a usage error (argparse); 3 a benchmark missed a target; 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

from calibrax_console import EXIT_INTERRUPTED
from calibrax_console import install_interrupt_handling
from calibrax_console import leave_interrupted

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TARGET_MISSED = 3
DEFAULT_BACKBONE = "efficientnet-lite0"
# calibrax.functional.RESIZE_MODES and "none", spelled out so that parsing does not import jax.
RESIZE_CHOICES = ("pytorch-fid", "tf1", "clean", "antialias", "none")
# calibrax.metrics.GENERATIVE_METRICS, likewise.
METRIC_CHOICES = ("fid", "kid", "is", "prdc", "cmmd")
# calibrax.metrics.cmmd.CMMD_BACKBONE: the default feature space of `calibrax cmmd`.
CMMD_BACKBONE = "clip-vit-l14-336"
# The members with a real side, which a reference file serves (the Inception Score has none).
REAL_SIDE = ("fid", "kid", "prdc")


class CLIError(Exception):
    """An error reported to the user as one line."""


# The library's errors name its Python parameters in backticks; a command line user set them with
# these flags (or positional arguments), so the message names those instead.
_METRIC_FLAGS = {
    "name": "--backbone",
    "subsets": "--subsets",
    "subset_size": "--subset-size",
    "splits": "--splits",
    "k": "--prdc-k",
    "batch_size": "--batch-size",
    "size": "--resize",
}
FLAG_NAMES = {
    "fid": _METRIC_FLAGS,
    "kid": _METRIC_FLAGS,
    "cmmd": _METRIC_FLAGS,
    "stats": _METRIC_FLAGS,
    "lpips": {"net": "--net", "batch_size": "--batch-size", "size": "--resize"},
    "train-lpips": {
        "net": "--net",
        "batch_size": "--batch-size",
        "patch_size": "--patch-size",
        "epochs": "--epochs",
        "decay_epochs": "--decay-epochs",
        "lr": "--lr",
        "trunk_lr": "--trunk-lr",
        "seed": "--seed",
        "judge": "--judge",
    },
    "calibrate": {"method": "--method"},
    "weights": {"name": "NAME", "path": "PATH", "alias": "--as"},
    "bench": {"name": "NAME"},
}


def _cli_spelling(message: str, command: str) -> str:
    """``message`` with each backticked Python parameter of ``command`` replaced by its flag."""
    import re

    flags = FLAG_NAMES.get(command, {})
    return re.sub(r"`(\w+)`", lambda m: f"`{flags.get(m.group(1), m.group(1))}`", message)


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
    # Found/used/skipped by reason: on stderr when anything was left out, always in --json.
    counts = folder.counts()
    args.__dict__.setdefault("file_counts", {})[str(folder.folder)] = counts
    if counts["skipped"] or "folders_read_once" in counts:
        print(f"calibrax: {folder.folder}: {folder.summary()}", file=sys.stderr)
    return n


def _backbone(name: str):
    from calibrax.backbones import load

    return load(name)


def _backbone_for(args: argparse.Namespace):
    """The backbone of ``--backbone``, set up as the tool named by ``--like`` feeds it."""
    backbone = _backbone(args.backbone)
    like = getattr(args, "like", None)
    if like is None:
        return backbone
    from calibrax.backbones.inception import REFERENCE_TOOLS

    if not hasattr(backbone, "input_scaling"):
        raise CLIError(
            f"expected --backbone inception-v3-fid with --like {like} (the FID network of the "
            f"reference tools), got --backbone {args.backbone}"
        )
    mode, scaling = REFERENCE_TOOLS[like]
    if args.resize not in (None, mode):
        raise CLIError(
            f"expected --resize {mode} (or no --resize) with --like {like}, got {args.resize}"
        )
    args.resize = mode
    backbone.input_scaling = scaling
    return backbone


def _tool(args: argparse.Namespace) -> dict[str, Any]:
    """The ``like``/``input_scaling`` record of a run with ``--like`` (empty without it)."""
    like = getattr(args, "like", None)
    if like is None:
        return {}
    from calibrax.backbones.inception import REFERENCE_TOOLS

    return {"like": like, "input_scaling": REFERENCE_TOOLS[like][1]}


def _check_sources(*paths: str) -> None:
    """Fail fast on a missing or empty folder or .npz, or a folder with fewer than 2 readable
    images, before any backbone is loaded (and compiled)."""
    from calibrax.io import list_images

    for p in paths:
        if p.endswith(".npz"):
            if not Path(p).is_file():
                raise CLIError(f"expected an existing .npz statistics file, got {p!r}")
        else:
            _check_readable(p, list_images(p))


def _check_readable(folder: str, files: list[Path], need: int = 2) -> None:
    """Raise unless ``need`` of ``files`` open as images.

    Cheap: Pillow's ``open`` reads only the header, and the scan stops at the ``need``-th
    readable file, so a large folder costs ``need`` header reads (plus one per unreadable file
    before them). A file with a readable header can still fail to decode later; that error
    names the file.
    """
    from PIL import Image

    readable = unreadable = 0
    for path in files:
        try:
            with Image.open(path):
                readable += 1
        except (OSError, SyntaxError, ValueError):
            unreadable += 1
        if readable >= need:
            return
    why = f" ({len(files)} image files, {unreadable} unreadable)" if unreadable else ""
    raise CLIError(f"expected at least {need} readable images in {folder!r}, got {readable}{why}")


def _metric_list(text: str) -> tuple[str, ...]:
    """``--metrics fid,kid,is,prdc`` as a tuple in the collection's order."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRIC_CHOICES]
    if unknown or not names:
        raise CLIError(
            f"expected `--metrics` to be a comma-separated list of {', '.join(METRIC_CHOICES)}, "
            f"got {text!r}"
        )
    return tuple(m for m in METRIC_CHOICES if m in names)


def _reference(path: str):
    from calibrax.metrics import read_reference

    return read_reference(path)


def _need_rows(ref: Any, metrics: tuple[str, ...]) -> None:
    """Fail before any backbone is loaded when a mu/sigma-only file is asked for KID or PRDC."""
    buffered = [m for m in metrics if m in ("kid", "prdc")]
    if buffered and ref.real_features is None:
        raise CLIError(
            f"expected the reference {ref.path!r} to hold real feature rows for "
            f"{' and '.join(buffered)}, got only FID statistics (mu, sigma), as pytorch-fid "
            "writes them; write a reference with `calibrax stats DIR -o F`"
        )


def _mu_sigma(ref: Any):
    import numpy as np

    # A pytorch-fid file stores no count; any n >= 2 gives back its sigma.
    mean, scatter, n = ref.fid_statistics(None if ref.num_samples else 2, np.float64)
    return mean, scatter / (n - 1), ref.num_samples


def _fid_of_references(args: argparse.Namespace, name: str) -> dict[str, Any]:
    import jax.numpy as jnp

    from calibrax.functional import frechet_distance

    ra, rb = _reference(args.a), _reference(args.b)
    for setting in ("backbone", "resize"):
        va, vb = getattr(ra, setting), getattr(rb, setting)
        if va is not None and vb is not None and va != vb:
            raise CLIError(
                f"expected both references to share their {setting}, got {va!r} in {args.a!r} "
                f"and {vb!r} in {args.b!r}"
            )
    mu1, s1, n1 = _mu_sigma(ra)
    mu2, s2, n2 = _mu_sigma(rb)
    if mu1.shape != mu2.shape:
        raise CLIError(
            f"expected both statistics to have the same dimension, got {mu1.shape[0]} and "
            f"{mu2.shape[0]} (from different backbones?)"
        )
    value = frechet_distance(jnp.asarray(mu1), jnp.asarray(s1), jnp.asarray(mu2), jnp.asarray(s2))
    return {name: float(value), "backbone": "from .npz", "num_a": n1, "num_b": n2}


KID_SUBSET_SIZE = 1000  # the KID paper's, torch-fidelity's and torchmetrics' default
IS_SPLITS = 10  # torch-fidelity's, torchmetrics' and the Inception Score paper's default
PRDC_K = 5  # the PRDC paper's (Naeem et al., 2020) and the prdc package's default


def _kid_subset_size(
    args: argparse.Namespace, metrics: tuple[str, ...], counts: dict[str, int | None]
) -> int:
    """KID's subset size, chosen (or refused) from the file counts before any backbone loads.

    ``--subset-size`` larger than a side is refused, as torch-fidelity and torchmetrics refuse
    it (clean-fid clamps silently). Without it: 1000 when each side holds at least 1000 images,
    else half the smaller side (at least 2), so that the subsets differ and ``kid_std`` measures
    their spread; :func:`_kid_fields` says the choice on stderr and records it (``kid_note``).
    """
    args.kid_notes = []
    if "kid" not in metrics:
        return KID_SUBSET_SIZE
    smaller = min(counts, key=counts.__getitem__)
    n = counts[smaller]
    if args.subset_size is not None:
        if args.subset_size > n:
            raise CLIError(
                f"expected `--subset-size` to be at most the number of images of each side, got "
                f"{args.subset_size} with {n} in {smaller!r}; pass --subset-size "
                f"{max(n // 2, 2)} (half the smaller side, so that the subsets differ), or leave "
                "it out for that"
            )
        return args.subset_size
    if n >= KID_SUBSET_SIZE:
        return KID_SUBSET_SIZE
    if n // 2 >= 2:
        size, why = n // 2, f"half the {n} in {smaller!r}, which holds fewer than"
    else:
        size, why = 2, f"the fewest KID takes; {smaller!r} holds {n}, fewer than"
    args.kid_notes.append(
        f"KID subsets of {size} images: {why} the default {KID_SUBSET_SIZE} (pass "
        "--subset-size to choose)"
    )
    return size


def _is_prdc_settings(
    args: argparse.Namespace, metrics: tuple[str, ...], counts: dict[str, int | None], fake: str
) -> tuple[int, int]:
    """The Inception Score's splits and PRDC's ``k``, chosen (or refused) from the file counts.

    As for KID's subsets (:func:`_kid_subset_size`), a value the user gave that the images cannot
    support is refused, naming the flag, instead of being cut down silently; a default that does
    not fit is lowered and the choice is said (``is_note``/``prdc_note``): ``--splits`` defaults
    to 10 or, with fewer than 20 generated images, half their number (every split then holds at
    least 2 images); ``--prdc-k`` defaults to 5 or one less than the smaller side.
    """
    splits, k = args.splits, args.prdc_k
    args.is_notes, args.prdc_notes = [], []
    n_fake = counts[fake]
    if "is" in metrics:
        if splits is None:
            splits = IS_SPLITS if n_fake >= 2 * IS_SPLITS else max(n_fake // 2, 1)
            if splits != IS_SPLITS:
                args.is_notes.append(
                    f"Inception Score over {splits} splits: {fake!r} holds {n_fake} images, fewer "
                    f"than the {2 * IS_SPLITS} that the default {IS_SPLITS} splits of at least 2 "
                    "take (pass --splits to choose)"
                )
        elif splits > n_fake:
            raise CLIError(
                f"expected `--splits` to be at most the number of generated images, got {splits} "
                f"with {n_fake} in {fake!r}"
            )
    if "prdc" in metrics:
        known = {p: n for p, n in counts.items() if n is not None}
        smaller = min(known, key=known.__getitem__)
        n = known[smaller]
        if k is None:
            k = min(PRDC_K, n - 1)
            if k != PRDC_K:
                args.prdc_notes.append(
                    f"PRDC with k = {k} neighbours: {smaller!r} holds {n} images, and k must be "
                    f"below a side's count (default {PRDC_K}; pass --prdc-k to choose)"
                )
        elif k >= n:
            raise CLIError(
                f"expected `--prdc-k` to be less than the number of images of each side, got {k} "
                f"with {n} in {smaller!r}"
            )
    for note in args.is_notes + args.prdc_notes:
        print(f"calibrax: note: {note}", file=sys.stderr)
    return (IS_SPLITS if splits is None else splits), (PRDC_K if k is None else k)


def _kid_fields(
    args: argparse.Namespace, subset_size: int, n_real: int | None, n_fake: int
) -> dict[str, Any]:
    """The subset size a KID run used, and ``kid_std`` unknown when the subsets cannot differ."""
    fields: dict[str, Any] = {"kid_subset_size": subset_size}
    sides = [n for n in (n_real, n_fake) if n is not None]
    if args.subsets < 2 or all(subset_size >= n for n in sides):
        why = (
            "one subset (--subsets 1)"
            if args.subsets < 2
            else f"every subset holds all the images of both sides ({subset_size})"
        )
        args.kid_notes.append(
            f"kid_std is unknown: {why}, so the subsets cannot differ and their std is 0 by "
            "construction; pass --subsets of at least 2 and a --subset-size below a side's "
            "image count for a spread"
        )
        fields["kid_std"] = None
    for note in args.kid_notes:
        print(f"calibrax: note: {note}", file=sys.stderr)
    if args.kid_notes:
        fields["kid_note"] = "; ".join(args.kid_notes)
    return fields


def _collection_run(args: argparse.Namespace, metrics: tuple[str, ...]) -> dict[str, Any]:
    """Every asked metric through one GenerativeMetrics: one backbone pass per batch.

    The first source is the real side and the second the generated one; a .npz (either one) is
    loaded as the real side. The Inception Score is of the generated side.
    """
    from calibrax.io import ImageFolder
    from calibrax.metrics import GenerativeMetrics

    if args.a.endswith(".npz") and args.b.endswith(".npz"):
        raise CLIError(
            f"expected at most one .npz reference for {', '.join(metrics)} (the other side "
            f"must be an image folder), got {args.a!r} and {args.b!r}"
        )
    _check_sources(args.a, args.b)
    real, fake = (args.b, args.a) if args.b.endswith(".npz") else (args.a, args.b)
    ref = _reference(real) if real.endswith(".npz") else None
    if ref is not None:
        _need_rows(ref, metrics)
        if "cmmd" in metrics:
            raise CLIError(
                f"expected two image folders for cmmd (a reference file does not hold its "
                f"normalized embeddings), got the reference {ref.path!r}"
            )
    # Each side's image count (a reference's recorded one, None for a file without it), read
    # once from the listings before any backbone loads.
    counts = {
        real: ref.num_samples if ref is not None else len(ImageFolder(real)),
        fake: len(ImageFolder(fake)),
    }
    subset_size = _kid_subset_size(args, metrics, counts)
    capacity = max(counts[real] or 0, counts[fake], 2)
    splits, prdc_k = _is_prdc_settings(args, metrics, counts, fake)
    members = {
        "fid": {},
        "kid": {"subsets": args.subsets, "subset_size": subset_size},
        "is": {"splits": splits},
        "prdc": {"k": prdc_k},
        "cmmd": {},
    }
    backbone = _backbone_for(args)
    options = _image_options(args, backbone)
    metric = GenerativeMetrics(
        backbone=backbone,
        metrics={m: members[m] for m in metrics},
        max_samples=capacity,
        **options,
    )
    if ref is not None:
        # A pytorch-fid file has no count; it only weights later real batches, and none follow.
        metric.load_reference(ref, num_samples=None if ref.num_samples else 2)
        n_real = ref.num_samples
    else:
        n_real = _feed(metric, _folder(real, metric.input_size, args), True, args)
    n_fake = _feed(metric, _folder(fake, metric.input_size, args), False, args)
    for n, p in ((n_real, real), (n_fake, fake)):
        if n is not None and n < 2:
            raise CLIError(f"expected at least 2 readable images in {p!r}, got {n}")
    if "kid" in metrics and min(n_real or capacity, n_fake) < subset_size:
        raise CLIError(
            f"expected at least {subset_size} readable images per folder for KID subsets, "
            f"got {n_real} and {n_fake}"
        )
    values = {k: float(v) for k, v in metric.compute().items()}
    if "kid" in metrics:
        values.update(_kid_fields(args, subset_size, n_real, n_fake))
    if "is" in metrics:
        values["is_splits"] = splits
        if args.is_notes:
            values["is_note"] = "; ".join(args.is_notes)
    if "prdc" in metrics:
        values["prdc_k"] = prdc_k
        if args.prdc_notes:
            values["prdc_note"] = "; ".join(args.prdc_notes)
    if args.backbone == "inception-v3-fid" and "frechet_distance" in values:
        values = {("fid" if k == "frechet_distance" else k): v for k, v in values.items()}
    n_a, n_b = (n_real, n_fake) if real == args.a else (n_fake, n_real)
    return values | {
        "backbone": args.backbone,
        "resize": args.resize,
        **_tool(args),
        "num_a": n_a,
        "num_b": n_b,
    }


def cmd_fid(args: argparse.Namespace) -> dict[str, Any]:
    """Folders go through one FrechetDistance exactly as the Python API does: the first source
    as the real side, the second as the generated side (a .npz is loaded as the real side; the
    distance is symmetric)."""
    from calibrax.metrics import FrechetDistance

    metrics = _metric_list(args.metrics) if args.metrics is not None else None
    name = "fid" if args.backbone == "inception-v3-fid" else "frechet_distance"
    if metrics is not None and metrics != ("fid",):
        return _collection_run(args, metrics)
    _check_sources(args.a, args.b)
    if args.a.endswith(".npz") and args.b.endswith(".npz"):
        return _fid_of_references(args, name)
    real, fake = (args.b, args.a) if args.b.endswith(".npz") else (args.a, args.b)
    # A refused reference fails before the backbone is loaded.
    ref = _reference(real) if real.endswith(".npz") else None
    backbone = _backbone_for(args)
    metric = FrechetDistance(backbone=backbone, **_image_options(args, backbone))
    if ref is not None:
        # A pytorch-fid file has no count; it only weights later real batches, and none follow.
        metric.load_reference(ref, num_samples=None if ref.num_samples else 2)
        n_real = ref.num_samples  # None (reported as unknown) for a file without a count
    else:
        n_real = _feed(metric, _folder(real, metric.input_size, args), True, args)
    n_fake = _feed(metric, _folder(fake, metric.input_size, args), False, args)
    for n, p in ((n_real, real), (n_fake, fake)):
        if n is not None and n < 2:
            raise CLIError(f"expected at least 2 readable images in {p!r}, got {n}")
    value = float(metric.compute()["frechet_distance"])
    n_a, n_b = (n_real, n_fake) if real == args.a else (n_fake, n_real)
    return {
        name: value,
        "backbone": args.backbone,
        "resize": args.resize,
        **_tool(args),
        "num_a": n_a,
        "num_b": n_b,
    }


def cmd_kid(args: argparse.Namespace) -> dict[str, Any]:
    """KID (and any other ``--metrics``) through one GenerativeMetrics; a .npz reference (with
    its real feature rows) may replace either folder as the real side."""
    return _collection_run(args, _metric_list(args.metrics or "kid"))


def cmd_cmmd(args: argparse.Namespace) -> dict[str, Any]:
    """CMMD (and any other ``--metrics``, e.g. CLIP-FID with ``fid``) through one
    GenerativeMetrics on the CLIP backbone by default."""
    return _collection_run(args, _metric_list(args.metrics or "cmmd"))


def cmd_stats(args: argparse.Namespace) -> dict[str, Any]:
    """One reference file for every metric with a real side (see calibrax.metrics.reference)."""
    from calibrax.io import ImageFolder
    from calibrax.metrics import GenerativeMetrics

    asked = _metric_list(args.metrics or ",".join(REAL_SIDE))
    metrics = tuple(m for m in asked if m in REAL_SIDE)
    if not metrics:
        raise CLIError(
            "expected `--metrics` to name one of fid, kid, prdc for a reference (the inception "
            f"score has no real side), got {args.metrics!r}"
        )
    _check_sources(args.dir)
    backbone = _backbone_for(args)
    options = _image_options(args, backbone)
    capacity = max(len(ImageFolder(args.dir)), 2)
    # The members' own settings (subsets, k) do not enter the file: only the real side does.
    members = {"fid": {}, "kid": {"subsets": 1, "subset_size": 2}, "prdc": {"k": 1}}
    metric = GenerativeMetrics(
        backbone=backbone,
        metrics={m: members[m] for m in metrics},
        max_samples=capacity,
        **options,
    )
    n = _feed(metric, _folder(args.dir, metric.input_size, args), True, args)
    if n < 2:
        raise CLIError(f"expected at least 2 readable images in {args.dir!r}, got {n}")
    out = Path(args.output)
    if out.suffix != ".npz":
        # fid/kid read a source as a reference by its .npz suffix (numpy's own rule for savez).
        out = out.with_name(out.name + ".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = metric.save_reference(out)
    return {
        "output": str(out),
        "num_samples": n,
        "dim": metric.num_features,
        "backbone": args.backbone,
        "resize": args.resize,
        **_tool(args),
        "metrics": ",".join(metrics),
        "sha256": digest,
    }


LPIPS_DEFAULT_NET = "alex"


def _check_lpips_net(args: argparse.Namespace) -> None:
    """Before any image is read: refuse a trunk without trained heads, and say how to get the
    weights of a trunk (or the official heads) that are missing."""
    import importlib.util

    from calibrax.io import weights
    from calibrax.learned.lpips import OFFICIAL_HEADS
    from calibrax.learned.lpips import TRUNKS

    if args.heads:
        return
    net = f"--net {args.net}" + (" (the default)" if args.net == LPIPS_DEFAULT_NET else "")
    if args.net not in OFFICIAL_HEADS:
        raise CLIError(
            f"expected `--heads` with --net {args.net} (LPIPS has official heads only for "
            f"{', '.join(OFFICIAL_HEADS)}; untrained heads give an uncalibrated distance), got "
            f"none; train heads with `calibrax train-lpips --net {args.net} --out DIR` and pass "
            "--heads DIR/heads"
        )
    name = TRUNKS[args.net]
    row = next(r for r in weights.weights_status() if r["name"] == name)
    if not row["present"]:
        raise CLIError(
            f"expected the {name} weights for the trunk of {net} in the calibrax cache at "
            f"{row['path']!r}, got none; import the file {row['filename']} (from {row['source']}) "
            f"once with: calibrax weights import {name} /path/to/{row['filename']}, or pass "
            "--net efficientnet-lite0 (its trunk ships with calibrax) with --heads from "
            "`calibrax train-lpips`"
        )
    if importlib.util.find_spec("lpips") is None:
        raise CLIError(
            f"expected the `lpips` package for the official LPIPS heads of {net}, got it not "
            "installed; install it with: pip install --no-deps lpips==0.1.4 (calibrax reads its "
            "heads files without torch), or pass --heads from `calibrax train-lpips`"
        )


def cmd_lpips(args: argparse.Namespace) -> dict[str, Any]:
    """LPIPS of two images of one size (or IMG2 resized with --resize), in tiles when large."""
    import numpy as np

    from calibrax.io import load_image
    from calibrax.learned import LPIPS
    from calibrax.learned import lpips_tiled
    from calibrax.learned import tile_plan
    from calibrax.learned.lpips_tiles import default_margin
    from calibrax.learned.lpips_tiles import default_tile

    given_net, args.net = args.net, args.net or LPIPS_DEFAULT_NET
    _check_lpips_net(args)  # missing weights or heads are said before any image is read
    # Both images are read (and their sizes compared) before the model is built.
    a, b = load_image(args.img1), load_image(args.img2)  # uint8 at their own size
    resized = a.shape != b.shape
    if resized:
        (h1, w1), (h2, w2) = a.shape[:2], b.shape[:2]
        if not args.resize:
            raise CLIError(
                f"expected IMG1 and IMG2 to have the same size, got {h1}x{w1} ({args.img1}) and "
                f"{h2}x{w2} ({args.img2}); pass --resize to resize IMG2 to {h1}x{w1}"
            )
        # clean-fid's "clean" resize of IMG2 from its own size, never requantised: float [0, 1].
        b = load_image(args.img2, size=(h1, w1), method="clean")
        a = a.astype(np.float32) / np.float32(255.0)

    def tile_for(net: str) -> tuple[int, int]:
        margin = default_margin(net)
        tile = args.tile if args.tile is not None else default_tile(net)
        if tile < 2 * margin + 64:
            raise CLIError(
                f"expected --tile >= {2 * margin + 64} for --net {net} (twice its margin "
                f"{margin} plus 64), got {tile}"
            )
        return margin, tile

    if args.heads:
        model = LPIPS.from_checkpoint(args.heads, normalize=True)
        if given_net is not None and given_net != model.net:
            raise CLIError(
                f"expected --net to be the trunk the heads in {args.heads!r} were trained on "
                f"({model.net}), got --net {given_net}; leave --net out with --heads"
            )
    else:
        tile_for(args.net)  # a bad --tile fails before the model is built
        model = LPIPS(net=args.net, pretrained=args.net != "efficientnet-lite0", normalize=True)
    margin, tile = tile_for(model.net)
    plan = tile_plan(a.shape[0], a.shape[1], margin=margin, tile=tile)
    value = lpips_tiled(model, a[None], b[None], tile=tile, normalize=True, progress=args.progress)
    return {
        "lpips": float(value[0]),
        "net": model.net,
        "size": f"{a.shape[0]}x{a.shape[1]}",
        "resized": resized,
        "tiles": plan.num_tiles,
    }


# What a train-lpips run's results depend on: resuming a run needs every one of them unchanged.
TRAIN_LPIPS_SETTINGS = (
    "net",
    "examples",
    "val_examples",
    "patch_size",
    "epochs",
    "decay_epochs",
    "lr",
    "tune",
    "trunk_lr",
    "judge",
    "seed",
    "batch_size",
)


def _check_training_flags(args: argparse.Namespace) -> None:
    """train-lpips's sizes, checked here so that each error names its own flag."""
    for flag, value, least in (
        ("--examples", args.examples, 1),
        ("--val-examples", args.val_examples, 1),
        ("--epochs", args.epochs, 0),
        ("--decay-epochs", args.decay_epochs, 0),
    ):
        if value < least:
            raise CLIError(f"expected `{flag}` >= {least}, got {value}")
    if args.epochs + args.decay_epochs < 1:
        raise CLIError("expected `--epochs` + `--decay-epochs` >= 1, got 0")
    if not args.lr > 0:
        raise CLIError(f"expected `--lr` > 0, got {args.lr}")
    if args.examples < args.batch_size:
        raise CLIError(
            f"expected `--examples` to be at least `--batch-size` ({args.batch_size}, one training "
            f"step), got {args.examples}"
        )


def _setting_text(key: str, value: Any) -> str:
    flag = "--" + key.replace("_", "-")
    if isinstance(value, bool) or value is None:
        return flag if value else f"no {flag}"
    return f"{flag} {value}"


def _record_or_match_run(args: argparse.Namespace, out: Path) -> None:
    """Write the run's settings to ``out/settings.json``, or refuse to resume a run in ``out``
    that was made with other settings (its checkpoints would silently continue that run)."""
    settings = {k: getattr(args, k) for k in TRAIN_LPIPS_SETTINGS}
    path = out / "settings.json"
    fresh = (
        f"pass the same settings to resume, or a new --out (or delete {str(out)!r}) to start fresh"
    )
    if path.is_file():
        old = json.loads(path.read_text())
        for key in TRAIN_LPIPS_SETTINGS:
            if old.get(key) != settings[key]:
                raise CLIError(
                    f"expected the settings of the train-lpips run in {str(out)!r} to resume it, "
                    f"got {_setting_text(key, settings[key])} where that run used "
                    f"{_setting_text(key, old.get(key))}; {fresh}"
                )
        return
    checkpoints = out / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        raise CLIError(
            f"expected {str(path)!r} beside the checkpoints of the train-lpips run in "
            f"{str(out)!r} (the settings to resume it with), got none; pass a new --out (or "
            f"delete {str(out)!r}) to start fresh"
        )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def cmd_train_lpips(args: argparse.Namespace) -> dict[str, Any]:
    from calibrax.learned import LPIPS
    from calibrax.learned import SyntheticTwoAFC
    from calibrax.learned import evaluate_2afc
    from calibrax.learned import gap_closed
    from calibrax.learned import pair_distances
    from calibrax.learned import payoff_table
    from calibrax.learned import per_type_2afc
    from calibrax.learned import plot_per_type
    from calibrax.learned import train_lpips

    if args.trunk_lr is not None and not args.tune:
        raise CLIError(
            "expected --tune with --trunk-lr (a frozen trunk has no learning rate), "
            "got --trunk-lr alone"
        )
    _check_training_flags(args)
    out = Path(args.out)
    _record_or_match_run(args, out)
    kw = {"patch_size": args.patch_size, "judge": args.judge}
    train = SyntheticTwoAFC(args.examples, seed=args.seed, **kw)
    val = SyntheticTwoAFC(args.val_examples, seed=args.seed + 1, **kw)
    model = LPIPS(net=args.net, pretrained=False, tune=args.tune)
    baseline = evaluate_2afc(model, val, args.batch_size)
    before = pair_distances(model, val, args.batch_size)[:2]
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
    # Held-out 2AFC of the oracle, the heads before/after and the paper's L2/SSIM baselines.
    d0, d1, judge = pair_distances(model, val, args.batch_size)
    rows = payoff_table(val, untrained=before, trained=(d0, d1))
    scores = {r.name: r.score for r in rows}
    plot_per_type(
        per_type_2afc(val.kinds(), *before, judge, val.distortions),
        per_type_2afc(val.kinds(), d0, d1, judge, val.distortions),
        out / "lpips_per_type.png",
    )
    return {
        "payoff": [r.as_dict() for r in rows],
        # Fraction of the untrained-to-oracle gap closed by training (none if there is no gap).
        "gap_closed": gap_closed(rows)
        if scores["oracle (true severities)"] > scores["LPIPS untrained heads"]
        else None,
        "net": args.net,
        "tuned": args.tune,
        "untrained_val_2afc": baseline,
        "val_2afc": history["val_2afc"][-1],
        "loss_first_epoch": history["loss"][0],
        "loss_last_epoch": history["loss"][-1],
        "heads": str(out / "heads"),
        "plot": str(out / "lpips_training.png"),
        "per_type_plot": str(out / "lpips_per_type.png"),
    }


CALIBRATION_METHODS = ("temperature", "vector", "matrix", "dirichlet")


def cmd_calibrate(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from calibrax import learned
    from calibrax.io import save_state

    path = Path(args.logits)
    if not path.is_file():
        raise CLIError(
            f"expected `LOGITS` to be an .npz file, got {str(path)!r} which does not exist"
        )
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in ("logits", "labels") if k not in npz.files]
        if missing:
            raise CLIError(
                f"expected {str(path)!r} to hold the arrays 'logits' and 'labels', "
                f"got keys {sorted(npz.files)}"
            )
        logits, labels = npz["logits"], npz["labels"]
    if logits.ndim != 2:
        raise CLIError(
            f"expected `logits` to have 2 dims (batch, num_classes), got shape {logits.shape}"
        )
    k = logits.shape[1]
    if args.method == "temperature":
        head = learned.TemperatureScaling()
    elif args.method == "vector":
        head = learned.VectorScaling(k)
    elif args.method == "matrix":
        head = learned.MatrixScaling(k)
    else:
        head = learned.DirichletCalibration(k)
    report = head.fit(logits, labels)
    metadata = {"method": args.method, "num_classes": int(k), **report.as_dict()}
    save_state(args.out, head, metadata=metadata, overwrite=args.overwrite)
    result = {"method": args.method, "samples": int(logits.shape[0]), "num_classes": int(k)}
    result.update(report.as_dict())
    if args.method == "temperature":
        result["temperature"] = float(head.temperature)
    result["head"] = str(Path(args.out).resolve())
    return result


def cmd_weights(args: argparse.Namespace) -> dict[str, Any]:
    from calibrax.io import weights

    if args.action == "import":
        if not args.name or not args.path:
            raise CLIError("expected `calibrax weights import NAME PATH`, got a missing argument")
        path = weights.import_weights(args.name, args.path, alias=args.alias)
        if args.alias is not None:
            return {"imported": args.alias, "architecture": args.name, "cache": str(path)}
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
    if "payoff" in result:
        from calibrax.learned import TwoAFCRow
        from calibrax.learned import format_payoff_table

        print(format_payoff_table([TwoAFCRow(**row) for row in result["payoff"]]))
        result = {k: v for k, v in result.items() if k != "payoff"}
    for k, v in result.items():
        if k == "files" and isinstance(v, dict):
            from calibrax.io.images import format_counts

            for folder, counts in v.items():
                print(f"files: {folder}: {format_counts(counts)}")
            continue
        if v is None:
            v = "unknown"  # e.g. the sample count of a pytorch-fid file, which stores none
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
                "--like",
                choices=("pytorch-fid", "clean-fid", "torchmetrics", "torch-fidelity"),
                default=None,
                help=(
                    "with --backbone inception-v3-fid: feed the network as that tool does (its "
                    "resize mode and its pixel scaling: pytorch-fid 2u-1, the others "
                    "(x-128)/128)"
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
        # SUPPRESS: `calibrax --debug CMD` (the top-level flag) is not reset by the subcommand.
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the traceback on errors",
        )

    def collection(p: argparse.ArgumentParser, default: str) -> None:
        p.add_argument(
            "--metrics",
            default=None,
            help=(
                "comma-separated metrics computed together from one backbone pass per batch: "
                f"fid, kid, is (of the second source), prdc, cmmd (default {default}); every "
                "value is printed and recorded"
            ),
        )
        p.add_argument("--subsets", type=int, default=100, help="KID subsets")
        p.add_argument(
            "--subset-size",
            type=int,
            default=None,
            help=(
                "KID subset size, at most the images of each side (default: 1000, or half the "
                "smaller side when a side holds fewer, so that subsets differ; kid_std is "
                "unknown when they cannot)"
            ),
        )
        p.add_argument(
            "--splits",
            type=int,
            default=None,
            help=(
                f"Inception Score splits, at most the generated images (default: {IS_SPLITS}, or "
                "half the generated images when there are fewer than twice that; said and "
                "recorded as is_splits)"
            ),
        )
        p.add_argument(
            "--prdc-k",
            type=int,
            default=None,
            help=(
                f"PRDC nearest neighbours, below each side's image count (default: {PRDC_K}, or "
                "one less than the smaller side; said and recorded as prdc_k)"
            ),
        )

    p = sub.add_parser("fid", help="Fréchet distance between two folders or .npz references")
    p.add_argument("a")
    p.add_argument("b")
    collection(p, "fid")
    common(p)
    p.set_defaults(func=cmd_fid)

    p = sub.add_parser("kid", help="kernel (KID) distance between two folders or a reference")
    p.add_argument("a")
    p.add_argument("b")
    collection(p, "kid")
    common(p)
    p.set_defaults(func=cmd_kid)

    p = sub.add_parser(
        "cmmd", help="CMMD (RBF MMD on CLIP embeddings, Jayasumana et al. 2024) of two folders"
    )
    p.add_argument("a")
    p.add_argument("b")
    collection(p, "cmmd")
    common(p)
    p.set_defaults(func=cmd_cmmd, backbone=CMMD_BACKBONE)

    p = sub.add_parser(
        "stats", help="save a folder's reference statistics (mu, sigma and feature rows) to .npz"
    )
    p.add_argument("dir")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="the reference file; .npz is appended to a name without it (the path written is "
        "printed)",
    )
    p.add_argument(
        "--metrics",
        default=None,
        help=(
            "the metrics the reference serves: fid (mu, sigma), kid and prdc (the feature rows); "
            "default fid,kid,prdc"
        ),
    )
    common(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("lpips", help="LPIPS distance between two images")
    p.add_argument("img1")
    p.add_argument("img2")
    p.add_argument(
        "--net",
        default=None,
        choices=("alex", "vgg", "squeeze", "efficientnet-lite0"),
        help=f"the trunk (default {LPIPS_DEFAULT_NET}; with --heads, the heads' own trunk)",
    )
    p.add_argument("--heads", help="a heads checkpoint saved by train-lpips")
    p.add_argument(
        "--resize",
        action="store_true",
        help=(
            "if the sizes differ, resize IMG2 to IMG1's size first (clean-fid's 'clean' mode: "
            "Pillow's bicubic on float channels, from IMG2's own size); without it, images of "
            "different sizes are an error"
        ),
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help=(
            "largest tile side in pixels: images larger than this run in overlapping tiles with "
            "the whole-image result (default twice the trunk's margin plus 1024: 1216 for alex, "
            "1920 for efficientnet-lite0); memory grows with the tile, not the image"
        ),
    )
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
    p.add_argument(
        "--judge",
        default="observer",
        choices=("observer", "levels"),
        help="the synthetic judgment: a synthetic observer's severities (learnable from the "
        "pixels; needs patches of at least 32) or the distortion levels",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="lpips_run")
    common(p, backbone=False)
    p.set_defaults(func=cmd_train_lpips)

    p = sub.add_parser("calibrate", help="fit a calibration head on held-out logits (.npz)")
    p.add_argument("logits", metavar="LOGITS", help="an .npz with arrays `logits` and `labels`")
    p.add_argument("--method", choices=CALIBRATION_METHODS, default="temperature")
    p.add_argument("-o", "--out", required=True, help="checkpoint directory for the fitted head")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_calibrate, progress=False)

    p = sub.add_parser("weights", help="list or import weight files")
    p.add_argument("action", choices=("list", "import"))
    p.add_argument("name", nargs="?")
    p.add_argument("path", nargs="?")
    p.add_argument(
        "--as",
        dest="alias",
        metavar="ALIAS",
        help=(
            "import your own weights (any file whose tensors fit NAME's architecture; no hash "
            "check) under the name ALIAS, usable wherever a backbone name is (--backbone ALIAS)"
        ),
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_weights, progress=False)

    p = sub.add_parser("bench", help="run a benchmark against its performance targets")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_bench, progress=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``calibrax`` console script; returns the exit code."""
    if argv is None:
        install_interrupt_handling()  # a no-op when the console script installed it already
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
        if argv is None:
            leave_interrupted()
        print("calibrax: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if args.debug:
            raise
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        msg = _cli_spelling(msg, args.command)
        print(f"calibrax: error: {msg}", file=sys.stderr)
        return EXIT_ERROR
    if getattr(args, "file_counts", None) and isinstance(result, dict):
        result["files"] = args.file_counts  # per folder: found, used, skipped (by reason)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_human(result)
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
