"""Client authentication: Redis's AUTH with a default password and named users.

Theory of operation
-------------------
Dynomite never authenticated clients.  A trinomite node does when its
config names a ``requirepass`` (the ``default`` user's password, as in
Redis) or ``users`` (``name:rw:password`` / ``name:ro:password``, like
Redis ACL users reduced to predixy's read-only/read-write rights)::

    connect -> unauthenticated: only AUTH, HELLO and QUIT run (others get
               -NOAUTH), requests are held to Redis's pre-auth limits (10
               arguments, 16 KB bulks: ``requests.PREAUTH_*``) and parsed one
               at a time (``reactor``), so an AUTH
               in a pipeline lifts the limits for what follows it
    AUTH [user] pass  --ok-->  authenticated as that user
                      --bad--> -WRONGPASS ...; the connection stays as it was

A read-only user's writes get ``-NOPERM`` (checked by the dispatcher with
the command table's access column).  Passwords are compared in constant
time.  These credentials are the clients'; the datastore's own
(``datastore_password``) are a separate key used only on the node's
datastore connections.

Pure code: the session state lives in ``local.Session``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from ..config.model import ClientUser

__all__ = [
    "DEFAULT_USER",
    "NOAUTH",
    "NOAUTH_HELLO",
    "WRONGPASS",
    "Authenticator",
]

DEFAULT_USER = "default"
#: Redis 7's replies, byte for byte.
NOAUTH = b"-NOAUTH Authentication required.\r\n"
NOAUTH_HELLO = (
    b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    b"HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
    b"select the RESP protocol version at the same time\r\n"
)
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"


class Authenticator:
    """Who may connect: the default user's password and any named users."""

    def __init__(self, requirepass: str | None = None, users: Iterable[ClientUser] = ()) -> None:
        self.users: dict[str, ClientUser] = {}
        #: AUTH attempts refused (a wrong password or an unknown user).
        self.failures = 0
        if requirepass:
            self.users[DEFAULT_USER] = ClientUser(DEFAULT_USER, requirepass)
        for user in users:
            if user.name in self.users:
                raise ValueError(f"user {user.name!r} is defined twice")
            self.users[user.name] = user

    @property
    def required(self) -> bool:
        """Whether clients start unauthenticated."""
        return bool(self.users)

    def check(self, username: bytes | None, password: bytes) -> ClientUser | None:
        """The user these credentials name, or None (unknown user or wrong password)."""
        name = DEFAULT_USER if username is None else username.decode("utf-8", "replace")
        user = self.users.get(name)
        # Compare even for an unknown user, so timing does not tell which it was.
        expected = user.password.encode() if user is not None else b"\0" * 32
        if hmac.compare_digest(expected, password) and user is not None:
            return user
        self.failures += 1
        return None
