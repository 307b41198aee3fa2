"""The command line through subprocesses, as a user runs it.

Every error is one line on stderr (``calibrax: error: ...``) with exit code 1; usage errors exit 2.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLI = [sys.executable, "-m", "calibrax.cli.main"]
_ENV = {}


@pytest.fixture(scope="module", autouse=True)
def compile_cache():
    """A JAX compilation cache shared by this module's CLI runs, removed afterwards.

    Several runs compile the same backbone program at the same shapes; with the cache the runs
    after the first load it instead of compiling it again (the same executable, so the same bits).
    """
    with tempfile.TemporaryDirectory(prefix="calibrax-cli-cache-") as tmp:
        _ENV.update(
            JAX_COMPILATION_CACHE_DIR=tmp,
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
        yield tmp
        _ENV.clear()
    assert not Path(tmp).exists()


def run(*args, timeout=600):
    # The same environment as this process (8 host devices via XLA_FLAGS): XLA's CPU code, and
    # so the float32 backbone's last bits, depends on the device configuration.
    env = {**os.environ, **_ENV}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    import skimage.data

    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    img = skimage.data.astronaut()
    for i in range(5):
        y, x = rng.integers(0, 400, 2)
        patch = img[y : y + 64, x : x + 64]
        _png(root / "a" / f"{i}.png", patch)
        noisy = np.clip(patch + rng.normal(0, 30, patch.shape), 0, 255).astype(np.uint8)
        _png(root / "b" / f"{i}.png", noisy)
    return root


def _one_line_error(proc, fragment):
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("calibrax: error: ")
    assert fragment in lines[0], lines[0]


def test_missing_folder(tmp_path):
    proc = run("fid", str(tmp_path / "nope"), str(tmp_path / "nope2"))
    _one_line_error(proc, "expected `folder` to be an existing directory, got")


def test_empty_folder_and_non_image_files(tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_error(
        run("fid", str(tmp_path / "empty"), str(tmp_path / "empty")),
        "expected `folder` to contain image files",
    )
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("hello")
    _one_line_error(
        run("stats", str(tmp_path / "txt"), "-o", str(tmp_path / "s.npz")),
        "expected `folder` to contain image files",
    )


def test_wrong_backbone_name(folders):
    proc = run("fid", str(folders / "a"), str(folders / "b"), "--backbone", "resnet9000")
    _one_line_error(proc, "expected `--backbone` to be one of")


def test_missing_weights_say_how_to_import(folders):
    proc = run("fid", str(folders / "a"), str(folders / "b"), "--backbone", "inception-v3-fid")
    _one_line_error(proc, "calibrax weights import inception-v3-fid")


def test_unreadable_file_stops_or_is_skipped(folders, tmp_path):
    bad = tmp_path / "bad"
    for i in range(2):
        _png(bad / f"{i}.png", np.asarray(Image.open(folders / "a" / f"{i}.png")))
    # A .tif in a symlinked folder (before: both skipped silently), a loop, a broken link, a .txt.
    other = tmp_path / "other"
    other.mkdir()
    Image.open(folders / "a" / "2.png").save(other / "2.tif")
    os.symlink(other, bad / "linked")
    os.symlink(bad, other / "loop")
    os.symlink(tmp_path / "gone.png", bad / "gone.png")
    (bad / "notes.txt").write_text("not an image")
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n not an image")
    _one_line_error(run("stats", str(bad), "-o", str(tmp_path / "s.npz")), "broken.png")
    ok = run(
        "stats",
        str(bad),
        "-o",
        str(tmp_path / "s.npz"),
        "--skip-unreadable",
        "--json",
        "--no-progress",
    )
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["num_samples"] == 3
    assert result["files"] == {
        str(bad): {
            "found": 6,
            "used": 3,
            "skipped": 3,
            "skipped_by_reason": {
                "broken symlink": 1,
                "unreadable": 1,
                "unsupported extension": 1,
            },
            "folders_read_once": 1,
        }
    }
    assert ok.stderr.strip().splitlines()[-1] == (
        f"calibrax: {bad}: found 6 files: used 3, skipped 3 (1 broken symlink, 1 unreadable, "
        "1 unsupported extension); 1 symlinked folder(s) not re-entered (already read)"
    )


def test_mixed_sizes_resize_or_fail_with_resize_none(tmp_path):
    rng = np.random.default_rng(0)
    _png(tmp_path / "m" / "a.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    _png(tmp_path / "m" / "b.png", rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
    _png(tmp_path / "m" / "c.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    proc = run("stats", str(tmp_path / "m"), "-o", str(tmp_path / "s.npz"), "--resize", "none")
    _one_line_error(proc, "expected every image to have size (40, 40)")
    ok = run("stats", str(tmp_path / "m"), "-o", str(tmp_path / "s.npz"), "--no-progress", "--json")
    assert ok.returncode == 0, ok.stderr
    # Each image resized from its own size with the backbone's mode, and the mode recorded.
    assert json.loads(ok.stdout)["resize"] == "antialias"


def test_resize_default_is_the_backbones_mode_and_feeds_floats():
    from calibrax.backbones.efficientnet_lite import EfficientNetLite0
    from calibrax.backbones.inception import InceptionV3FID
    from calibrax.cli.main import _image_options
    from calibrax.cli.main import build_parser

    args = build_parser().parse_args(["fid", "a", "b"])
    assert args.resize is None
    assert _image_options(args, InceptionV3FID) == {
        "normalize": True,
        "resize_method": "pytorch-fid",
    }
    assert args.resize == "pytorch-fid"  # what the run prints and records
    args = build_parser().parse_args(["fid", "a", "b"])
    assert _image_options(args, EfficientNetLite0)["resize_method"] == "antialias"
    # A backbone without a named mode is resized by the metric with jax's bilinear.
    args = build_parser().parse_args(["kid", "a", "b"])
    assert _image_options(args, object())["resize_method"] == "pytorch-fid"
    args = build_parser().parse_args(["stats", "a", "-o", "s.npz", "--resize", "tf1"])
    assert _image_options(args, InceptionV3FID)["resize_method"] == "tf1"
    args = build_parser().parse_args(["stats", "a", "-o", "s.npz", "--resize", "none"])
    assert _image_options(args, InceptionV3FID) == {}  # uint8 at their own size


def test_usage_errors_exit_2():
    assert run("fid").returncode == 2
    assert run("frobnicate").returncode == 2


KNOWN_DIGESTS = {
    "efficientnet-lite0",
    "inception-v3-fid",
    "alexnet",
    "vgg16",
    "squeezenet1_1",
    "clip-vit-b32",
    "clip-vit-l14",
    "clip-vit-l14-336",
}


def test_weights_list_json():
    proc = run("weights", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["weights"]}
    assert rows["efficientnet-lite0"]["present"] is True
    assert set(rows) >= {
        "efficientnet-lite0",
        "inception-v3-fid",
        "alexnet",
        "vgg16",
        "squeezenet1_1",
    }
    assert all(len(r["sha256"]) == 64 for r in rows.values() if r["name"] in KNOWN_DIGESTS)
    # DINOv2's release publishes no sha256: none until a file is imported (then it is recorded).
    assert rows["dinov2-vit-l14"]["sha256"] is None and rows["clip-vit-l14"]["licence"] == "MIT"


@pytest.mark.slow
def test_fid_and_stats_agree_with_python_api(folders, tmp_path):
    import jax.numpy as jnp
    from flax import nnx

    from calibrax.backbones import load
    from calibrax.io import ImageFolder
    from calibrax.metrics import FrechetDistance

    proc = run(
        "fid",
        str(folders / "a"),
        str(folders / "b"),
        "--json",
        "--no-progress",
        "--batch-size",
        "5",
    )
    assert proc.returncode == 0, proc.stderr
    cli_value = json.loads(proc.stdout)["frechet_distance"]

    assert json.loads(proc.stdout)["resize"] == "antialias"  # the backbone's mode
    # The CLI's default: each image resized with "antialias", fed as float32 in [0, 1].
    metric = FrechetDistance(
        backbone=load("efficientnet-lite0"), normalize=True, resize_method="antialias"
    )
    update = nnx.jit(lambda m, x, real: m.update(images=x, real=real), static_argnums=2)
    for side, real in (("a", True), ("b", False)):
        folder = ImageFolder(folders / side, size=metric.input_size, method="antialias")
        for batch in folder.batches(5):
            update(metric, jnp.asarray(batch), real)
    api_value = float(metric.compute()["frechet_distance"])
    # Same images, same resize, the same jitted float32 backbone and float64 statistics: equal to
    # float64 rounding. (An eager update differs at ~1e-7: XLA fuses the jitted convolutions.)
    assert cli_value == pytest.approx(api_value, rel=1e-9)

    sa = tmp_path / "a.npz"
    assert (
        run(
            "stats", str(folders / "a"), "-o", str(sa), "--no-progress", "--batch-size", "5"
        ).returncode
        == 0
    )
    with np.load(sa) as data:
        # pytorch-fid's keys, and the real rows KID/PRDC need (see calibrax.metrics.reference).
        assert {"mu", "sigma", "num_samples", "real_features", "sha256"} <= set(data.keys())
        assert data["mu"].shape == (1280,) and data["sigma"].shape == (1280, 1280)
    from_stats = run(
        "fid", str(sa), str(folders / "b"), "--json", "--batch-size", "5", "--no-progress"
    )
    assert from_stats.returncode == 0, from_stats.stderr
    assert json.loads(from_stats.stdout)["frechet_distance"] == pytest.approx(api_value, rel=1e-9)


@pytest.mark.slow
def test_train_lpips_then_lpips_with_the_trained_heads(tmp_path):
    out = tmp_path / "run"
    proc = run(
        "train-lpips",
        "--examples",
        "32",
        "--val-examples",
        "32",
        "--patch-size",
        "32",
        "--epochs",
        "1",
        "--decay-epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (out / "lpips_training.png").read_bytes()[:4] == b"\x89PNG"
    assert 0.0 <= result["val_2afc"] <= 1.0
    rng = np.random.default_rng(0)
    _png(tmp_path / "x.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    _png(tmp_path / "y.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    same = run(
        "lpips",
        str(tmp_path / "x.png"),
        str(tmp_path / "x.png"),
        "--heads",
        result["heads"],
        "--json",
    )
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["lpips"] == pytest.approx(0.0, abs=1e-6)
    diff = run(
        "lpips",
        str(tmp_path / "x.png"),
        str(tmp_path / "y.png"),
        "--heads",
        result["heads"],
        "--json",
    )
    assert json.loads(diff.stdout)["lpips"] > 0.0
    # Before: --net was ignored silently with --heads (the heads' own trunk ran).
    other = run(
        "lpips",
        str(tmp_path / "x.png"),
        str(tmp_path / "y.png"),
        "--heads",
        result["heads"],
        "--net",
        "alex",
    )
    _one_line_error(
        other,
        f"expected --net to be the trunk the heads in {result['heads']!r} were trained on "
        f"({result['net']}), got --net alex; leave --net out with --heads",
    )


def test_train_lpips_trunk_lr_needs_tune(tmp_path):
    proc = run("train-lpips", "--trunk-lr", "1e-3", "--out", str(tmp_path / "run"), "--json")
    _one_line_error(
        proc,
        "expected --tune with --trunk-lr (a frozen trunk has no learning rate), "
        "got --trunk-lr alone",
    )


@pytest.mark.slow
def test_train_lpips_tune_and_trunk_lr_reach_the_training(tmp_path, monkeypatch, capsys):
    # In-process, with the small ToyTrunk substituted for the real one (whose run takes
    # minutes): what is tested is how --tune and --trunk-lr reach the model, the training and
    # the saved checkpoint, not the trunk.
    from flax import nnx

    import calibrax.learned
    from calibrax.cli.main import main
    from calibrax.learned._toy import ToyTrunk

    real = calibrax.learned.LPIPS
    built = []

    def toy_lpips(**kwargs):
        built.append(real(trunk=ToyTrunk(rngs=nnx.Rngs(0)), **kwargs))
        return built[-1]

    monkeypatch.setattr(calibrax.learned, "LPIPS", toy_lpips)
    out = tmp_path / "run"
    code = main(
        [
            *("train-lpips", "--tune", "--lr", "1e-2", "--trunk-lr", "1e-3"),
            *("--examples", "16", "--val-examples", "16", "--patch-size", "16"),
            *("--epochs", "1", "--decay-epochs", "0", "--batch-size", "16"),
            # The level judge: the observer's EfficientNet-Lite0 needs patches of at least 32.
            *("--judge", "levels", "--out", str(out), "--no-progress", "--json"),
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tuned"] is True
    (model,) = built
    assert model.tune
    fresh = real(trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False)
    # One Adam step moves each parameter by its group's learning rate (|g| >> Adam's eps).
    trunk_step = max(
        float(np.abs(np.asarray(a[...]) - np.asarray(b[...])).max())
        for (_, a), (_, b) in zip(
            nnx.to_flat_state(nnx.state(model.trunk)),
            nnx.to_flat_state(nnx.state(fresh.trunk)),
            strict=True,
        )
    )
    head_step = max(float(np.abs(np.asarray(h.weight[...]) - 1.0).max()) for h in model.heads)
    assert trunk_step == pytest.approx(1e-3, rel=1e-3)
    assert head_step == pytest.approx(1e-2, rel=1e-3)
    # The checkpoint holds the tuned trunk: loaded into another ToyTrunk, distances are equal.
    loaded = real.from_checkpoint(result["heads"], trunk=ToyTrunk(rngs=nnx.Rngs(5)), normalize=True)
    rng = np.random.default_rng(0)
    x, y = (rng.uniform(0, 1, (2, 16, 16, 3)).astype(np.float32) for _ in range(2))
    np.testing.assert_array_equal(np.asarray(loaded(x, y)), np.asarray(model(x, y)))


# Reference files and --metrics. In-process runs swap in a tiny backbone (what is tested is how
# the CLI reads, writes and combines metrics, not the backbone); runs that fail before any
# backbone is loaded go through the real entry point in a subprocess.


@pytest.fixture
def tiny_cli(monkeypatch, capsys):
    """``main`` with RandomConvBackbone as every backbone; returns (exit code, stdout, stderr)."""
    from flax import nnx

    import calibrax.cli.main as cli
    from calibrax.metrics.random_backbone import RandomConvBackbone

    monkeypatch.setattr(cli, "_backbone", lambda name: RandomConvBackbone(rngs=nnx.Rngs(0)))

    def call(*argv):
        code = cli.main([*argv, "--no-progress", "--batch-size", "5"])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


SMALL = ("--subsets", "3", "--subset-size", "4", "--splits", "2", "--prdc-k", "2")
ALL_KEYS = {
    "frechet_distance",
    "kid_mean",
    "kid_std",
    "kid_subset_size",
    "inception_score_mean",
    "inception_score_std",
    "is_splits",
    "precision",
    "recall",
    "density",
    "coverage",
    "prdc_k",
}
RUN_KEYS = {"backbone", "resize", "num_a", "num_b", "files"}


def test_stats_writes_one_reference_that_fid_and_kid_read(folders, tmp_path, tiny_cli):
    a, b, ref = str(folders / "a"), str(folders / "b"), str(tmp_path / "ref.npz")
    code, out, err = tiny_cli("stats", a, "-o", ref, "--json")
    assert code == 0, err
    written = json.loads(out)
    assert written["num_samples"] == 5 and written["dim"] == 32
    assert written["resize"] == "pytorch-fid" and written["metrics"] == "fid,kid,prdc"
    with np.load(ref) as data:
        assert str(data["sha256"]) == written["sha256"]
        assert str(data["backbone"]) == "RandomConvBackbone (module)"
        assert str(data["resize"]) == "pytorch-fid"
        assert data["mu"].shape == (32,) and data["real_features"].shape == (5, 32)

    code, out, err = tiny_cli("fid", a, b, "--json")
    assert code == 0, err
    plain = json.loads(out)
    assert set(plain) == {"frechet_distance"} | RUN_KEYS  # today's output
    code, out, err = tiny_cli("fid", ref, b, "--json")
    assert code == 0, err
    from_ref = json.loads(out)
    assert from_ref["frechet_distance"] == pytest.approx(plain["frechet_distance"], rel=1e-9)
    assert from_ref["num_a"] == 5 and from_ref["num_b"] == 5

    kid = SMALL[:4]
    code, out, err = tiny_cli("kid", a, b, *kid, "--json")
    assert code == 0, err
    kid_folders = json.loads(out)
    assert set(kid_folders) == {"kid_mean", "kid_std", "kid_subset_size"} | RUN_KEYS
    code, out, err = tiny_cli("kid", ref, b, *kid, "--json")
    assert code == 0, err
    # The stored rows are the folder's features bit for bit: the same KID.
    assert json.loads(out)["kid_mean"] == kid_folders["kid_mean"]

    # A reference for another resize mode is refused, naming the file and the setting.
    code, out, err = tiny_cli("fid", ref, b, "--resize", "tf1")
    assert code == 1
    assert err.strip() == (
        f"calibrax: error: expected the reference `{ref}` to use the resize mode 'tf1' (the "
        "metric's `resize_method`), got 'pytorch-fid'"
    )


def test_metrics_option_computes_every_metric_from_one_pass(folders, tmp_path, tiny_cli):
    a, b, ref = str(folders / "a"), str(folders / "b"), str(tmp_path / "ref.npz")
    assert tiny_cli("stats", a, "-o", ref)[0] == 0
    code, out, err = tiny_cli("fid", a, b, "--metrics", "fid,kid,is,prdc", *SMALL, "--json")
    assert code == 0, err
    folders_run = json.loads(out)
    assert set(folders_run) == ALL_KEYS | RUN_KEYS
    assert folders_run["resize"] == "pytorch-fid"
    code, out, err = tiny_cli("kid", ref, b, "--metrics", "prdc,is,kid,fid", *SMALL, "--json")
    assert code == 0, err
    ref_run = json.loads(out)
    assert set(ref_run) == ALL_KEYS | RUN_KEYS
    for key in ALL_KEYS - {"frechet_distance"}:
        assert ref_run[key] == folders_run[key], key
    assert ref_run["frechet_distance"] == pytest.approx(folders_run["frechet_distance"], rel=1e-9)
    code, out, err = tiny_cli("fid", a, b, "--metrics", "is,prdc", *SMALL)
    assert code == 0, err
    printed = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert (
        set(printed)
        == {"inception_score_mean", "inception_score_std", "is_splits"}
        | {
            "precision",
            "recall",
            "density",
            "coverage",
            "prdc_k",
        }
        | RUN_KEYS
    )


def test_reference_errors_through_the_entry_point(folders, tmp_path):
    import jax.numpy as jnp

    from calibrax.metrics import FrechetDistance

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(20, 4))
    pfid = tmp_path / "pfid.npz"
    np.savez(pfid, mu=rows.mean(0), sigma=np.cov(rows, rowvar=False))
    ours = FrechetDistance(backbone=None, num_features=4)
    ours.update(features=jnp.asarray(rows[:10] * 2.0), real=True)
    ours.save_reference(tmp_path / "ours.npz")
    ours.update(features=jnp.asarray(rows), real=False)

    # Two references need no backbone: pytorch-fid's file and ours side by side.
    proc = run("fid", str(tmp_path / "ours.npz"), str(pfid), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["frechet_distance"] == pytest.approx(
        float(ours.compute()["frechet_distance"]), rel=1e-9
    )
    assert result["num_a"] == 10 and result["num_b"] is None

    _one_line_error(
        run("kid", str(pfid), str(folders / "b")),
        f"expected the reference {str(pfid)!r} to hold real feature rows for kid, got only FID "
        "statistics (mu, sigma), as pytorch-fid writes them; write a reference with "
        "`calibrax stats DIR -o F`",
    )
    raw = bytearray((tmp_path / "ours.npz").read_bytes())
    with np.load(tmp_path / "ours.npz") as data:
        raw[raw.index(data["mu"].tobytes()) + 5] ^= 0x01  # one bit of one value of `mu`
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    _one_line_error(
        run("fid", str(tmp_path / "flipped.npz"), str(folders / "b")),
        f"expected `{tmp_path / 'flipped.npz'}` to be an intact .npz reference file",
    )
    _one_line_error(
        run("fid", str(folders / "a"), str(folders / "b"), "--metrics", "fid,fvd"),
        "expected `--metrics` to be a comma-separated list of fid, kid, is, prdc, cmmd, got 'fid,fvd'",
    )


def test_calibrate_fits_prints_and_saves_a_restorable_head(tmp_path):
    import jax.numpy as jnp
    from flax import nnx

    from calibrax.io import read_metadata
    from calibrax.io import restore_state
    from calibrax.learned import TemperatureScaling

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    logits = rng.normal(size=(120, 3))
    logits[np.arange(120), labels] += 1.0
    np.savez(tmp_path / "val.npz", logits=(4.0 * logits).astype(np.float32), labels=labels)

    proc = run("calibrate", str(tmp_path / "val.npz"), "-o", str(tmp_path / "head"), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["method"] == "temperature" and result["num_classes"] == 3
    assert result["nll_after"] < result["nll_before"] and result["temperature"] > 1.0
    head = restore_state(tmp_path / "head", nnx.eval_shape(TemperatureScaling))
    assert float(head.temperature) == pytest.approx(result["temperature"], rel=1e-6)
    assert read_metadata(tmp_path / "head")["metadata"]["method"] == "temperature"
    report = head.evaluate(jnp.asarray(logits * 4.0, jnp.float32), jnp.asarray(labels))
    assert report.nll_after == pytest.approx(result["nll_after"], rel=1e-4)

    np.savez(tmp_path / "bad.npz", scores=logits)
    _one_line_error(
        run("calibrate", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "x")),
        f"expected {str(tmp_path / 'bad.npz')!r} to hold the arrays 'logits' and 'labels', "
        "got keys ['scores']",
    )


def test_pytorch_fid_file_count_is_unknown_and_2048_features_name_the_backbone(
    folders, tmp_path, tiny_cli
):
    from flax import nnx

    from calibrax.metrics.random_backbone import RandomConvBackbone

    d = RandomConvBackbone(rngs=nnx.Rngs(0)).num_features
    pfid = tmp_path / "pfid.npz"
    np.savez(pfid, mu=np.zeros(d), sigma=np.eye(d) * 0.01)
    code, out, err = tiny_cli("fid", str(pfid), str(folders / "b"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["num_a"] is None and result["num_b"] == 5  # no count in the file: unknown
    code, out, err = tiny_cli("fid", str(pfid), str(folders / "b"))
    assert code == 0 and "num_a: unknown" in out, (out, err)
    inception = tmp_path / "inception.npz"
    np.savez(inception, mu=np.zeros(2048), sigma=np.eye(2048, dtype=np.float32))
    code, out, err = tiny_cli("fid", str(inception), str(folders / "b"))
    assert code == 1
    assert (
        "got 2048; 2048 features are InceptionV3-FID's, as pytorch-fid writes them: use "
        'backbone="inception-v3-fid" (--backbone inception-v3-fid)'
    ) in err, err


def test_cmmd_command_defaults_to_clip_and_refuses_a_reference(folders, tmp_path, tiny_cli):
    a, b = str(folders / "a"), str(folders / "b")
    code, out, err = tiny_cli("cmmd", a, b, "--metrics", "cmmd,fid", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["backbone"] == "clip-vit-l14-336"  # the CMMD paper's feature space by default
    assert set(got) == {"cmmd", "frechet_distance"} | RUN_KEYS
    assert got["cmmd"] > 0 and math.isfinite(got["cmmd"])
    # The same collection as `kid --metrics cmmd`: one pipeline, one number.
    code, out, err = tiny_cli(
        "kid", a, b, "--metrics", "cmmd", "--backbone", "clip-vit-l14-336", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["cmmd"] == got["cmmd"]
    ref = str(tmp_path / "ref.npz")
    assert tiny_cli("stats", a, "-o", ref)[0] == 0
    code, out, err = tiny_cli("cmmd", ref, b)
    assert code == 1
    assert err.strip() == (
        f"calibrax: error: expected two image folders for cmmd (a reference file does not hold "
        f"its normalized embeddings), got the reference {ref!r}"
    )


def test_train_lpips_prints_the_payoff_table(capsys):
    from calibrax.cli.main import _print_human

    rows = [
        {"name": "oracle (true severities)", "score": 0.9, "low": 0.88, "high": 0.92},
        {"name": "LPIPS trained heads", "score": 0.85, "low": 0.83, "high": 0.87},
    ]
    _print_human({"payoff": rows, "gap_closed": 0.8, "net": "efficientnet-lite0"})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "method                    2AFC    95% bootstrap interval"
    assert out[2] == "oracle (true severities)  0.9000  [0.8800, 0.9200]"
    assert out[3] == "LPIPS trained heads       0.8500  [0.8300, 0.8700]"
    assert out[4:] == ["gap_closed: 0.800000", "net: efficientnet-lite0"]
