"""Clients over TLS: a handshake task per new client, then the reactor with memory BIOs.

Theory of operation
-------------------
With ``client_tls: true`` an accepted client first gets a short-lived task
of its own for the handshake (``admit``), bounded by
``tls_handshake_timeout`` and by ``MAX_HANDSHAKES`` at a time, so a client
that connects and says nothing costs a timer, not the reactor's attention::

    accept -> admit: TlsStream(server side).handshake() under the timeout
           -> reactor.add(sock, TlsClientConnection) with the same SSLObject

From then on the client is served by the reactor's one task like every
other, through ``TlsClientConnection``, which overrides only the three
places that touch the socket:

    _read   recv -> incoming BIO -> SSLObject.read until it wants more -> parser
    _write  SSLObject.write(reply) -> outgoing BIO -> the plain socket send
    close   close_notify if the socket takes it at once, then close

Everything else (rounds, pipelining bounds, backpressure, stats) is the
plaintext ``ClientConnection``'s code, and plaintext clients do not pay for
TLS: they are a different class.  A TLS error after the handshake closes
that client (counted in ``client_err``); a failed handshake is counted in
``client_tls_handshake_failures`` and logged with the client's address.
"""

from __future__ import annotations

import contextlib
import logging
import ssl

import trio

from ..net.sockets import LeanSocketStream
from ..tls.peers import TlsState
from ..tls.stream import TlsHandshakeError, TlsStream
from .local import Session
from .reactor import RECEIVE_SIZE, ClientConnection, ClientReactor

__all__ = ["MAX_HANDSHAKES", "TlsClientConnection", "admit"]

log = logging.getLogger("trinomite.client")

#: Client handshakes in progress at once; more connections are closed at once.
MAX_HANDSHAKES = 256


class TlsClientConnection(ClientConnection):
    """A client whose bytes go through an ``ssl.SSLObject`` over memory BIOs."""

    __slots__ = ("bio_in", "bio_out", "tls")

    def __init__(self, secured: TlsStream, session: Session, reactor: ClientReactor) -> None:
        self.tls = secured.ssl
        self.bio_in = secured.incoming
        self.bio_out = secured.outgoing
        super().__init__(secured.transport.socket, session, reactor)

    def _read(self) -> None:
        if not self.bio_in.pending and not self.tls.pending():
            try:
                raw = self.sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                self.readable = False
                return
            except OSError:
                raw = b""
            if not raw:
                self._at_eof()
                return
            if len(raw) < RECEIVE_SIZE:
                self.readable = False
            self.bio_in.write(raw)
        chunks = []
        obj = self.tls
        try:
            while True:
                chunks.append(obj.read(RECEIVE_SIZE))
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._at_eof()
        except ssl.SSLError as exc:
            self.reactor.counters.client_err += 1
            log.warning("client %s: TLS error: %s", self.session.address, exc)
            self.close()
            return
        if self.bio_out.pending and not self.backlog:
            super()._write(self.bio_out.read())  # post-handshake messages (key updates)
        data = b"".join(chunks)
        if data:
            self._parse(data)

    def _at_eof(self) -> None:
        self.reactor.counters.client_eof += 1
        self.eof = True

    def _write(self, data: bytes) -> None:
        try:
            self.tls.write(data)
        except ssl.SSLError as exc:
            log.warning("client %s: TLS error: %s", self.session.address, exc)
            self._lost()
            return
        super()._write(self.bio_out.read())

    def _flush(self) -> bool:
        if not super()._flush():
            return False
        if self.bio_out.pending:
            super()._write(self.bio_out.read())
        return not self.backlog

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(ssl.SSLError, OSError):
                self.tls.unwrap()
            with contextlib.suppress(OSError):
                self.sock.send(self.bio_out.read())
        super().close()


async def admit(stream: LeanSocketStream, state: TlsState, reactor: ClientReactor) -> None:
    """Handshake with a new client, then hand it to the reactor; close it on failure."""
    context = state.client
    name = stream.peer_name()
    if context is None or reactor.handshakes >= MAX_HANDSHAKES:
        state.client_handshake_failures += 1
        log.warning("client %s: refused: too many TLS handshakes in progress", name)
        await trio.aclose_forcefully(stream)
        return
    reactor.handshakes += 1
    secured = TlsStream(stream, context, server_side=True)
    try:
        with trio.fail_after(state.timeout):
            await secured.handshake()
    except (TlsHandshakeError, trio.TooSlowError) as exc:
        state.client_handshake_failures += 1
        reason = str(exc) or f"timed out after {state.timeout:g}s"
        if "wrong version number" in reason or "http request" in reason:
            reason += " (a plaintext client on the TLS listener?)"
        log.warning("client %s: TLS handshake failed: %s", name, reason)
        await trio.aclose_forcefully(stream)
        return
    finally:
        reactor.handshakes -= 1
    reactor.add(stream.socket, lambda session: TlsClientConnection(secured, session, reactor))
