"""Test configuration: 8 simulated CPU devices, float64 available, strict promotion.

``XLA_FLAGS`` must be set before jax is imported anywhere, which is why this happens at the top of
the conftest.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CALIBRAX_HOME", os.path.join(os.path.dirname(__file__), ".calibrax_home"))

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
