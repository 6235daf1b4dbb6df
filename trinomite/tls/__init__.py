"""TLS: which links are secured, certificates, and the TLS streams peer and client links use.

``policy`` (pure) applies ``secure_server_option`` and tells who a
certificate names; ``certs`` makes CAs, node certificates and Dynomite's
shared key; ``material`` loads and checks a node's files into
``ssl.SSLContext``s; ``stream`` is TLS over a lean socket; ``peers``
dials and admits secured peer links and reloads material; ``command`` is
``python -m trinomite certs``.  Peering and the client listener both use
this package, which is why it stands beside them rather than inside either.
"""
