"""Public access to the registry of metrics, losses and backbones (see ``calibrax.core.registry``)."""

from calibrax.core.registry import DOMAINS
from calibrax.core.registry import KINDS
from calibrax.core.registry import Entry
from calibrax.core.registry import get
from calibrax.core.registry import get_entry
from calibrax.core.registry import list_entries
from calibrax.core.registry import names
from calibrax.core.registry import register

__all__ = ["DOMAINS", "KINDS", "Entry", "get", "get_entry", "list_entries", "names", "register"]
