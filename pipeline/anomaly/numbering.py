"""Dense numbers for the series and devices of the meter stream, given once per batch to every meter rule.

Every meter rule keeps per-series state in numpy arrays (:mod:`pipeline.anomaly.series_state`)
and must find a reading's row in them. Hashing the key strings and looking the hashes up once
per rule cost each rule a pass over the batch's strings and a hash-table lookup; done once, in
the stage, every rule finds its rows through a plain array (``ids → row``).

:class:`Numbering` adds two Int64 columns to a batch's readings: :data:`DID` numbers the
devices (tenant, device), :data:`SID` the series (tenant, device, quantity), each 0, 1, … in
order of first sight, stable for the life of the stage. A tenant is part of both keys: a device
registered to another tenant starts afresh, and no state crosses tenants. The rules of one stage
must see batches numbered by one :class:`Numbering` (their state is indexed by its numbers).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import polars as pl

from pipeline.anomaly.inputs import MeterBatch

__all__ = ["DID", "QID", "SID", "KeyRows", "Numbering", "rows_of"]

DID = "_did"  # device number: (tenant_id, device_id)
SID = "_sid"  # series number: (tenant_id, device_id, quantity)
QID = "_qid"  # quantity number


class KeyRows:
    """64-bit keys → row numbers (0, 1, … in first-seen order), in hash tables kept between batches.

    A polars join against a frame of every known key rebuilt that frame's hash table on every
    call: per batch, it paid for the whole fleet (with 100,000 meters, ~30 ms a lookup even for
    a batch of 500 readings). pandas keeps an Index's hash table until the Index changes, so a
    lookup costs the batch, not the fleet. New keys go to a small second table, merged into the
    main one when it reaches an eighth of it: a trickle of new series does not rebuild the large
    table every batch.
    """

    def __init__(self, merge_at: int = 4096) -> None:
        self._main = pd.Index(np.zeros(0, np.uint64))
        self._new = pd.Index(np.zeros(0, np.uint64))
        self._merge_at = merge_at  # the small table is merged when larger than this and an eighth of the main one

    def __len__(self) -> int:
        return len(self._main) + len(self._new)

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """The row of every key (int64); keys not seen before get the next rows, in order of first sight."""
        rows = self._main.get_indexer(keys).astype(np.int64, copy=False)
        miss = rows < 0
        if not miss.any():
            return rows
        if len(self._new):
            extra = self._new.get_indexer(keys[miss])
            rows[miss] = np.where(extra >= 0, extra + len(self._main), -1)
            miss = rows < 0
            if not miss.any():
                return rows
        unseen = pd.Index(pd.unique(keys[miss]))
        rows[miss] = len(self) + unseen.get_indexer(keys[miss])
        self._new = self._new.append(unseen)
        if len(self._new) > max(len(self._main) // 8, self._merge_at):
            self._main, self._new = self._main.append(self._new), pd.Index(np.zeros(0, np.uint64))
        return rows


class Numbering:
    """The device and series numbers of a meter stage (see the module doc).

    Devices are looked up by a 64-bit hash of (tenant, device) in :class:`KeyRows`, once per run of
    adjacent rows of one device (a reading's channels arrive together: ~1/8 of the rows); series in
    a table ``[device, quantity] → series`` (int32; quantities number a few dozen, so a device costs
    a few hundred bytes), without hashing the rows' strings again.
    """

    def __init__(self) -> None:
        self._devices = KeyRows()
        self._quantities = KeyRows(merge_at=0)
        self._table = np.full((0, 64), -1, np.int32)  # [device, quantity] -> series; -1: not seen
        self._series = 0
        self.quantities: dict[str, int] = {}  # quantity code -> its number

    @property
    def devices(self) -> int:
        return len(self._devices)

    @property
    def series(self) -> int:
        return self._series

    def __call__(self, readings: pl.DataFrame) -> pl.DataFrame:
        """``readings`` (tenant_id, device_id, quantity, …) + :data:`DID` and :data:`SID`, in the same order."""
        if readings.is_empty():
            return readings.with_columns(pl.lit(None, pl.Int64).alias(c) for c in (DID, SID, QID))
        dev = _hash(readings["tenant_id"]) * np.uint64(0x9E3779B97F4A7C15) ^ _hash(readings["device_id"])
        runs = np.flatnonzero(np.r_[True, dev[1:] != dev[:-1]])
        did = np.repeat(self._devices.rows(dev[runs]), np.diff(np.r_[runs, len(dev)]))
        qty = self._quantities.rows(_hash(readings["quantity"]))
        if len(self._quantities) > len(self.quantities):  # name the new numbers
            new, first = np.unique(qty[qty >= len(self.quantities)], return_index=True)
            at = np.flatnonzero(qty >= len(self.quantities))[first]
            self.quantities.update(zip(readings["quantity"].gather(at).to_list(), new.tolist(), strict=True))
        self._fit(len(self._devices), len(self._quantities))
        cells = did * self._table.shape[1] + qty
        flat = self._table.reshape(-1)  # a view
        sid = flat[cells]
        if (sid < 0).any():  # new series, numbered in order of first sight
            new = pd.unique(cells[sid < 0])
            flat[new] = np.arange(self._series, self._series + len(new), dtype=np.int32)
            self._series += len(new)
            sid = flat[cells]
        return readings.with_columns(pl.Series(DID, did), pl.Series(SID, sid.astype(np.int64)), pl.Series(QID, qty))

    def _fit(self, devices: int, quantities: int) -> None:
        rows, cols = self._table.shape
        if devices <= rows and quantities <= cols:
            return
        table = np.full((max(devices, rows + rows // 4, 1024), max(quantities, cols)), -1, np.int32)
        table[:rows, :cols] = self._table
        self._table = table

    def batch(self, readings: pl.DataFrame, intervals: pl.DataFrame, events: pl.DataFrame) -> MeterBatch:
        """The rules' view of a batch, its readings and intervals numbered."""
        return MeterBatch(self(readings), self(intervals) if intervals.height else intervals, events,
                          dict(self.quantities))  # fmt: skip


def rows_of(batch: MeterBatch, quantities: Iterable[str]) -> np.ndarray:
    """Positions of the batch's readings of ``quantities``, found by their numbers (no string comparisons:
    with eight quantities in a batch, an ``is_in`` on the strings cost a rule several ms)."""
    codes = [batch.quantities[q] for q in quantities if q in batch.quantities]
    if not codes:
        return np.zeros(0, np.int64)
    wanted = np.zeros(max(batch.quantities.values()) + 1, bool)
    wanted[codes] = True
    return np.flatnonzero(wanted[batch.readings[QID].to_numpy()])


def _hash(column: pl.Series) -> np.ndarray:
    return column.hash(seed=7).to_numpy()
