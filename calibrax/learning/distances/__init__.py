"""Distances and similarities between embeddings."""

from calibrax.learning.distances.base_distance import BaseDistance
from calibrax.learning.distances.cosine_similarity import CosineSimilarity
from calibrax.learning.distances.dot_product_similarity import DotProductSimilarity
from calibrax.learning.distances.lp_distance import LpDistance

__all__ = [
    "BaseDistance",
    "CosineSimilarity",
    "DotProductSimilarity",
    "LpDistance",
]
