"""wshub: a WebSocket hub for Python applications.

``wshub.core`` holds the sans-IO state machines; ``wshub.adapters`` drives
them over real sockets with anyio (asyncio or trio).
"""

from .core import *  # noqa: F403
from .core import __all__ as _core_all

__version__ = "0.1.0"
__all__ = [*_core_all, "__version__"]
