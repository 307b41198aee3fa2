"""Distances and similarities between embeddings."""

from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.batched_distance import BatchedDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.distances.dot_product_similarity import DotProductSimilarity
from calibrax.metric_learning.distances.lp_distance import LpDistance
from calibrax.metric_learning.distances.snr_distance import SNRDistance

__all__ = [
    "BaseDistance",
    "BatchedDistance",
    "CosineSimilarity",
    "DotProductSimilarity",
    "LpDistance",
    "SNRDistance",
]
