"""I/O for wshub: the anyio WebSocket server and client (asyncio or trio)."""

from .client import ClientSession, connect
from .echo import EchoHandler
from .errors import ConnectionClosed, HandshakeError, HandshakeRejected
from .handler import Accept, Handler, HttpResponse
from .server import WebSocketServer, serve
from .session import ServerSession

__all__ = [
    "Accept",
    "ClientSession",
    "ConnectionClosed",
    "EchoHandler",
    "Handler",
    "HandshakeError",
    "HandshakeRejected",
    "HttpResponse",
    "ServerSession",
    "WebSocketServer",
    "connect",
    "serve",
]
