"""calibrax.benchmarks."""

from calibrax.benchmarks.digits import DigitsEmbedder
from calibrax.benchmarks.digits import DigitsMetricLearningBenchmark

__all__ = [
    "DigitsEmbedder",
    "DigitsMetricLearningBenchmark",
]
