"""The one error type of the DLMS package.

Every deliberate failure of the parsers and of the decryption carries a
dead-letter :class:`~pipeline.envelope.Reason`. ``detail`` is meant for the
``dl.detail`` header and logs: it names positions, tags, lengths, system titles
and frame counters, never key material and never plaintext bytes.
"""

from __future__ import annotations

from pipeline.envelope import Reason
from pipeline.errors import CodecError


class DlmsError(CodecError):
    """A frame, APDU or notification that cannot be turned into a reading.

    A :class:`~pipeline.errors.CodecError` (hence a ``TelemetryError``) whose
    ``reason`` is one of the seven ``meter.frames`` reasons.
    """

    reason: Reason

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
