"""I/O for wshub: the anyio WebSocket server and client (asyncio or trio), the ASGI app."""

from .asgi import HubApp, ThreadsafeHub
from .blocking import BlockingOperations, LoopBoundHub
from .broker import Broker, BrokerUnavailable
from .client import ClientSession, connect
from .echo import EchoHandler
from .errors import ConnectionClosed, HandshakeError, HandshakeRejected
from .handler import Accept, Handler, HttpResponse
from .hub import HubHandler, HubServer
from .hub_client import HubClient
from .hub_client_feeds import Inbox, Subscription
from .hub_client_sync import BlockingHubClient
from .hub_client_types import (
    CallError,
    CallTimeout,
    ClientClosed,
    ConnectionLost,
    ConnectionState,
    Gap,
    GapReason,
    GaveUp,
    HubClientError,
    Message,
    Presence,
    Refused,
    ServerMessage,
    StateChange,
    StreamPosition,
    Unrecovered,
)
from .hub_context import CommandContext, CommandError, ConnectionContext
from .hub_operations import HubOperations, LoopBinding, WrongThreadError
from .reconnect import Backoff
from .server import WebSocketServer, serve
from .session import ServerSession
from .threaded import HubStoppedError, ThreadedHub

__all__ = [
    "Accept",
    "Backoff",
    "BlockingHubClient",
    "BlockingOperations",
    "Broker",
    "BrokerUnavailable",
    "CallError",
    "CallTimeout",
    "ClientClosed",
    "ClientSession",
    "CommandContext",
    "CommandError",
    "ConnectionClosed",
    "ConnectionContext",
    "ConnectionLost",
    "ConnectionState",
    "EchoHandler",
    "Gap",
    "GapReason",
    "GaveUp",
    "Handler",
    "HandshakeError",
    "HandshakeRejected",
    "HttpResponse",
    "HubApp",
    "HubClient",
    "HubClientError",
    "HubHandler",
    "HubOperations",
    "HubServer",
    "HubStoppedError",
    "Inbox",
    "LoopBinding",
    "LoopBoundHub",
    "Message",
    "Presence",
    "Refused",
    "ServerMessage",
    "ServerSession",
    "StateChange",
    "StreamPosition",
    "Subscription",
    "ThreadedHub",
    "ThreadsafeHub",
    "Unrecovered",
    "WebSocketServer",
    "WrongThreadError",
    "connect",
    "serve",
]
