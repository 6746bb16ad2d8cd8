"""snoopbus consumers: the runtime third-party consumers stand on, and the built-ins.

Public API (everything a plugin author needs) is listed in __all__.
"""

from .consumer import Consumer, Context, Handler, consumer
from .delivery import Batch, Delivery
from .runtime import Counters, Runtime, serve
from .settings import Partition, Settings

__all__ = [
    "Batch",
    "Consumer",
    "Context",
    "Counters",
    "Delivery",
    "Handler",
    "Partition",
    "Runtime",
    "Settings",
    "consumer",
    "serve",
]
