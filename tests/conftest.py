"""Test configuration: 8 simulated CPU devices, float64 available, strict promotion.

``XLA_FLAGS`` must be set before jax is imported anywhere, which is why this happens at the top of
the conftest.
"""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CALIBRAX_HOME", os.path.join(os.path.dirname(__file__), ".calibrax_home"))

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

# A compilation cache private to this process and this run. Many tests build fresh jitted
# functions (per-case lambdas and closures, a new metric per test) that lower to a program an
# earlier test already compiled; with the cache each program compiles once per process (the same
# program gives the same executable, so the same bits). One directory per process, never shared
# (JAX writes a cache file in place, so a reader in another process could see half of it), and
# removed when the run ends.
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="calibrax-tests-jit-cache-")
jax.config.update("jax_compilation_cache_dir", _COMPILATION_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    shutil.rmtree(_COMPILATION_CACHE, ignore_errors=True)
