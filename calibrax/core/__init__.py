"""Core: protocols, metric state, base classes, input checks and the registry."""

from calibrax.core import checks
from calibrax.core.base import Metric
from calibrax.core.base import StatefulMetric
from calibrax.core.protocols import BatchableDatasetProtocol
from calibrax.core.protocols import BenchmarkProtocol
from calibrax.core.protocols import DatasetProtocol
from calibrax.core.protocols import MetricLearningProtocol
from calibrax.core.protocols import MetricProtocol
from calibrax.core.protocols import StatefulMetricProtocol
from calibrax.core.state import FrozenHead
from calibrax.core.state import FrozenWeight
from calibrax.core.state import MetricState
from calibrax.core.state import TunedWeight

__all__ = [
    "BatchableDatasetProtocol",
    "BenchmarkProtocol",
    "DatasetProtocol",
    "FrozenHead",
    "FrozenWeight",
    "Metric",
    "MetricLearningProtocol",
    "MetricProtocol",
    "MetricState",
    "StatefulMetric",
    "StatefulMetricProtocol",
    "TunedWeight",
    "checks",
]
