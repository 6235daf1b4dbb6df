"""Securing peer links: dialling over TLS, admitting callers, and reloading material.

Theory of operation
-------------------
``TlsState`` holds a node's current material (``material.PeerMaterial`` for
peer links, an ``ssl.SSLContext`` for the client listener) and the counters
operators read.  ``reload()`` builds new material from the same files and
swaps it in only if all of it loads; live links keep the sessions they
have, new connections use the new material.

Dialling (``PeerConnection``'s connector calls ``dial`` when
``policy.is_secure`` says the link is secured)::

    TCP connect -> TlsStream.handshake(confirm=True) under tls_handshake_timeout
                -> check_peer: the certificate names the seed's host or name
                   (or holds the shared key)                -> the link is up

Admitting (``admit``, first thing on every accepted peer connection): peek
at the first byte without consuming it.  ``0x16`` is a TLS handshake record:

* no peer TLS here (``secure_server_option: none``) -> refused, logged;
* otherwise handshake under the timeout, check the certificate, and read
  who is calling from it (``policy.identify``); a caller this node would
  talk to in plaintext is refused, because the two ends disagree.

Anything else is a plaintext dnode frame: the link is admitted and the peer
server checks its first frame (``plaintext_refusal``): a caller that must
use TLS by this node's rules is refused.  A refusal on a working stream is
a PARSE_ERROR frame carrying the reason, then close; the dialler's link
fails with that reason instead of guessing.  Every refusal and failed
handshake is counted (``inbound_failures``, by caller address, bounded)
and logged with the caller's address.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Iterable

import trio

from ..config.model import NodeConfig, SecureServerOption
from ..net.sockets import LeanSocketStream
from ..protocol.peer import MessageType, encode_frame
from ..ring.topology import PeerInfo
from .material import (
    Mode,
    PeerMaterial,
    TlsConfigError,
    load_client_context,
    load_peer_material,
    san_names,
)
from .policy import Expectation, identify, is_secure, plaintext_expectation
from .stream import TlsHandshakeError, TlsStream

__all__ = ["TlsState", "dial", "refusal_frame"]

log = logging.getLogger("trinomite.tls")

TLS_HANDSHAKE_RECORD = 0x16
#: Callers tracked in ``inbound_failures``; beyond it they count as "other".
MAX_TRACKED_CALLERS = 256
#: What a dialler is told to check when the other end hung up on its TLS.
AGREE_HINT = "is secure_server_option the same on both nodes?"
#: How a handshake fails when the other end does not speak TLS on the link.
_DISAGREEMENT_SIGNS = ("closed the connection", "wrong version number", "reset by peer")


def refusal_frame(reason: str, same_dc: bool) -> bytes:
    """The frame a receiver sends before closing a link it refuses."""
    return encode_frame(0, MessageType.PARSE_ERROR, reason.encode(), same_dc=same_dc)


class TlsState:
    """A node's TLS material, reloadable, and its TLS counters."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        #: None when no peer link is secured.
        self.peer: PeerMaterial | None = load_peer_material(config)
        #: None without ``client_tls``.
        self.client: ssl.SSLContext | None = load_client_context(config)
        self.timeout = config.tls_handshake_timeout / 1000
        self.reloads = 0
        self.reload_failures = 0
        self.last_reload_error = ""
        #: Refused or failed inbound peer connections, by caller host.
        self.inbound_failures: dict[str, int] = {}
        #: Failed client-listener handshakes.
        self.client_handshake_failures = 0
        if self.peer is not None and self.peer.mode is Mode.SHARED_KEY:
            log.warning(
                "%s: peer links are secured with the key every node shares (pem_key_file %s); "
                "per-node certificates are stronger (tls_cert_file, tls_key_file, tls_ca_file: "
                "see 'python -m trinomite certs'). Dynomite nodes cannot join secured links.",
                config.source,
                config.pem_key_file,
            )

    @property
    def option(self) -> SecureServerOption:
        return self.config.secure_server_option

    def secured(self, local: PeerInfo, peer: PeerInfo) -> bool:
        """Whether the link to ``peer`` is TLS (Dynomite's ``is_secure``)."""
        return is_secure(self.option, local.dc, local.rack, peer.dc, peer.rack)

    def reload(self) -> str:
        """Load every file again; swap only if all load.  Returns the error, or ""."""
        try:
            peer = load_peer_material(self.config)
            client = load_client_context(self.config)
        except TlsConfigError as exc:
            self.reload_failures += 1
            self.last_reload_error = str(exc)
            log.error("TLS reload failed, keeping the loaded certificates: %s", exc)
            return str(exc)
        self.peer, self.client = peer, client
        self.reloads += 1
        self.last_reload_error = ""
        log.info("TLS material reloaded: %s", peer.describe if peer else "no peer TLS")
        return ""

    def count_inbound(self, host: str) -> None:
        failures = self.inbound_failures
        if host not in failures and len(failures) >= MAX_TRACKED_CALLERS:
            host = "other"
        failures[host] = failures.get(host, 0) + 1

    def describe(self) -> dict[str, object]:
        """The /info ``tls`` section."""
        peer = self.peer
        return {
            "secure_server_option": self.option.value,
            "peer_mode": peer.mode.value if peer else "none",
            "peer_material": peer.describe if peer else "",
            "peer_not_after": peer.not_after.isoformat() if peer and peer.not_after else "",
            "client_tls": self.client is not None,
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "last_reload_error": self.last_reload_error,
            "inbound_handshake_failures": dict(self.inbound_failures),
            "client_handshake_failures": self.client_handshake_failures,
        }

    # -- accepting ------------------------------------------------------------

    async def admit(
        self, stream: LeanSocketStream, local: PeerInfo, peers: Iterable[PeerInfo]
    ) -> trio.abc.Stream | None:
        """The stream to serve an accepted peer connection on; None if refused (closed)."""
        sock = stream.socket
        name = stream.peer_name()
        peers = list(peers)
        silence = None
        if self._must_be_tls(name, local, peers):
            silence = self.timeout  # a TLS caller speaks first: its ClientHello
        with trio.move_on_after(silence if silence is not None else math.inf) as waited:
            first = await _peek(sock)
        if waited.cancelled_caught:
            await self._refuse(
                stream,
                name,
                f"sent no TLS handshake within {self.timeout:g}s, but secure_server_option: "
                f"{self.option.value} here requires TLS on that link; {AGREE_HINT}",
                frame=True,
            )
            return None
        if first != TLS_HANDSHAKE_RECORD:
            return stream
        material = self.peer
        if material is None:
            await self._refuse(
                stream,
                name,
                "started TLS, but this node does not secure any peer link "
                f"(secure_server_option: {self.option.value}); {AGREE_HINT}",
            )
            return None
        tls = TlsStream(stream, material.server, server_side=True)
        try:
            with trio.fail_after(self.timeout):
                await tls.handshake()
        except trio.TooSlowError:
            await self._refuse(stream, name, f"TLS handshake timed out after {self.timeout:g}s")
            return None
        except TlsHandshakeError as exc:
            await self._refuse(stream, name, f"TLS handshake failed: {exc}")
            return None
        der = tls.ssl.getpeercert(binary_form=True)
        reason = material.check_peer(der, tls.ssl.getpeercert() or {}, ())
        if not reason:
            names, uris = san_names(tls.ssl.getpeercert() or {})
            caller = identify(peers, uris, names)
            if caller is not None and not self.secured(local, caller):
                reason = (
                    f"{caller.name} ({caller.dc}/{caller.rack}) used TLS, but "
                    f"secure_server_option: {self.option.value} here keeps that link "
                    f"plaintext; {AGREE_HINT}"
                )
        if reason:
            await self._refuse(tls, name, reason, frame=True)
            return None
        return tls

    def _must_be_tls(self, name: str, local: PeerInfo, peers: list[PeerInfo]) -> bool:
        """Whether this caller must use TLS, known before it sends a byte."""
        if self.peer is None:
            return False
        if self.option is SecureServerOption.ALL:
            return True
        host = name.rpartition(":")[0]
        caller = identify(peers, (), [host]) if host else None
        return caller is not None and self.secured(local, caller)

    def plaintext_refusal(
        self, name: str, same_dc: bool, local: PeerInfo, peers: Iterable[PeerInfo]
    ) -> str:
        """Why a plaintext caller whose first frame says ``same_dc`` is refused; "" if not."""
        host = name.rpartition(":")[0]
        caller = identify(peers, (), [host]) if host else None
        if caller is not None:
            must = self.secured(local, caller)
            who = f"{caller.name} ({caller.dc}/{caller.rack})"
        else:
            must = plaintext_expectation(self.option, same_dc) is Expectation.MISMATCH
            who = "a peer in " + ("this datacenter" if same_dc else "another datacenter")
        if not must:
            return ""
        return (
            f"{who} sent plaintext, but secure_server_option: {self.option.value} here "
            f"requires TLS on that link; {AGREE_HINT}"
        )

    async def refuse(self, stream: trio.abc.Stream, name: str, reason: str, same_dc: bool) -> None:
        """Refuse a working link: tell the dialler why, count, log, close."""
        await self._refuse(stream, name, reason, frame=True, same_dc=same_dc)

    async def _refuse(
        self,
        stream: trio.abc.Stream,
        name: str,
        reason: str,
        *,
        frame: bool = False,
        same_dc: bool = True,
    ) -> None:
        self.count_inbound(name.rpartition(":")[0] or name)
        log.warning("peer %s: refused: %s", name, reason)
        if frame:
            with (
                trio.move_on_after(self.timeout),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await stream.send_all(refusal_frame(reason, same_dc))
        await trio.aclose_forcefully(stream)


async def _peek(sock: socket.socket) -> int | None:
    """The first byte waiting on ``sock`` (not consumed); None at EOF or on error."""
    while True:
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        except OSError:
            return None
        return first[0] if first else None


async def dial(
    stream: LeanSocketStream, material: PeerMaterial, peer: PeerInfo, handshake_timeout: float
) -> TlsStream:
    """Secure a freshly connected peer link, or raise ``TlsHandshakeError`` saying why."""
    tls = TlsStream(stream, material.client, server_side=False, server_hostname=peer.alias)
    try:
        with trio.fail_after(handshake_timeout):
            await tls.handshake(confirm=True)
    except trio.TooSlowError:
        raise TlsHandshakeError(f"TLS handshake timed out after {handshake_timeout:g}s") from None
    except TlsHandshakeError as exc:
        text = str(exc)
        if any(sign in text for sign in _DISAGREEMENT_SIGNS):
            text = f"{text} ({AGREE_HINT})"
        raise TlsHandshakeError(f"TLS handshake failed: {text}") from None
    der = tls.ssl.getpeercert(binary_form=True)
    wanted = [peer.host] + ([peer.alias] if peer.alias else [])
    reason = material.check_peer(der, tls.ssl.getpeercert() or {}, wanted)
    if reason:
        raise TlsHandshakeError(f"TLS peer refused: {reason}")
    return tls
