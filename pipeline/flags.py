"""Bit flags stored in the ``flags UInt32`` column of readings and usage tables.

Analyst views expose them as names (see ``sql/``); keep the two in step.
"""

from __future__ import annotations

from enum import IntFlag


class Flag(IntFlag):
    NONE = 0
    CLOCK_INVALID = 1 << 0  # DLMS clock status bit 0
    CLOCK_DOUBTFUL = 1 << 1  # DLMS clock status bit 1
    DEVICE_QUALITY = 1 << 2  # the device marked the reading as questionable (quality != 0)
    ICCID_LUHN_FAILED = 1 << 3  # ICCID check digit wrong or missing: flagged, not rejected
    LATE = 1 << 4  # older than a reading already accepted for the same device
    ESTIMATED = 1 << 5  # derived: gap-filled (intervals)
    ROLLOVER = 1 << 6  # derived: register wrapped at its ceiling
    RESET = 1 << 7  # derived: register reset / meter replaced
    IMPLAUSIBLE_JUMP = 1 << 8  # derived: delta above rated power x elapsed time
    CONFLICT = 1 << 9  # derived: conflicting duplicate seen for this key


FLAG_NAMES: dict[int, str] = {int(f): str(f.name).lower() for f in Flag if f is not Flag.NONE}
