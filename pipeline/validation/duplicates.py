"""Idempotent duplicate filtering of reading rows (SPEC §5, domain/meters.md rule 4).

Key = ``(device_id, quantity, ts_ms)``. Same key and equal value → exact duplicate
(dropped, counted); same key and a different value → conflicting duplicate
(rejected with ``reason='conflicting_duplicate'``, the first value wins).

Memory: the keys and values of the fresh rows returned so far, newest
``capacity_rows`` at most, kept as a deque of small frames (oldest evicted
first). Each call joins the frame against the memory on a 64-bit hash of the key
(one UInt64 column joins ~5x faster than three columns) and then compares the
real key columns of the matches, so a hash collision can never drop a row.
"""

from __future__ import annotations

from collections import deque

import polars as pl

from pipeline.envelope import Reason

KEYS: tuple[str, ...] = ("device_id", "quantity", "ts_ms")
_H, _ROW, _MEM, _IN_MEM, _REF = "__h", "__row", "__mem_value", "__in_mem", "__ref"
_SEED = 0x7E1E


def _key_hash() -> pl.Expr:
    return pl.struct(*KEYS).hash(seed=_SEED).alias(_H)


class DuplicateFilter:
    """Drop exact duplicates and reject conflicting ones, within a frame and across calls.

    Not thread-safe: one instance per stream partition.
    """

    def __init__(self, capacity_rows: int = 2_000_000):
        if capacity_rows < 0:
            raise ValueError("capacity_rows must be >= 0")
        self.capacity_rows = capacity_rows
        # batches smaller than this are merged into the newest one, bounding the deque length
        self._merge_below = capacity_rows // 16
        self._batches: deque[pl.DataFrame] = deque()
        self._remembered = 0

    @property
    def remembered_rows(self) -> int:
        return self._remembered

    def clear(self) -> None:
        self._batches.clear()
        self._remembered = 0

    def _lookup(self, work: pl.DataFrame) -> pl.DataFrame:
        """``work`` + ``__in_mem`` (Boolean) and ``__mem_value`` (the remembered value)."""
        if not self._batches:
            return work.with_columns(pl.lit(False).alias(_IN_MEM), pl.lit(None, dtype=pl.Float64).alias(_MEM))
        memory = pl.concat(list(self._batches), rechunk=False)
        probe = work.select(_ROW, _H, *KEYS)
        hits = probe.join(memory, on=_H, how="inner", suffix="__m").filter(
            pl.all_horizontal(pl.col(k).eq_missing(pl.col(f"{k}__m")) for k in KEYS)
        )
        hits = hits.select(_ROW, pl.col("value").alias(_MEM), pl.lit(True).alias(_IN_MEM))
        out = work.join(hits, on=_ROW, how="left", maintain_order="left")
        return out.with_columns(pl.col(_IN_MEM).fill_null(False))

    def _remember(self, fresh: pl.DataFrame) -> None:
        if self.capacity_rows == 0 or fresh.height == 0:
            return
        batch = fresh.select(_H, *KEYS, "value").tail(self.capacity_rows)
        if self._batches and self._batches[-1].height < self._merge_below:
            self._remembered -= self._batches[-1].height
            batch = pl.concat([self._batches.pop(), batch])
        self._batches.append(batch)
        self._remembered += batch.height
        while self._remembered > self.capacity_rows:
            self._remembered -= self._batches.popleft().height

    def __call__(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
        """(fresh rows, conflicting rows with reason and detail, number of exact duplicates dropped)."""
        columns = frame.columns
        keys = list(KEYS)
        work = frame.with_row_index(_ROW).with_columns(_key_hash())
        work = self._lookup(work)
        value = pl.col("value")
        if work.get_column(_H).is_duplicated().any():
            first_value, first_seen = value.first().over(keys), pl.struct(*keys).is_first_distinct()
        else:  # no two rows share a key hash, so no two share a key: skip the window functions
            first_value, first_seen = value, pl.lit(True)
        work = work.with_columns(
            pl.when(pl.col(_IN_MEM)).then(pl.col(_MEM)).otherwise(first_value).alias(_REF),
            (first_seen & ~pl.col(_IN_MEM)).alias("__fresh"),
        )
        fresh_mask = pl.col("__fresh")
        exact_mask = ~fresh_mask & value.eq_missing(pl.col(_REF))
        # a remembered null value with a null incoming value is also exact (eq_missing)
        fresh = work.filter(fresh_mask)
        exact = int(work.select(exact_mask.sum()).item())
        conflicts = work.filter(~fresh_mask & ~exact_mask).with_columns(
            pl.lit(Reason.CONFLICTING_DUPLICATE.value).alias("reason"),
            pl.format(
                "{}@{} first value {}, got {}",
                pl.col("quantity").fill_null("null"),
                pl.col("ts_ms").cast(pl.Utf8).fill_null("null"),
                pl.col(_REF).cast(pl.Utf8).fill_null("null"),
                value.cast(pl.Utf8).fill_null("null"),
            ).alias("detail"),
        )
        self._remember(fresh)
        return fresh.select(columns), conflicts.select(*columns, "reason", "detail"), exact
