"""The pairs and triplets mined by calibrax.metric_learning miners are exactly pytorch-metric-learning's.

Compared as sets of index tuples (our masks have no order; pytorch-metric-learning's lists do).
float64 on both sides so that no distance sits within rounding error of a margin.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _pml_parity import BATCHES
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

PAIR_MINERS = {
    "pair_margin_defaults": (lambda: C.PairMarginMiner(), lambda: M.PairMarginMiner()),
    "pair_margin_cosine": (
        lambda: C.PairMarginMiner(pos_margin=0.6, neg_margin=0.1, distance=C.CosineSimilarity()),
        lambda: M.PairMarginMiner(pos_margin=0.6, neg_margin=0.1, distance=D.CosineSimilarity()),
    ),
    "multi_similarity_defaults": (
        lambda: C.MultiSimilarityMiner(),
        lambda: M.MultiSimilarityMiner(),
    ),
    "multi_similarity_lp": (
        lambda: C.MultiSimilarityMiner(epsilon=0.3, distance=C.LpDistance()),
        lambda: M.MultiSimilarityMiner(epsilon=0.3, distance=D.LpDistance()),
    ),
}

TRIPLET_MINERS = {
    **{
        f"triplet_margin_{kind}": (
            lambda kind=kind: C.TripletMarginMiner(margin=0.3, type_of_triplets=kind),
            lambda kind=kind: M.TripletMarginMiner(margin=0.3, type_of_triplets=kind),
        )
        for kind in ("all", "hard", "semihard", "easy")
    },
    "triplet_margin_cosine_semihard": (
        lambda: C.TripletMarginMiner(
            margin=0.4, type_of_triplets="semihard", distance=C.CosineSimilarity()
        ),
        lambda: M.TripletMarginMiner(
            margin=0.4, type_of_triplets="semihard", distance=D.CosineSimilarity()
        ),
    ),
    "batch_hard": (lambda: C.BatchHardMiner(), lambda: M.BatchHardMiner()),
    "batch_hard_cosine": (
        lambda: C.BatchHardMiner(distance=C.CosineSimilarity()),
        lambda: M.BatchHardMiner(distance=D.CosineSimilarity()),
    ),
}

# Duplicate embeddings make exact distance ties, where the hardest index is implementation-defined.
NO_TIES = tuple(name for name in BATCHES if name != "duplicates")


def _theirs(miner, emb, lab):
    out = miner(torch.tensor(emb, dtype=torch.float64), torch.tensor(lab))
    return tuple(x.numpy() for x in out)


def _set(*arrays):
    return sorted(zip(*(np.asarray(a).tolist() for a in arrays), strict=True))


@pytest.mark.parametrize("name", sorted(PAIR_MINERS))
def test_pair_miner_matches_pml(name):
    ours, theirs = PAIR_MINERS[name]
    miner = jax.jit(ours())
    for batch in BATCHES:
        emb, lab = BATCHES[batch]
        mask = miner(jnp.asarray(emb), jnp.asarray(lab, jnp.int32))
        a1, p, a2, n = mask.to_indices()
        t1, tp, t2, tn = _theirs(theirs(), emb, lab)
        assert _set(a1, p) == _set(t1, tp), batch
        assert _set(a2, n) == _set(t2, tn), batch


@pytest.mark.parametrize("name", sorted(TRIPLET_MINERS))
def test_triplet_miner_matches_pml(name):
    ours, theirs = TRIPLET_MINERS[name]
    miner = jax.jit(ours())
    for batch in NO_TIES if "batch_hard" in name else tuple(BATCHES):
        emb, lab = BATCHES[batch]
        mask = miner(jnp.asarray(emb), jnp.asarray(lab, jnp.int32))
        assert _set(*mask.to_indices()) == _set(*_theirs(theirs(), emb, lab)), batch
