"""The BenchmarkProtocol runner: phase order, teardown on failure, target verdicts."""

import re

import pytest

from calibrax.benchmarks.runner import BENCHMARKS
from calibrax.benchmarks.runner import register_benchmark
from calibrax.benchmarks.runner import run
from calibrax.benchmarks.runner import run_named


class Recorder:
    lower_is_better = ("seconds",)

    def __init__(self, fail=False, accuracy=0.9):
        self.calls = []
        self.fail = fail
        self.accuracy = accuracy

    def setup(self):
        self.calls.append("setup")

    def run_training(self):
        self.calls.append("train")
        if self.fail:
            raise RuntimeError("boom")
        return {"seconds": 3.0}

    def run_evaluation(self):
        self.calls.append("eval")
        return {"accuracy": self.accuracy}

    def teardown(self):
        self.calls.append("teardown")

    def get_performance_targets(self):
        return {"accuracy": 0.8, "seconds": 5.0, "recall": 0.5}


def test_phases_in_order_and_verdicts():
    bench = Recorder()
    report = run(bench, name="rec")
    assert bench.calls == ["setup", "train", "eval", "teardown"]
    verdicts = {t.metric: t.passed for t in report.targets}
    assert verdicts == {"accuracy": True, "seconds": True, "recall": False}  # recall not reported
    assert not report.passed
    assert "FAIL recall: missing (target >= 0.5)" in report.table()
    assert "ok   seconds: 3 (target <= 5)" in report.table()
    assert report.as_dict()["targets"][0]["passed"] is True


def test_below_floor_fails():
    report = run(Recorder(accuracy=0.7))
    assert {t.metric: t.passed for t in report.targets}["accuracy"] is False


def test_teardown_runs_when_a_phase_raises():
    bench = Recorder(fail=True)
    with pytest.raises(RuntimeError, match="boom"):
        run(bench)
    assert bench.calls == ["setup", "train", "teardown"]


def test_rejects_non_benchmarks_and_unknown_names():
    with pytest.raises(
        TypeError, match=re.escape("expected `benchmark` to satisfy BenchmarkProtocol, got int")
    ):
        run(3)
    register_benchmark("recorder-test", Recorder)
    try:
        assert run_named("recorder-test").name == "recorder-test"
        with pytest.raises(ValueError, match=re.escape("expected `name` to be one of")):
            run_named("no-such-benchmark")
    finally:
        del BENCHMARKS["recorder-test"]
