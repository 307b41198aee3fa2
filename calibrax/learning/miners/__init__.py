"""Miners: select the informative pairs or triplets of a batch as fixed-shape masks."""

from calibrax.learning.miners.base_miner import BaseMiner
from calibrax.learning.miners.batch_hard_miner import BatchHardMiner
from calibrax.learning.miners.multi_similarity_miner import MultiSimilarityMiner
from calibrax.learning.miners.pair_margin_miner import PairMarginMiner
from calibrax.learning.miners.triplet_margin_miner import TripletMarginMiner

__all__ = [
    "BaseMiner",
    "BatchHardMiner",
    "MultiSimilarityMiner",
    "PairMarginMiner",
    "TripletMarginMiner",
]
