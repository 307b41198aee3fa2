"""calibrax.backbones."""

__all__: list[str] = []
