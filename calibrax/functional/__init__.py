"""calibrax.functional."""

__all__: list[str] = []
