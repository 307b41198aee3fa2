"""Run a ``BenchmarkProtocol`` implementation and check it against its performance targets.

A target is a floor by default (the measured value must be >= the target); a benchmark lists the
names of metrics where lower is better (times, losses) in an optional attribute
``lower_is_better``, and those targets are ceilings. A target whose metric the benchmark did not
report fails.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from calibrax.core import checks
from calibrax.core.protocols import BenchmarkProtocol

__all__ = [
    "BENCHMARKS",
    "BenchmarkReport",
    "TargetResult",
    "register_benchmark",
    "run",
    "run_named",
]

BENCHMARKS: dict[str, Callable[[], BenchmarkProtocol]] = {}


def register_benchmark(name: str, factory: Callable[[], BenchmarkProtocol]) -> None:
    """Make a benchmark available by name (``calibrax bench NAME``)."""
    BENCHMARKS[name] = factory


@dataclasses.dataclass(frozen=True)
class TargetResult:
    """One performance target and how the run fared against it."""

    metric: str
    target: float
    value: float | None
    lower_is_better: bool

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.target if self.lower_is_better else self.value >= self.target


@dataclasses.dataclass(frozen=True)
class BenchmarkReport:
    """Everything a benchmark run measured, and the verdict per target."""

    name: str
    training: dict[str, float]
    evaluation: dict[str, float]
    targets: list[TargetResult]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.targets)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "training": self.training,
            "evaluation": self.evaluation,
            "seconds": self.seconds,
            "passed": self.passed,
            "targets": [{**dataclasses.asdict(t), "passed": t.passed} for t in self.targets],
        }

    def table(self) -> str:
        rows = [
            f"benchmark {self.name}: {'PASS' if self.passed else 'FAIL'} ({self.seconds:.1f} s)"
        ]
        for t in self.targets:
            op = "<=" if t.lower_is_better else ">="
            got = "missing" if t.value is None else f"{t.value:.4g}"
            rows.append(
                f"  {'ok  ' if t.passed else 'FAIL'} {t.metric}: {got} (target {op} {t.target:.4g})"
            )
        return "\n".join(rows)


def run(benchmark: BenchmarkProtocol, *, name: str | None = None) -> BenchmarkReport:
    """Call setup, run_training, run_evaluation and teardown, then check every target.

    ``teardown`` runs even when a phase raises.

    Raises:
        TypeError: If ``benchmark`` does not satisfy ``BenchmarkProtocol``.
    """
    if not isinstance(benchmark, BenchmarkProtocol):
        raise TypeError(
            f"expected `benchmark` to satisfy BenchmarkProtocol, got {type(benchmark).__name__}"
        )
    t0 = time.perf_counter()
    benchmark.setup()
    try:
        training = dict(benchmark.run_training())
        evaluation = dict(benchmark.run_evaluation())
    finally:
        benchmark.teardown()
    seconds = time.perf_counter() - t0
    measured = {**training, **evaluation}
    lower = set(getattr(benchmark, "lower_is_better", ()))
    targets = [
        TargetResult(
            metric=k,
            target=float(v),
            value=None if k not in measured else float(measured[k]),
            lower_is_better=k in lower,
        )
        for k, v in benchmark.get_performance_targets().items()
    ]
    return BenchmarkReport(
        name=name or type(benchmark).__name__,
        training=training,
        evaluation=evaluation,
        targets=targets,
        seconds=seconds,
    )


def run_named(name: str) -> BenchmarkReport:
    """Run the benchmark registered as ``name``.

    Raises:
        ValueError: If no benchmark has that name.
    """
    checks.check_choice(name, sorted(BENCHMARKS), "name")
    return run(BENCHMARKS[name](), name=name)
