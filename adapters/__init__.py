"""I/O for wshub: the anyio WebSocket server and client (asyncio or trio)."""

from .client import ClientSession, connect
from .echo import EchoHandler
from .errors import ConnectionClosed, HandshakeError, HandshakeRejected
from .handler import Accept, Handler, HttpResponse
from .hub import HubHandler, HubServer
from .hub_context import CommandContext, CommandError, ConnectionContext
from .hub_operations import HubOperations
from .server import WebSocketServer, serve
from .session import ServerSession
from .threaded import HubStoppedError, ThreadedHub

__all__ = [
    "Accept",
    "ClientSession",
    "CommandContext",
    "CommandError",
    "ConnectionClosed",
    "ConnectionContext",
    "EchoHandler",
    "Handler",
    "HandshakeError",
    "HandshakeRejected",
    "HttpResponse",
    "HubHandler",
    "HubOperations",
    "HubServer",
    "HubStoppedError",
    "ServerSession",
    "ThreadedHub",
    "WebSocketServer",
    "connect",
    "serve",
]
