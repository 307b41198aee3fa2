"""calibrax.benchmarks."""

__all__: list[str] = []
