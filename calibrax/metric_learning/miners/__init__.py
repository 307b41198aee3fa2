"""Miners: select the informative pairs or triplets of a batch as fixed-shape masks."""

from calibrax.metric_learning.miners.angular_miner import AngularMiner
from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.miners.batch_easy_hard_miner import BatchEasyHardMiner
from calibrax.metric_learning.miners.batch_hard_miner import BatchHardMiner
from calibrax.metric_learning.miners.distance_weighted_miner import DistanceWeightedMiner
from calibrax.metric_learning.miners.embeddings_already_packaged_as_triplets import (
    EmbeddingsAlreadyPackagedAsTriplets,
)
from calibrax.metric_learning.miners.hdc_miner import HDCMiner
from calibrax.metric_learning.miners.multi_similarity_miner import MultiSimilarityMiner
from calibrax.metric_learning.miners.pair_margin_miner import PairMarginMiner
from calibrax.metric_learning.miners.triplet_margin_miner import TripletMarginMiner
from calibrax.metric_learning.miners.uniform_histogram_miner import UniformHistogramMiner

__all__ = [
    "AngularMiner",
    "BaseMiner",
    "BatchEasyHardMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "EmbeddingsAlreadyPackagedAsTriplets",
    "HDCMiner",
    "MultiSimilarityMiner",
    "PairMarginMiner",
    "TripletMarginMiner",
    "UniformHistogramMiner",
]
