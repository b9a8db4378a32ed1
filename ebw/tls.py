"""TLS for the listeners (optional, per listener): MLLP and DICOM of an endpoint, and HTTP.

Server contexts require TLS 1.2 or later.  With a client CA (``EBW_TLS_CLIENT_CA``) the
MLLP and DICOM listeners require and verify client certificates (mutual TLS).  A
certificate or key that cannot be loaded is a configuration error naming the variable.
"""

from __future__ import annotations

import ssl


def server_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def check_pair(cert: str, key: str, client_ca: str = "") -> str:
    """'' if the files load as a server context, else why not."""
    try:
        server_context(cert, key, client_ca)
    except (OSError, ssl.SSLError) as exc:
        return str(exc.strerror or exc) if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ""
