"""The protocol floor: a bare pynetdicom MWL SCP that answers every C-FIND with one
fixed item and no lookup (TCP_NODELAY on accepted sockets, like EBW).

    python -m bench.floor_scp PORT
"""

from __future__ import annotations

import socket
import sys

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind
from pynetdicom.transport import ThreadedAssociationServer

_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False


class NoDelayServer(ThreadedAssociationServer):
    def get_request(self):  # type: ignore[no-untyped-def]
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


def fixed_item() -> Dataset:
    ds = Dataset()
    ds.PatientName = "FLOOR^FIXED"
    ds.PatientID = "FLOOR1"
    ds.AccessionNumber = "FL000000000001"
    ds.AdmissionID = "V1"
    ds.StudyInstanceUID = "2.25.1"
    sps = Dataset()
    sps.Modality = "US"
    sps.ScheduledProcedureStepStartDate = "20260101"
    sps.ScheduledProcedureStepStartTime = "000000"
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def main() -> None:
    port = int(sys.argv[1])
    item = fixed_item()

    def handle(event):  # type: ignore[no-untyped-def]
        yield 0xFF00, item

    ae = AE(ae_title="FLOOR")
    ae.add_supported_context(ModalityWorklistInformationFind)
    ae.maximum_associations = 64
    server = ae.make_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_FIND, handle)], server_class=NoDelayServer)
    ae._servers.append(server)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
