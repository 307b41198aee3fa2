"""Miners: select the informative pairs or triplets of a batch as fixed-shape masks."""

from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.miners.batch_hard_miner import BatchHardMiner
from calibrax.metric_learning.miners.multi_similarity_miner import MultiSimilarityMiner
from calibrax.metric_learning.miners.pair_margin_miner import PairMarginMiner
from calibrax.metric_learning.miners.triplet_margin_miner import TripletMarginMiner

__all__ = [
    "BaseMiner",
    "BatchHardMiner",
    "MultiSimilarityMiner",
    "PairMarginMiner",
    "TripletMarginMiner",
]
