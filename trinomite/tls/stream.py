"""A TLS ``trio.abc.Stream`` over a lean socket, on stdlib ``ssl`` memory BIOs.

Theory of operation
-------------------
``TlsStream`` runs an ``ssl.SSLObject`` between two ``ssl.MemoryBIO``s over
a ``LeanSocketStream``::

    send_all(data):     obj.write(data) -> outgoing BIO -> socket.send_all
    receive_some():     obj.read() --SSLWantReadError--> socket.receive_some
                        -> incoming BIO -> obj.read() again

It replaces ``trio.SSLStream`` for peer links for two reasons, both measured
or observed rather than assumed:

* **The TLS 1.3 verdict.**  In TLS 1.3 the client's handshake is complete
  before the server has judged the client's certificate; with
  ``trio.SSLStream`` a dialler whose certificate is refused sees a link that
  is up, routes requests over it, and only learns of the refusal from the
  first read.  ``handshake(confirm=True)`` goes on reading until the server's
  first NewSessionTicket (sent only once the server accepted the client) or
  its alert, so a refused certificate fails the *handshake*, with the
  server's reason, and the link never comes up.
* **Cost.**  No locks, no conflict detectors and no forced checkpoints per
  call beyond the lean socket's: one ``obj.write`` and one ``send`` per
  batch of frames.

A link has one reading task and one writing task.  Only the writer and the
handshake touch the socket's send side: bytes the reader's ``obj.read``
produces (a TLS 1.3 KeyUpdate answer) wait in the outgoing BIO for the next
``send_all``.  Renegotiation is disabled (``OP_NO_RENEGOTIATION``, set by ``material``), so a
read never has to write to make progress.  EOF without close_notify is
reported as EOF, as for a plain socket; any other TLS error is
``trio.BrokenResourceError`` with the ``ssl`` reason.
"""

from __future__ import annotations

import contextlib
import ssl

import trio

from ..net.sockets import RECEIVE_SIZE, LeanSocketStream

__all__ = ["TlsHandshakeError", "TlsStream"]


class TlsHandshakeError(Exception):
    """The TLS handshake failed or the other end's certificate was refused."""


class TlsStream(trio.abc.Stream):
    """TLS over one ``LeanSocketStream``; build it, then ``await handshake()``."""

    def __init__(
        self,
        transport: LeanSocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self.transport = transport
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._server_side = server_side
        #: Application bytes that arrived while confirming the handshake.
        self._early = b""

    # -- handshake -----------------------------------------------------------

    async def _pump(self) -> None:
        """Send what TLS wrote, then wait for and feed what the other end sent."""
        await self._send_pending()
        data = await self.transport.receive_some(RECEIVE_SIZE)
        if not data:
            raise TlsHandshakeError("the other end closed the connection during the handshake")
        self.incoming.write(data)

    async def _send_pending(self) -> None:
        if self.outgoing.pending:
            await self.transport.send_all(self.outgoing.read())

    async def handshake(self, *, confirm: bool = False) -> None:
        """Complete the handshake; raise ``TlsHandshakeError`` with the reason.

        ``confirm`` (dialler side): under TLS 1.3 also wait for the server's
        acceptance of our certificate (see the module doc).  Run it under
        a deadline.
        """
        try:
            while True:
                try:
                    self.ssl.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await self._pump()
            await self._send_pending()
            if confirm and not self._server_side and self.ssl.version() == "TLSv1.3":
                await self._confirm()
        except ssl.SSLError as exc:
            self._send_alert()  # tell the other end why, as OpenSSL wrote it
            raise TlsHandshakeError(_reason(exc)) from None
        except (trio.BrokenResourceError, OSError) as exc:
            raise TlsHandshakeError(f"connection failed during the handshake: {exc}") from None

    def _send_alert(self) -> None:
        if self.outgoing.pending:
            with contextlib.suppress(OSError):
                self.transport.socket.send(self.outgoing.read())

    async def _confirm(self) -> None:
        while True:
            session = self.ssl.session
            if session is not None and session.has_ticket:
                return
            try:
                early = self.ssl.read(RECEIVE_SIZE)
            except ssl.SSLWantReadError:
                session = self.ssl.session
                if session is not None and session.has_ticket:
                    return
                await self._pump()
                continue
            if not early:
                raise TlsHandshakeError("the other end closed the connection after the handshake")
            # The server spoke first: it accepted us.  Keep the bytes for receive_some.
            self._early = early
            return

    # -- trio.abc.Stream -------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._early:
            data, self._early = self._early, b""
            return data
        size = max_bytes or RECEIVE_SIZE
        obj = self.ssl
        while True:
            try:
                return obj.read(size)
            except ssl.SSLWantReadError:
                data = await self.transport.receive_some(RECEIVE_SIZE)
                if not data:
                    return b""
                self.incoming.write(data)
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS: {_reason(exc)}") from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                written = self.ssl.write(view)
                view = view[written:]
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS: {_reason(exc)}") from exc
        await self.transport.send_all(self.outgoing.read())

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    def peer_name(self) -> str:
        return self.transport.peer_name()

    def shutdown_reading(self) -> None:
        self.transport.shutdown_reading()

    async def aclose(self) -> None:
        """Send close_notify if the socket takes it at once, then close."""
        with contextlib.suppress(ssl.SSLError, OSError):
            self.ssl.unwrap()
        if self.outgoing.pending:
            with contextlib.suppress(OSError):
                self.transport.socket.send(self.outgoing.read())
        await self.transport.aclose()


def _reason(exc: ssl.SSLError) -> str:
    """The useful part of an ``ssl`` error: OpenSSL's reason and verify message."""
    verify = getattr(exc, "verify_message", None)
    reason = exc.reason or str(exc)
    text = reason.replace("_", " ").lower() if reason.isupper() else reason
    return f"{text}: {verify}" if verify else text
