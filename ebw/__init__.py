"""EBW: an Encounter Based Worklist server.

HL7 v2 ADT over MLLP in, an LMDB encounter index, DICOM Modality Worklist out.
"""

__version__ = "0.1.0"
