"""calibrax.learned."""

__all__: list[str] = []
