"""calibrax.metrics."""

__all__: list[str] = []
