"""The anyio WebSocket server: listen, run one session per connection, stop gracefully.

Plain TCP connections are driven straight on their non-blocking sockets
(``SocketDriver``: one task each, writes without a task); TLS connections
over anyio's TLS stream (``Driver``).

Each accepted connection runs in its own shielded cancel scope, so that
cancelling ``serve`` does not kill connections abruptly: the shutdown path
closes them with 1001, waits up to ``shutdown_timeout`` for the closing
handshakes, and only then cancels what remains.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl as _ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream, TaskGroup, TaskStatus
from anyio.streams.tls import TLSStream

from ..core import Limits, ServerConnection
from ..core.hosts import is_loopback, loopback_hosts, normalize_hosts
from ._clock import current_time
from ._scheduler import Scheduler
from .handler import Handler
from .recording import Recorder, RecordingServerConnection
from .session import ServerSession

__all__ = ["WebSocketServer", "serve"]

Remote = tuple[str, int] | None
"""The peer's address and port as ``accept`` returned them (None for a Unix socket)."""

logger = logging.getLogger("wshub.server")

_ACCEPT_RETRY_DELAY = 0.1  # after accept() fails (EMFILE...), before trying again
_ACCEPT_BURST = 64  # connections accepted in a row before letting them run
_SHUTDOWN_REASON = "server shutting down"


@dataclass(eq=False, slots=True)
class _Slot:
    """A connection: how to cancel its task and, once created, its session.

    On asyncio the connection is a plain asyncio task (``task``): anyio's task
    group bookkeeping costs ~2 KB per task, which is most of an idle
    connection. Such a task is not a child of ``serve``'s cancel scope, so it
    needs no shield. On trio it is a task of the server's nursery, shielded by
    its own ``scope``.
    """

    scope: anyio.CancelScope | None = None
    task: asyncio.Task[None] | None = None
    session: ServerSession | None = field(default=None)

    def cancel(self) -> None:
        if self.scope is not None:
            self.scope.cancel()
        elif self.task is not None:
            self.task.cancel()


class WebSocketServer:
    """A WebSocket (and plain HTTP) server on one TCP port, driven by a ``Handler``.

    Run it with ``await server.serve()`` in a task group (``await
    tg.start(server.serve)`` returns once it listens); stop it with
    ``server.shutdown()`` or by cancelling ``serve``.

    ``allowed_hosts``: the ``Host`` values requests may carry (else 403 "host
    not allowed", against DNS rebinding). "auto" (default): bound to a
    loopback address, ``localhost``, ``127.0.0.1`` and ``[::1]`` with the
    bound port; bound elsewhere, any Host. None: any Host.

    ``record``: a directory (or a ``Recorder``) where every connection's
    inputs and outputs are recorded for ``wshub replay`` (see
    ``adapters.recording``; tokens redacted). Off by default.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl: _ssl.SSLContext | None = None,
        limits: Limits | None = None,
        compression: bool = False,
        shutdown_timeout: float = 5.0,
        allowed_hosts: Iterable[str] | Literal["auto"] | None = "auto",
        record: str | os.PathLike[str] | Recorder | None = None,
    ) -> None:
        self.handler = handler
        self.recorder = record if isinstance(record, Recorder) or record is None else None
        self._record_dir = None if isinstance(record, Recorder) else record
        self.host = host
        self.port = port
        self.ssl = ssl
        self.limits = limits or Limits()
        self.compression = compression
        self.shutdown_timeout = shutdown_timeout
        self._allowed_hosts_setting = allowed_hosts
        self.allowed_hosts: frozenset[str] | None = None
        if allowed_hosts is not None and allowed_hosts != "auto":
            self.allowed_hosts = normalize_hosts(allowed_hosts)
        self._slots: set[_Slot] = set()
        self._stop = anyio.Event()
        self._stopping = False
        self._idle: anyio.Event | None = None

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def sessions(self) -> list[ServerSession]:
        """The sessions whose connection is open."""
        return [s.session for s in self._slots if s.session is not None and s.session.is_open]

    def shutdown(self) -> None:
        """Stop gracefully (call from the event loop); ``serve`` returns when done."""
        self._stop.set()

    async def serve(
        self, *, task_status: TaskStatus[WebSocketServer] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, report started (with this server), serve until shutdown or cancellation."""
        multi = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        own_recorder = self.recorder is None and self._record_dir is not None
        if own_recorder:
            assert self._record_dir is not None
            self.recorder = Recorder(self._record_dir)
            logger.info("recording connections to %s", self.recorder.path)
        listeners = multi.listeners
        address = listeners[0].extra(SocketAttribute.local_address)
        self.host, self.port = str(address[0]), int(address[1])
        if self._allowed_hosts_setting == "auto":
            loopback = is_loopback(self.host)
            self.allowed_hosts = loopback_hosts(self.port) if loopback else None
        try:
            async with anyio.create_task_group() as service:
                # Timers and writers of every connection; cancelled once they are all gone.
                scheduler = Scheduler(service.start_soon)
                service.start_soon(scheduler.run)
                try:
                    async with anyio.create_task_group() as connections:
                        try:
                            async with anyio.create_task_group() as accepting:
                                for listener in listeners:
                                    accepting.start_soon(
                                        self._accept_loop,
                                        listener.extra(SocketAttribute.raw_socket),
                                        self._starter(connections, scheduler),
                                    )
                                logger.info("listening on %s", self.url)
                                task_status.started(self)
                                await self._stop.wait()
                                accepting.cancel_scope.cancel()
                        finally:
                            with anyio.CancelScope(shield=True):
                                await multi.aclose()
                                await self._drain()
                finally:
                    service.cancel_scope.cancel()
        finally:
            if own_recorder and self.recorder is not None:
                self.recorder.close()
                self.recorder = None
            logger.info("stopped serving %s", self.url)

    def _starter(
        self, connections: TaskGroup, scheduler: Scheduler
    ) -> Callable[[socket.socket, Remote], None]:
        """How an accepted socket becomes a running connection on this event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None

        def start(sock: socket.socket, remote: Remote) -> None:
            slot = _Slot()
            self._slots.add(slot)  # now: a shutdown from here on waits for it
            if loop is None:
                connections.start_soon(self._shielded_connection, sock, remote, slot, scheduler)
            else:
                slot.task = loop.create_task(self._connection(sock, remote, slot, scheduler))
                # Also when cancelled before it ever ran (no finally of its own then).
                slot.task.add_done_callback(lambda _task: self._forget(slot, sock))

        return start

    async def _accept_loop(
        self, listening: socket.socket, start: Callable[[socket.socket, Remote], None]
    ) -> None:
        """Accept every pending connection per wake-up (the listening socket is non-blocking)."""
        burst = 0
        tcp = listening.family in (socket.AF_INET, socket.AF_INET6)
        while True:
            try:
                sock, address = listening.accept()
            except (BlockingIOError, InterruptedError):
                burst = 0
                try:
                    await anyio.wait_readable(listening)
                except (anyio.ClosedResourceError, OSError):
                    return
                continue
            except OSError as exc:  # EMFILE, ECONNABORTED...: the listener lives on
                if listening.fileno() < 0:
                    return
                logger.warning("accept failed: %s", exc)
                await anyio.sleep(_ACCEPT_RETRY_DELAY)
                continue
            sock.setblocking(False)
            if tcp:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                start(sock, (address[0], address[1]))
            else:
                start(sock, None)
            burst += 1
            if burst >= _ACCEPT_BURST:  # let the accepted ones run
                burst = 0
                await anyio.lowlevel.checkpoint()

    async def _shielded_connection(
        self, sock: socket.socket, remote: Remote, slot: _Slot, scheduler: Scheduler
    ) -> None:
        with anyio.CancelScope(shield=True) as scope:
            slot.scope = scope
            await self._connection(sock, remote, slot, scheduler)

    async def _connection(
        self, sock: socket.socket, remote: Remote, slot: _Slot, scheduler: Scheduler
    ) -> None:
        stream: ByteStream | None = None
        recording: RecordingServerConnection | None = None
        try:
            transport: ByteStream | socket.socket = sock
            if self.ssl is not None:
                try:
                    with anyio.fail_after(self.limits.handshake_timeout):
                        stream = await SocketStream.from_socket(sock)
                        stream = await TLSStream.wrap(
                            stream,
                            server_side=True,
                            ssl_context=self.ssl,
                            standard_compatible=False,
                        )
                except (TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream, OSError) as exc:
                    # A stall, a reset, or a client that hung up (one that does
                    # not trust our certificate): the client's doing, not ours.
                    logger.info("TLS handshake with %s failed: %r", remote, exc)
                    return
                transport = stream
            recorder = self.recorder
            if recorder is None:
                core = ServerConnection(
                    limits=self.limits,
                    compression=self.compression,
                    clock=current_time,
                    allowed_hosts=self.allowed_hosts,
                )
            else:
                core = recording = recorder.server_connection(
                    limits=self.limits,
                    compression=self.compression,
                    clock=current_time,
                    allowed_hosts=self.allowed_hosts,
                    remote=remote,
                )
            session = ServerSession(
                core, transport, self.handler, remote=remote, scheduler=scheduler
            )
            slot.session = session
            if self._stopping:
                session._shutdown(1001, _SHUTDOWN_REASON)
            await session._run()
        except Exception:
            logger.exception("connection from %s crashed", remote)
        finally:
            if stream is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.aclose_forcefully(stream)
            if recording is not None:
                recording.recorder.finish(recording.number)
            self._forget(slot, sock)

    def _forget(self, slot: _Slot, sock: socket.socket) -> None:
        """The connection is over (idempotent)."""
        sock.close()
        self._slots.discard(slot)
        if not self._slots and self._idle is not None:
            self._idle.set()

    async def _drain(self) -> None:
        """Close every connection (1001 / 503), wait, then cancel what remains."""
        self._stopping = True
        self._idle = anyio.Event()
        for slot in list(self._slots):
            if slot.session is None:
                slot.cancel()  # not started yet, or still in the TLS handshake
            else:
                slot.session._shutdown(1001, _SHUTDOWN_REASON)
        if self._slots:
            with anyio.move_on_after(self.shutdown_timeout):
                await self._idle.wait()
        if self._slots:
            for slot in list(self._slots):
                logger.warning("connection %s did not close in time; aborting", slot.session)
                slot.cancel()
            await self._idle.wait()


async def serve(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl: _ssl.SSLContext | None = None,
    limits: Limits | None = None,
    compression: bool = False,
    shutdown_timeout: float = 5.0,
    allowed_hosts: Iterable[str] | Literal["auto"] | None = "auto",
    record: str | os.PathLike[str] | Recorder | None = None,
    task_status: TaskStatus[WebSocketServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Build a ``WebSocketServer`` and serve until cancelled or shut down."""
    server = WebSocketServer(
        handler,
        host=host,
        port=port,
        ssl=ssl,
        limits=limits,
        compression=compression,
        shutdown_timeout=shutdown_timeout,
        allowed_hosts=allowed_hosts,
        record=record,
    )
    await server.serve(task_status=task_status)
