"""Wire codecs: Avro schemas, format detection, encode/decode, and columnar decoding of polls.

* :class:`SchemaStore` parses ``schemas/*.avsc`` once (fingerprints, Confluent ids).
* :class:`Encoder` / :class:`Decoder` turn record dicts into bytes and back; the
  decoder detects Avro single-object, Confluent-framed Avro and JSON by the first
  bytes and raises only :class:`pipeline.errors.CodecError`.
* :func:`decode_readings`, :func:`decode_sim_usage`, :func:`decode_registrations`
  decode a list of :class:`pipeline.envelope.RawMessage` into frames/records plus
  :class:`pipeline.envelope.Rejected` entries.
"""

from pipeline.codecs.codec import Decoded, Decoder, Encoder
from pipeline.codecs.frames import (
    READINGS_SCHEMA,
    SIM_USAGE_SCHEMA,
    decode_readings,
    decode_registrations,
    decode_sim_usage,
)
from pipeline.codecs.jsonrec import BadItem
from pipeline.codecs.store import RecordType, SchemaRegistry, SchemaStore, WireFormat, rabin_fingerprint

__all__ = [
    "READINGS_SCHEMA",
    "SIM_USAGE_SCHEMA",
    "BadItem",
    "Decoded",
    "Decoder",
    "Encoder",
    "RecordType",
    "SchemaRegistry",
    "SchemaStore",
    "WireFormat",
    "decode_readings",
    "decode_registrations",
    "decode_sim_usage",
    "rabin_fingerprint",
]
