"""What the stream's interval derivation remembers between batches, and what it reads back.

:class:`SeriesState`: every series (tenant, device, cumulative quantity) gets a small integer id
(``sid``) for the worker's lifetime, which the computation is keyed by, and, once known, its
last stored reading and the running totals of the interval holding it (the *open* interval).
That is all a batch needs when every new reading of a series comes after the series' last one
(the normal case): the pairs from the last reading on, plus the open interval's totals as the
first contribution to that interval (see ``seeds`` in
:func:`pipeline.derive.compute_intervals_many`). One row per series; a batch reads and
replaces only its own series' rows.

:class:`StoredReadings`: everything else (a series without state, late or re-delivered
readings) reads the series' stored readings back, once per batch for all such series, through
its own ClickHouse connection so that the read does not wait for the insert of the previous
batch. That batch may not be durable yet (it is persisted while the next one is prepared), so
the readings of the current and the previous batch are kept and added to every read. Batches
are told apart by ``now_ms``: the runner passes one per batch, also when it re-runs a failed
batch message by message.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

KEYS = ["tenant_id", "device_id", "quantity"]
SERIES = {"tenant_id": pl.Utf8, "device_id": pl.Utf8, "quantity": pl.Utf8, "ts_ms": pl.Int64,
          "value": pl.Float64, "seq": pl.Int64}  # fmt: skip
TOTALS = {"measured": pl.Float64, "estimated": pl.Float64, "flags": pl.UInt32, "n_readings": pl.UInt32}
STATE = {"sid": pl.Int64, "last_ts": pl.Int64, "last_value": pl.Float64, "last_seq": pl.Int64,
         "open_start": pl.Int64, **TOTALS}  # fmt: skip
_IDS = {**{k: pl.Utf8 for k in KEYS}, "sid": pl.Int64}
_STATE_COLS = {k: v for k, v in STATE.items() if k != "sid"}
_ARRAYS = {"last_ts": np.int64, "last_value": np.float64, "last_seq": np.int64, "open_start": np.int64,
           "measured": np.float64, "estimated": np.float64, "flags": np.uint32, "n_readings": np.uint32}  # fmt: skip

# Fetch stored readings: (device ids, quantities, lower bound ms) → frame with SERIES columns
Fetch = Callable[[list[str], list[str], int], pl.DataFrame]


def last_points(readings: pl.LazyFrame) -> pl.LazyFrame:
    """Per ``sid`` the reading the intervals keep at its latest timestamp (lowest ``seq`` there)."""
    latest = readings.group_by("sid").agg(pl.col("ts_ms").max())
    at_latest = readings.join(latest, on=["sid", "ts_ms"]).sort("sid", "seq", nulls_last=True)
    return at_latest.unique("sid", keep="first").select("sid", last_ts="ts_ms", last_value="value", last_seq="seq")


class SeriesState:
    """Ids and state of series; the state lives in numpy arrays indexed by ``sid``, so a batch
    gathers and scatters its own rows only (no GIL released, no work in the number of series)."""

    def __init__(self) -> None:
        self._ids = pl.DataFrame(schema=_IDS)
        self._has = np.zeros(0, dtype=bool)
        self._cols = {name: np.zeros(0, dtype=dtype) for name, dtype in _ARRAYS.items()}

    def __len__(self) -> int:
        return int(self._has.sum())

    def identify(self, series: pl.LazyFrame) -> pl.LazyFrame:
        """``series`` (keys + anything) with the ``sid`` of those seen before (null for the others)."""
        return series.join(self._ids.lazy(), on=KEYS, how="left")

    def assign(self, series: pl.DataFrame) -> pl.DataFrame:
        """Give the series of :meth:`identify` whose ``sid`` is null new ones."""
        fresh = series.filter(pl.col("sid").is_null())
        ids = fresh.select(KEYS).with_row_index("sid", offset=self._ids.height).cast({"sid": pl.Int64})
        self._ids = pl.concat([self._ids, ids.select(list(_IDS))])
        if self._ids.height > self._has.size:  # grow by doubling: amortised O(1) per series
            size = max(self._ids.height, 2 * self._has.size)
            self._has = np.concatenate([self._has, np.zeros(size - self._has.size, dtype=bool)])
            self._cols = {n: np.concatenate([a, np.zeros(size - a.size, dtype=a.dtype)]) for n, a in self._cols.items()}
        return pl.concat([series.filter(pl.col("sid").is_not_null()), fresh.drop("sid").join(ids, on=KEYS)],
                         how="diagonal")  # fmt: skip

    def split(self, series: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """``series`` (``sid``, ``lo`` = earliest new ts, …) → (in order, with their state; the others)."""
        sids = series.get_column("sid").to_numpy()
        in_order = self._has[sids] & (self._cols["last_ts"][sids] < series.get_column("lo").to_numpy())
        state = pl.DataFrame({n: a[sids] for n, a in self._cols.items()}, schema=_STATE_COLS)
        joined = pl.concat([series, state], how="horizontal")
        mask = pl.Series(in_order)
        return joined.filter(mask), series.filter(~mask)

    def get(self, series: pl.DataFrame) -> pl.DataFrame:
        """The state (STATE columns) of those of ``series`` (``sid``) that have one."""
        sids = series.get_column("sid").to_numpy()
        sids = sids[self._has[sids]]
        return pl.DataFrame({"sid": sids, **{n: a[sids] for n, a in self._cols.items()}}, schema=STATE)

    def replace(self, rows: pl.DataFrame, drop: pl.DataFrame) -> None:
        """The series in ``rows`` (STATE columns) get that state; the other ``drop`` series (``sid``) none."""
        self._has[drop.get_column("sid").to_numpy()] = False
        sids = rows.get_column("sid").to_numpy()
        self._has[sids] = True
        for name, array in self._cols.items():
            array[sids] = rows.get_column(name).to_numpy()


class StoredReadings:
    def __init__(self, fetch: Fetch, *, lookback_ms: int) -> None:
        self._fetch = fetch
        self._lookback_ms = lookback_ms
        self._pending: list[tuple[int, pl.DataFrame]] = []  # (now_ms of the batch, its readings)

    def begin(self, now_ms: int) -> None:
        """A batch starts: readings of batches before the previous one are durable by now."""
        if self._pending and self._pending[-1][0] != now_ms:
            previous = self._pending[-1][0]
            self._pending = [p for p in self._pending if p[0] == previous]

    def add(self, now_ms: int, readings: pl.DataFrame) -> None:
        """``readings`` (SERIES columns) of the batch ``now_ms``."""
        self._pending.append((now_ms, readings))

    def read(self, series: pl.DataFrame) -> pl.DataFrame:
        """Stored readings (+ ``sid``) of ``series`` (keys, ``sid``, ``lo``) since ``lookback_ms`` before min(lo).

        An older predecessor is treated as absent.
        """
        since = int(series["lo"].min()) - self._lookback_ms  # type: ignore[arg-type]
        stored = self._fetch(series["device_id"].unique().to_list(), series["quantity"].unique().to_list(), since)
        frames = [stored.select(list(SERIES)).cast(SERIES), *(p for _, p in self._pending)]
        return (pl.concat(frames).join(series.select(*KEYS, "sid"), on=KEYS)
                .filter(pl.col("ts_ms") >= since).unique(["sid", "ts_ms", "seq"], keep="first"))  # fmt: skip
