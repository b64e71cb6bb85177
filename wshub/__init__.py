"""wshub: a WebSocket hub for Python applications.

``wshub.core`` holds the sans-IO state machines (everything below is
re-exported from it); ``wshub.adapters`` drives them over real sockets with
anyio (asyncio or trio).
"""

from . import core
from .core import *  # noqa: F403

__version__ = "0.1.0"
__all__ = core.__all__ + ["__version__"]  # noqa: RUF005
