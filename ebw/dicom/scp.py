"""The DICOM listener of an endpoint: pynetdicom AE with MWL FIND, Verification, and
(``ebw.dicom.store_scp``) Storage and MPPS.

The listening socket is bound by the supervisor before it forks (so a port in
use is reported before anything starts) and shared by every worker: each
worker runs a pynetdicom server on the inherited socket and the kernel hands
each new association to one of them.  Accepted sockets get ``TCP_NODELAY``
(pynetdicom leaves Nagle on: ~90 ms per C-FIND round trip instead of ~8 ms).

pynetdicom logs C-FIND identifiers by default; that is switched off here
(patient data).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification
from pynetdicom.transport import ThreadedAssociationServer

from ..config import EndpointConfig
from .find import WorklistIndex, make_handler
from .store_scp import StudyIn, add_contexts

log = logging.getLogger(__name__)

_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
_config.LOG_HANDLER_LEVEL = "none"


class SharedSocketServer(ThreadedAssociationServer):
    """A pynetdicom association server on an already listening, inherited socket.

    ``allow_from``: networks a peer must be in (empty: any); others are
    disconnected before the association starts."""

    def __init__(
        self, *args: Any, listen_socket: socket.socket, allow_from: tuple[str, ...] = (), **kwargs: Any
    ) -> None:
        self._listen_socket = listen_socket
        self._allow_from = [ipaddress.ip_network(n) for n in allow_from]
        super().__init__(*args, **kwargs)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if not self._allow_from:
            return True
        try:
            peer = ipaddress.ip_address(client_address[0])
        except ValueError:
            return False
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped:
            peer = peer.ipv4_mapped
        if any(peer in net for net in self._allow_from):
            return True
        log.warning("DICOM connection from %s refused: not in EBW_DICOM_ALLOW_FROM", client_address[0])
        return False

    def server_bind(self) -> None:
        self.socket.close()
        self.socket = self._listen_socket
        # Non-blocking accept: with several processes on one socket, another
        # worker may take the connection between select() and accept().
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        pass  # already listening

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = self.socket.accept()
        client.setblocking(True)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True)
        return client, address

    def server_close(self) -> None:
        # Never shutdown() the shared listening socket: that would stop it in
        # every worker.  Closing our descriptor is enough.
        self.socket.close()


class DicomListener:
    """pynetdicom server for one endpoint, running in a thread of a worker."""

    def __init__(
        self,
        index: WorklistIndex,
        cfg: EndpointConfig,
        listen_socket: socket.socket,
        max_associations: int = 64,
        study_in: StudyIn | None = None,
        max_pdu: int = 262144,
    ) -> None:
        scp_aet = cfg.scp_aet
        ae = AE(ae_title=scp_aet)
        ae.add_supported_context(ModalityWorklistInformationFind)
        ae.add_supported_context(Verification)
        handlers: list[tuple[Any, Any]] = [(evt.EVT_C_FIND, make_handler(index))]
        if study_in is not None:
            add_contexts(ae)
            handlers += study_in.handlers()
        ae.require_called_aet = True
        ae.require_calling_aet = list(cfg.calling_aets)
        ae.maximum_associations = max_associations
        ae.maximum_pdu_size = max_pdu
        ae.network_timeout = 60
        ae.acse_timeout = 30
        ae.dimse_timeout = 30
        self.ae = ae
        self.server = ae.make_server(
            listen_socket.getsockname()[:2],
            ae_title=scp_aet,
            evt_handlers=handlers,
            server_class=SharedSocketServer,
            listen_socket=listen_socket,
            allow_from=cfg.dicom_allow_from,
        )
        if cfg.dicom_tls_cert:
            from ..tls import server_context

            self.server.ssl_context = server_context(cfg.dicom_tls_cert, cfg.dicom_tls_key, cfg.tls_client_ca)
        ae._servers.append(self.server)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"dicom-{index.ep}", daemon=True
        )

    def apply(self, cfg: EndpointConfig) -> None:
        """Take changed settings (SCP AE title, allowed calling AE titles and addresses)
        for the next association; the listening socket stays as it is."""
        self.ae.ae_title = cfg.scp_aet
        self.server.ae_title = cfg.scp_aet
        self.ae.require_calling_aet = list(cfg.calling_aets)
        self.server._allow_from = [ipaddress.ip_network(n) for n in cfg.dicom_allow_from]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        try:
            self.server.shutdown()
        except Exception:  # noqa: BLE001
            log.exception("stopping the DICOM listener")
