"""DLMS/COSEM push frames over wired M-Bus: framing, decryption, decoding, encoding.

The pure part of the ``meter.frames`` path (see ``domain/dlms.md``): no Kafka,
no ClickHouse. The worker builds one :class:`FrameDecoder` and feeds it batches
of :class:`~pipeline.envelope.RawMessage`; the simulator and the tests build
frames with :func:`encode_frames`.

Modules: ``mbus`` (long frames, segment numbering), ``reassembly`` (split APDUs),
``apdu`` (general-glo-ciphering, AES-GCM/CTR), ``axdr`` (A-XDR, date-time),
``notification`` (data-notification -> OBIS values), ``keys`` (key store and
file format), ``replay`` (frame-counter guard), ``encode`` (encoder), ``decoder``
(the facade).
"""

from pipeline.dlms.apdu import CipheredApdu, decrypt, encrypt, parse_ciphered
from pipeline.dlms.axdr import DateTime, encode_datetime, parse_datetime
from pipeline.dlms.decoder import DecodedReading, FrameDecoder, clock_flags
from pipeline.dlms.encode import Layout, Push, Register, encode_frames, encode_notification
from pipeline.dlms.errors import DlmsError
from pipeline.dlms.keys import KeyEntry, KeyStore
from pipeline.dlms.mbus import Frame, build_frame, parse_frames, segment_apdu
from pipeline.dlms.notification import Notification, ObisValue, parse_notification, to_measurements
from pipeline.dlms.reassembly import Assembled, Dropped, Reassembler
from pipeline.dlms.replay import ReplayGuard

__all__ = [
    "Assembled",
    "CipheredApdu",
    "DateTime",
    "DecodedReading",
    "DlmsError",
    "Dropped",
    "Frame",
    "FrameDecoder",
    "KeyEntry",
    "KeyStore",
    "Layout",
    "Notification",
    "ObisValue",
    "Push",
    "Reassembler",
    "Register",
    "ReplayGuard",
    "build_frame",
    "clock_flags",
    "decrypt",
    "encode_datetime",
    "encode_frames",
    "encode_notification",
    "encrypt",
    "parse_ciphered",
    "parse_datetime",
    "parse_frames",
    "parse_notification",
    "segment_apdu",
    "to_measurements",
]
