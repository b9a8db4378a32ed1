"""Socket tuning for pynetdicom clients (SCU side).

pynetdicom leaves Nagle's algorithm on.  Measured on loopback: a one-item
C-FIND round trip takes ~90 ms with Nagle on both ends and ~8 ms with
``TCP_NODELAY`` on both.  The SCP side sets it on accepted sockets
(``ebw.dicom.scp``); ``nodelay_scu()`` does the same for every association
this process requests (load harness, tests, later the PACS push).
"""

from __future__ import annotations

import socket
from typing import Any

from pynetdicom.transport import AssociationSocket

_patched = False


def nodelay_scu() -> None:
    global _patched
    if _patched:
        return
    original = AssociationSocket._create_socket

    def _create_socket(self: AssociationSocket, address: Any) -> socket.socket:
        sock = original(self, address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    AssociationSocket._create_socket = _create_socket  # type: ignore[method-assign]
    _patched = True
