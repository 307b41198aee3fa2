"""Multi-host evaluation: local processes under ``jax.distributed`` on 127.0.0.1 (gloo).

Each job runs ``_multihost_worker.py`` on N processes with :func:`launch_local` (free port picked
at run time, deadline, kill on failure, temp files removed). Every process feeds a disjoint shard
(one of them empty) and syncs; the test compares what every process reports with one metric fed
the whole set here, in the same row order.
"""

import itertools
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.metrics import FrechetDistance
from calibrax.metrics import KernelDistance
from calibrax.metrics import StreamingMeanSquaredError
from calibrax.parallel import ProcessResult
from calibrax.parallel import failure_report
from calibrax.parallel import free_port
from calibrax.parallel import launch_local
from calibrax.parallel import process_shard
from calibrax.parallel import sync
from calibrax.parallel.multihost import _describe
from calibrax.parallel.multihost import _mismatch_message

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_multihost_worker.py"
FAILURE_WORKER = HERE / "_failure_worker.py"
DIM = 6
BATCH = 4  # the worker's batch size
KID_SETTINGS = {"max_samples": 40, "subsets": 5, "subset_size": 8, "seed": 3}
# One JAX process starts in a few seconds; 4 of them on 2 busy cores in well under a minute.
JOB_TIMEOUT = 150.0
MISMATCH_DEADLINE = 60.0


@pytest.fixture(scope="module")
def compile_cache():
    """A JAX compilation cache shared by the jobs of this module, removed afterwards.

    Compiling the metrics' programs dominates a worker's run time; with the cache the jobs after
    the first one load them instead.
    """
    with tempfile.TemporaryDirectory(prefix="calibrax-mh-cache-") as tmp:
        yield tmp
    assert not Path(tmp).exists()


def _env(devices_per_process: int, cache_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_process}"
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def _data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(27, DIM))
    fake = rng.normal(size=(22, DIM)) @ rng.normal(size=(DIM, DIM)) * 0.5 + 0.3
    return {
        "real": real,
        "fake": fake,
        "predictions": rng.normal(size=(19,)),
        "targets": rng.normal(size=(19,)),
    }


# The workers' compute, jitted the same way (eager and jitted KID differ in the last bit).
_compute = nnx.jit(lambda m: m.compute())


def _single_process(data: dict[str, np.ndarray], real_bounds, fake_bounds, target_bounds):
    """One metric per kind fed every shard here, in process order, in the workers' batches."""
    fid = FrechetDistance(backbone=None, num_features=DIM)
    kid = KernelDistance(backbone=None, num_features=DIM, **KID_SETTINGS)
    mse = StreamingMeanSquaredError(dtype=jnp.float64)
    for side, real, bounds in (("real", True, real_bounds), ("fake", False, fake_bounds)):
        for lo, hi in itertools.pairwise(bounds):
            for i in range(lo, hi, BATCH):
                x = data[side][i : min(i + BATCH, hi)]
                fid.update(features=x, real=real)
                kid.update(features=x, real=real)
    for lo, hi in itertools.pairwise(target_bounds):
        for i in range(lo, hi, BATCH):
            j = min(i + BATCH, hi)
            mse.update(predictions=data["predictions"][i:j], targets=data["targets"][i:j])
    return fid, kid, mse


def _results(procs: list[ProcessResult]) -> list[dict]:
    out = []
    for proc in procs:
        assert proc.returncode == 0 and not proc.killed, proc.stderr[-3000:]
        (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        out.append(json.loads(line[len("RESULT ") :]))
    return out


@pytest.fixture
def scratch():
    """A temporary directory that is gone after the test (checked)."""
    with tempfile.TemporaryDirectory(prefix="calibrax-mh-test-") as tmp:
        yield Path(tmp)
    assert not Path(tmp).exists()


def _run_job(scratch, cache_dir, num_processes, bounds, mode="agree", devices=1):
    data = _data()
    path = scratch / "data.npz"
    np.savez(path, **data, **{f"{k}_bounds": np.asarray(v) for k, v in bounds.items()})
    start = time.monotonic()
    procs = launch_local(
        WORKER,
        num_processes,
        [str(path), mode],
        timeout=JOB_TIMEOUT,
        grace=20.0,
        env=_env(devices, cache_dir),
    )
    return data, procs, time.monotonic() - start


def _check_agreement(data, procs, bounds):
    results = _results(procs)
    assert [r["process"] for r in results] == list(range(len(procs)))
    for p, r in enumerate(results):
        assert r["local"] == {
            "real": bounds["real"][p + 1] - bounds["real"][p],
            "fake": bounds["fake"][p + 1] - bounds["fake"][p],
        }
    # Every host gets the same value, bit for bit (same merges on the same bytes).
    for key in ("fid", "kid_mean", "kid_std", "kid_real_buffer_sum", "mse"):
        assert len({r[key] for r in results}) == 1, key
    fid, kid, mse = _single_process(data, bounds["real"], bounds["fake"], bounds["predictions"])
    got = {k: float.fromhex(results[0][k]) for k in ("fid", "kid_mean", "kid_std", "mse")}
    # FID: the merged statistics differ from the batch-by-batch ones only by float64 rounding
    # in Chan's update, far below 1e-9 relative.
    expected_fid = float(_compute(fid)["frechet_distance"])
    assert got["fid"] == pytest.approx(expected_fid, rel=1e-9, abs=0)
    # KID: the merged buffer holds the shards in process order = the single-process rows, so
    # the same seeded subsets through the same compiled program give exactly the same numbers.
    kid_values = _compute(kid)
    assert results[0]["kid_real_rows"] == int(kid.real_count[...])
    assert float.fromhex(results[0]["kid_real_buffer_sum"]) == float(
        np.sum(np.asarray(kid.real_features[...]))
    )
    assert got["kid_mean"] == float(kid_values["kid_mean"])
    assert got["kid_std"] == float(kid_values["kid_std"])
    # MSE: float64 sums added in another order, rounding only.
    expected_mse = float(mse.compute()["mean_squared_error"])
    assert got["mse"] == pytest.approx(expected_mse, rel=1e-12, abs=0)
    # And the reference value itself is right (closed form over all rows).
    assert expected_mse == pytest.approx(
        np.mean((data["predictions"] - data["targets"]) ** 2), rel=1e-12
    )


@pytest.mark.slow
def test_two_processes_first_empty_match_single_process(scratch, compile_cache):
    # Process 0 (the base every merge starts from) has no rows; 2 local devices per process.
    bounds = {"real": [0, 0, 27], "fake": [0, 0, 22], "predictions": [0, 0, 19]}
    bounds["targets"] = bounds["predictions"]
    data, procs, _ = _run_job(scratch, compile_cache, 2, bounds, devices=2)
    _check_agreement(data, procs, bounds)


@pytest.mark.slow
def test_four_processes_one_empty_match_single_process(scratch, compile_cache):
    # Uneven shards, process 2 empty; real and fake split differently.
    bounds = {
        "real": [0, 7, 20, 20, 27],
        "fake": [0, 3, 12, 12, 22],
        "predictions": [0, 5, 11, 11, 19],
    }
    bounds["targets"] = bounds["predictions"]
    data, procs, _ = _run_job(scratch, compile_cache, 4, bounds)
    _check_agreement(data, procs, bounds)


def test_config_mismatch_errors_on_every_process_in_bounded_time(scratch, compile_cache):
    bounds = {"real": [0, 13, 27], "fake": [0, 10, 22], "predictions": [0, 9, 19]}
    bounds["targets"] = bounds["predictions"]
    _, procs, elapsed = _run_job(scratch, compile_cache, 2, bounds, mode="mismatch")
    message = (
        "expected every process to sync the same metric configuration, got process(es) 1 "
        "differing from process 0; process 0 vs process 1: "
        "`fake_mean`: MetricState shape (6,) float64 vs MetricState shape (5,) float64; "
        "`fake_scatter`: MetricState shape (6, 6) float64 vs MetricState shape (5, 5) float64; "
        "`num_features`: 6 vs 5; "
        "`real_mean`: MetricState shape (6,) float64 vs MetricState shape (5,) float64; "
        "`real_scatter`: MetricState shape (6, 6) float64 vs MetricState shape (5, 5) float64"
    )
    for proc in procs:
        assert not proc.killed, proc.stderr[-3000:]
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert re.search("ValueError: " + re.escape(message) + "$", proc.stderr, re.M), proc.stderr[
            -3000:
        ]
        assert "RESULT" not in proc.stdout
    assert elapsed < MISMATCH_DEADLINE


# ----------------------------------------------------------------- failures (3 processes, 2 items)
# One launch per scenario, shared by the tests that read it. Heartbeat 5 s and shutdown 20 s
# (set in the worker) end a failed job in seconds; each launch has a deadline.
FAILURE_TIMEOUT = 120.0
STRAGGLER_TIMEOUT = 240.0
_jobs: dict[str, tuple[list[ProcessResult], float]] = {}


def _failure_job(scenario: str, cache_dir: str) -> tuple[list[ProcessResult], float]:
    if scenario not in _jobs:
        start = time.monotonic()
        procs = launch_local(
            FAILURE_WORKER,
            3,
            [scenario],
            timeout=STRAGGLER_TIMEOUT if scenario == "straggler" else FAILURE_TIMEOUT,
            grace=30.0,
            env=_env(1, cache_dir),
        )
        _jobs[scenario] = procs, time.monotonic() - start
    return _jobs[scenario]


def _two_items() -> dict[str, np.ndarray]:
    """The worker's set of 2 items (the same seeded draws as `_failure_worker.data`)."""
    rng = np.random.default_rng(7)
    return {
        "real": rng.normal(size=(2, 3)),
        "fake": rng.normal(size=(2, 3)) + 0.5,
        "predictions": rng.normal(size=(2,)),
        "targets": rng.normal(size=(2,)),
    }


def _check_two_items(procs: list[ProcessResult]) -> None:
    """Every process reports the values of one process fed both items."""
    results = _results(procs)
    assert [r["rows"] for r in results] == [1, 1, 0]  # process 2's shard is empty
    for key in ("fid", "mse"):
        assert len({r[key] for r in results}) == 1, key
    items = _two_items()
    fid = FrechetDistance(backbone=None, num_features=3)
    fid.update(features=items["real"], real=True)
    fid.update(features=items["fake"], real=False)
    mse = StreamingMeanSquaredError(dtype=jnp.float64)
    mse.update(predictions=items["predictions"], targets=items["targets"])
    assert float.fromhex(results[0]["fid"]) == pytest.approx(
        float(fid.compute()["frechet_distance"]), rel=1e-9, abs=1e-12
    )
    assert float.fromhex(results[0]["mse"]) == pytest.approx(
        float(mse.compute()["mean_squared_error"]), rel=1e-12
    )


def test_more_processes_than_items_match_single_process(compile_cache):
    # The README's pattern with 3 processes and 2 items: process 2 updates with empty shards.
    procs, elapsed = _failure_job("none", compile_cache)
    _check_two_items(procs)
    assert failure_report(procs) is None
    assert elapsed < FAILURE_TIMEOUT


@pytest.mark.slow
def test_a_process_60s_late_to_sync_does_not_kill_the_job(compile_cache):
    # Process 1 sleeps 60 s in its update, twice jaxlib's fixed 30 s for the gloo setup that
    # `initialize` now does while every process is there.
    procs, elapsed = _failure_job("straggler", compile_cache)
    _check_two_items(procs)
    assert elapsed >= 60


def _leaving_first(p: int, why: str) -> str:
    return (
        f"RuntimeError: expected every process to reach sync #1, got process {p} leaving the "
        f"job first ({why}); see process {p}'s log for the cause"
    )


def test_a_process_raising_before_sync_ends_the_job_with_its_error(compile_cache):
    procs, elapsed = _failure_job("raise", compile_cache)
    assert [(p.returncode, p.killed) for p in procs] == [(1, False)] * 3, failure_report(procs)
    assert "ValueError: bad batch on process 1\n" in procs[1].stderr
    for p in (0, 2):
        assert (
            _leaving_first(1, "it exited with ValueError: bad batch on process 1")
            in procs[p].stderr
        )
        assert "RESULT" not in procs[p].stdout
    report = failure_report(procs)
    assert report.startswith("process 1 of 3 failed first (exit code 1) after "), report
    assert "; process 0: exit code 1; process 2: exit code 1. The end of its standard error:\n" in (
        report
    )
    assert "ValueError: bad batch on process 1" in report
    assert elapsed < FAILURE_TIMEOUT


def test_the_coordinator_exiting_before_sync_ends_the_job_with_its_exit_code(compile_cache):
    procs, elapsed = _failure_job("coordinator", compile_cache)
    assert [(p.returncode, p.killed) for p in procs] == [(3, False), (1, False), (1, False)], (
        failure_report(procs)
    )
    for p in (1, 2):
        assert _leaving_first(0, "it exited") in procs[p].stderr
    assert failure_report(procs).startswith("process 0 of 3 failed first (exit code 3) after ")
    assert elapsed < FAILURE_TIMEOUT


def test_a_killed_process_ends_the_job_and_is_reported_first(compile_cache):
    # Nothing in the process can say it is leaving: JAX's coordination service declares it dead
    # after the heartbeat timeout and aborts the others (jaxlib offers no Python hook for it).
    procs, elapsed = _failure_job("kill", compile_cache)
    assert [(p.returncode, p.killed) for p in procs] == [(-6, False), (-9, False), (-6, False)], (
        failure_report(procs)
    )
    for p in (0, 2):
        assert "Terminating process because the JAX distributed service detected fatal errors" in (
            procs[p].stderr
        )
        assert "stopped sending heartbeats" in procs[p].stderr
    assert failure_report(procs).startswith(
        "process 1 of 3 failed first (killed by SIGKILL) after "
    )
    assert elapsed < FAILURE_TIMEOUT


# ----------------------------------------------------------------- in-process (one process)
def _kid(dim=DIM, **overrides):
    return KernelDistance(backbone=None, num_features=dim, **{**KID_SETTINGS, **overrides})


def test_describe_lists_class_settings_and_state():
    d = _describe(_kid())
    assert d["class"] == "calibrax.metrics.kid.KernelDistance"
    assert d["jax_enable_x64"] == "True"
    assert d["real_features"] == "MetricState shape (40, 6) float64"
    assert d["real_count"] == "MetricState shape () int64"
    assert d["subset_size"] == "8"
    assert d["gamma"] == "None"
    assert d["dtype"] == "dtype('float64')"
    assert _describe(_kid()) == d


def test_mismatch_message_names_processes_and_settings():
    a = _describe(_kid())
    assert _mismatch_message([a, a, a]) is None
    b = _describe(_kid(seed=4))
    c = _describe(FrechetDistance(backbone=None, num_features=DIM))
    assert _mismatch_message([a, a, b, c]) == (
        "expected every process to sync the same metric configuration, got process(es) 2, 3 "
        "differing from process 0; process 0 vs process 2: `seed`: 3 vs 4"
    )
    message = _mismatch_message([a, c])
    assert message.startswith(
        "expected every process to sync the same metric configuration, got process(es) 1 "
        "differing from process 0; process 0 vs process 1: "
        "`class`: calibrax.metrics.kid.KernelDistance vs calibrax.metrics.fid.FrechetDistance; "
        "`coef`: 1.0 vs <missing>;"
    )
    assert message.endswith("and 11 more")


def test_sync_with_one_process_keeps_the_state():
    kid = _kid()
    x = np.random.default_rng(1).normal(size=(10, DIM))
    kid.update(features=x, real=True)
    before = np.asarray(kid.real_features[...]).copy()
    assert sync(kid) is kid
    np.testing.assert_array_equal(np.asarray(kid.real_features[...]), before)
    assert kid.real_count[...].shape == () and int(kid.real_count[...]) == 10


def test_sync_rejects_a_non_metric():
    with pytest.raises(
        TypeError, match=re.escape("expected `metric` to be a StatefulMetric, got dict")
    ):
        sync({})


@pytest.mark.parametrize(
    ("num_items", "count", "sizes"),
    [(10, 4, [3, 3, 2, 2]), (2, 3, [1, 1, 0]), (0, 2, [0, 0]), (9, 1, [9])],
)
def test_process_shard_covers_the_set_in_order(num_items, count, sizes):
    shards = [process_shard(num_items, p, count) for p in range(count)]
    assert [s.stop - s.start for s in shards] == sizes
    assert np.array_equal(
        np.concatenate([np.arange(num_items)[s] for s in shards]), np.arange(num_items)
    )


def test_process_shard_defaults_to_this_process():
    assert process_shard(5) == slice(0, 5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 0, 2), "expected `num_items` to be a non-negative integer, got -1"),
        ((4, 0, 0), "expected `process_count` to be a positive integer, got 0"),
        ((4, 2, 2), "expected `process_index` to be an integer in [0, 2), got 2"),
    ],
)
def test_process_shard_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        process_shard(*args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"num_processes": 2, "process_id": 0},
            "expected `coordinator_address` (or $CALIBRAX_COORDINATOR_ADDRESS) to be "
            "'host:port', got None",
        ),
        (
            {"coordinator_address": "127.0.0.1:1234", "num_processes": 0, "process_id": 0},
            "expected `num_processes` (or $CALIBRAX_NUM_PROCESSES) to be a positive integer, got 0",
        ),
        (
            {"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 2},
            "expected `process_id` (or $CALIBRAX_PROCESS_ID) to be an integer in [0, 2), got 2",
        ),
        (
            {
                "coordinator_address": "127.0.0.1:1234",
                "num_processes": 2,
                "process_id": 0,
                "initialization_timeout": 0,
            },
            "expected `initialization_timeout` to be a positive integer, got 0",
        ),
        (
            {
                "coordinator_address": "127.0.0.1:1234",
                "num_processes": 2,
                "process_id": 0,
                "sync_timeout": -1.0,
            },
            "expected `sync_timeout` to be a positive number, got -1.0",
        ),
    ],
)
def test_initialize_rejects_bad_settings(monkeypatch, kwargs, message):
    from calibrax.parallel import initialize

    for name in ("CALIBRAX_COORDINATOR_ADDRESS", "CALIBRAX_NUM_PROCESSES", "CALIBRAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=re.escape(message)):
        initialize(**kwargs)


def test_initialize_rejects_a_non_integer_environment_variable(monkeypatch):
    from calibrax.parallel import initialize

    monkeypatch.setenv("CALIBRAX_NUM_PROCESSES", "two")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected the environment variable CALIBRAX_NUM_PROCESSES to be an integer, got 'two'"
        ),
    ):
        initialize("127.0.0.1:1234")


# ----------------------------------------------------------------- the launcher (no JAX)
def _script(tmp: Path, body: str) -> Path:
    path = tmp / "script.py"
    path.write_text("import os, sys, time\n" + body)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_launch_sets_the_environment_and_collects_output(scratch):
    script = _script(
        scratch,
        "print(os.environ['CALIBRAX_PROCESS_ID'], os.environ['CALIBRAX_NUM_PROCESSES'],"
        " os.environ['CALIBRAX_COORDINATOR_ADDRESS'], sys.argv[1:])\n"
        "print('err', file=sys.stderr)\n",
    )
    procs = launch_local(script, 3, ["a", 1], timeout=60)
    addresses = set()
    for p, proc in enumerate(procs):
        assert (proc.process_id, proc.returncode, proc.killed, proc.stderr) == (
            p,
            0,
            False,
            "err\n",
        )
        pid, count, address, argv = proc.stdout.split(" ", 3)
        assert (pid, count, argv) == (str(p), "3", "['a', '1']\n")
        addresses.add(address)
    (address,) = addresses
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1" and 0 < int(port) < 65536


def test_launch_kills_the_others_when_one_fails(scratch):
    # Process 1 fails at once; the others would sleep for 10 minutes and leave a pid file.
    script = _script(
        scratch,
        "pid_dir = sys.argv[1]\n"
        "p = os.environ['CALIBRAX_PROCESS_ID']\n"
        "open(os.path.join(pid_dir, p), 'w').write(str(os.getpid()))\n"
        "if p == '1':\n    sys.exit(3)\n"
        "time.sleep(600)\n",
    )
    start = time.monotonic()
    procs = launch_local(script, 3, [str(scratch)], timeout=120, grace=1.0)
    assert time.monotonic() - start < 60
    assert [p.returncode for p in procs] == [-9, 3, -9]
    assert [p.killed for p in procs] == [True, False, True]
    for p in range(3):
        assert not _alive(int((scratch / str(p)).read_text()))


def test_failure_report_names_the_first_leaver_with_its_status_and_stderr_tail(scratch):
    # Process 2 writes the exit hook's line first (its time is in it), then exits 1; process 0
    # exits 2 later without such a line; process 1 succeeds.
    script = _script(
        scratch,
        "import datetime\n"
        "p = int(os.environ['CALIBRAX_PROCESS_ID'])\n"
        "if p == 2:\n"
        "    now = datetime.datetime.now(datetime.UTC).isoformat()\n"
        "    print('line a', file=sys.stderr)\n"
        "    print(f'calibrax: process 2 leaves the job at {now}: it exited', file=sys.stderr)\n"
        "    time.sleep(1.0)\n"
        "    sys.exit(1)\n"
        "if p == 0:\n"
        "    time.sleep(0.5)\n"
        "    sys.exit(2)\n",
    )
    procs = launch_local(script, 3, timeout=60, grace=10)
    assert [p.returncode for p in procs] == [2, 0, 1]
    assert procs[1].failed_at is None
    assert procs[2].failed_at < procs[0].failed_at
    report = failure_report(procs, tail_lines=2)
    assert re.fullmatch(
        r"process 2 of 3 failed first \(exit code 1\) after \d+\.\d s; process 0: exit code 2; "
        r"process 1: exit code 0\. The end of its standard error:\n"
        r"line a\ncalibrax: process 2 leaves the job at \S+: it exited",
        report,
    ), report


def test_failure_report_without_failures():
    ok = ProcessResult(process_id=0, returncode=0, stdout="", stderr="", killed=False)
    assert failure_report([ok]) is None
    late = ProcessResult(process_id=1, returncode=-9, stdout="", stderr="", killed=True)
    assert failure_report([ok, late]) == (
        "no process failed before the launcher killed some: process 0: exit code 0; "
        "process 1: killed by the launcher"
    )


def test_launch_kills_everything_at_the_deadline(scratch):
    script = _script(scratch, "time.sleep(600)\n")
    start = time.monotonic()
    procs = launch_local(script, 2, timeout=1.0)
    assert time.monotonic() - start < 30
    assert [(p.returncode, p.killed) for p in procs] == [(-9, True), (-9, True)]


def test_launch_leaves_no_temporary_directory(scratch):
    before = set(Path(tempfile.gettempdir()).glob("calibrax-launch-*"))
    launch_local(_script(scratch, "print('x')\n"), 2, timeout=60)
    assert set(Path(tempfile.gettempdir()).glob("calibrax-launch-*")) == before


def test_free_port_can_be_bound():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("missing.py", 2), {}, "expected `script` to be an existing file, got 'missing.py'"),
        ((sys.executable, 0), {}, "expected `num_processes` to be a positive integer, got 0"),
        ((sys.executable, 1), {"timeout": 0}, "expected `timeout` to be a positive number, got 0"),
        (
            (sys.executable, 1),
            {"grace": -1.0},
            "expected `grace` to be a positive number, got -1.0",
        ),
    ],
)
def test_launch_rejects_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        launch_local(*args, **kwargs)


# ----------------------------------------------------------------- the example
@pytest.mark.slow
def test_fid_multihost_example_runs(compile_cache):
    import subprocess

    example = HERE.parents[1] / "examples" / "fid_multihost.py"
    # The example's own deadline (it kills its processes) comes well before this one, so
    # nothing is left behind even when the job hangs.
    proc = subprocess.run(
        [sys.executable, str(example), "--features-only", "--num-images", "16", "--timeout", "200"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(1, compile_cache),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [x for x in proc.stdout.splitlines() if x.startswith("process ")]
    assert len(lines) == 2
    assert lines[0].startswith("process 0/2: 8 of 16 image pairs here; Fréchet distance ")
    assert lines[0].split(": ", 1)[1] == lines[1].split(": ", 1)[1]
    assert "all 2 processes report the same values, bit for bit" in proc.stdout
