"""calibrax.parallel: metrics and training steps across devices (one host) and across hosts.

On one host, batches are sharded over a ``data`` mesh axis with ``NamedSharding`` (under
``jax.jit``) or split with ``jax.shard_map`` and synchronised with each metric's ``reduce``
(``psum`` / ``all_gather``). Across hosts, after ``jax.distributed.initialize``, metric state is
gathered from every process and merged in process order, so every host gets the same value.
"""

from calibrax.parallel.data_parallel import data_parallel_train_step
from calibrax.parallel.launch import ProcessResult
from calibrax.parallel.launch import failure_report
from calibrax.parallel.launch import free_port
from calibrax.parallel.launch import launch_local
from calibrax.parallel.multihost import initialize
from calibrax.parallel.multihost import process_shard
from calibrax.parallel.multihost import sync
from calibrax.parallel.sharding import data_mesh
from calibrax.parallel.sharding import replicate
from calibrax.parallel.sharding import shard_batch
from calibrax.parallel.sharding import shard_map_update
from calibrax.parallel.sharding import sharded_update

__all__ = [
    "ProcessResult",
    "data_mesh",
    "data_parallel_train_step",
    "failure_report",
    "free_port",
    "initialize",
    "launch_local",
    "process_shard",
    "replicate",
    "shard_batch",
    "shard_map_update",
    "sharded_update",
    "sync",
]
