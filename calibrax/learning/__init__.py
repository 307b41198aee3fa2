"""calibrax.learning."""

__all__: list[str] = []
