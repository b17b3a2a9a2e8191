"""Frame-counter replay guard, per system title.

The state is any ``MutableMapping[str, int]`` (system title in upper-case hex ->
last accepted frame counter): a dict in tests, a Faust table in the worker so
that it survives restarts. :meth:`check` never writes; :meth:`accept` is called
only once a frame has fully decoded, so a frame refused for any other reason
(unknown key, wrong key, bad plaintext) does not move the counter and can be
re-processed later.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from pipeline.dlms.errors import DlmsError
from pipeline.envelope import Reason


class ReplayGuard:
    def __init__(self, state: MutableMapping[str, int]) -> None:
        self.state = state

    def last(self, system_title_hex: str) -> int | None:
        value = self.state.get(system_title_hex.upper())
        return None if value is None else int(value)

    def check(self, system_title_hex: str, frame_counter: int) -> None:
        """Raise ``replayed_frame`` if ``frame_counter`` is not above the last accepted one."""
        last = self.last(system_title_hex)
        if last is not None and frame_counter <= last:
            raise DlmsError(
                Reason.REPLAYED_FRAME,
                f"frame counter {frame_counter} not above {last} for system title {system_title_hex.upper()}",
            )

    def accept(self, system_title_hex: str, frame_counter: int) -> None:
        """Record a fully decoded frame (never moves the counter backwards)."""
        key = system_title_hex.upper()
        last = self.last(key)
        if last is None or frame_counter > last:
            self.state[key] = frame_counter
