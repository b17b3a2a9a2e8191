"""The two references the pipeline is compared with, on the same topic in the same run.

* :func:`aiokafka_ceiling`: the raw consume ceiling, aiokafka ``getmany`` over every
  partition from the beginning, no processing at all.
* the naive agent (``python -m bench.references naive ...``): a Faust agent written
  the way Faust's documentation writes agents, one event at a time: decode the
  message, validate each channel against the catalogue, update a Table (last
  reading time per device, changelogged), and ``await topic.send()`` one output
  record per reading. It skips ``group_by`` (the input is already keyed by
  device or gateway), which makes it faster than the docs' examples, so the
  ratio pipeline/naive is conservative.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any


async def _ceiling(bootstrap: str, topic: str, timeout: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        total = sum(ends.values())
        n = size = 0
        started = time.perf_counter()
        deadline = started + timeout
        while n < total and time.perf_counter() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=100_000)
            for msgs in batch.values():
                n += len(msgs)
                size += sum(len(m.value or b"") for m in msgs)
        seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"messages": n, "bytes": size, "seconds": seconds, "messages_per_s": n / seconds if seconds else 0.0}


def aiokafka_ceiling(bootstrap: str, topic: str, timeout: float = 120.0) -> dict[str, Any]:
    """Consume every message of ``topic`` once with aiokafka ``getmany``; messages/s."""
    return asyncio.run(_ceiling(bootstrap, topic, timeout))


def _naive_app(args: argparse.Namespace) -> Any:
    import faust

    from pipeline.catalogue import load_catalogue
    from pipeline.codecs import Decoder, RecordType, SchemaStore
    from pipeline.errors import CodecError

    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        autodiscover=False,
        topic_partitions=args.partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=4,
        broker_session_timeout=6,
        web_enabled=False,
        producer_max_request_size=16 * 1024 * 1024,
        consumer_max_fetch_size=16 * 1024 * 1024,
    )
    source = app.topic(args.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    out = app.topic(args.out_topic, key_serializer="raw", value_serializer="json", partitions=args.partitions)
    last_ts = app.Table("naive_last_ts", default=int, partitions=args.partitions)
    decoder = Decoder(SchemaStore.load())
    catalogue = load_catalogue()
    bounds = {code: (catalogue[code].min, catalogue[code].max) for code in catalogue.codes()}
    state = {"messages": 0, "readings": 0, "rejected": 0, "first": 0.0, "last": 0.0, "written": False}
    result_path = Path(args.result)

    def finish() -> None:
        state["written"] = True
        seconds = state["last"] - state["first"]
        result = {
            "messages": state["messages"],
            "readings": state["readings"],
            "rejected_values": state["rejected"],
            "seconds": seconds,
            "messages_per_s": state["messages"] / seconds if seconds else 0.0,
            "readings_per_s": state["readings"] / seconds if seconds else 0.0,
        }
        tmp = result_path.with_suffix(".part")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, result_path)

    @app.agent(source)
    async def naive(stream: Any) -> None:
        async for value in stream:
            now = time.time()
            if not state["first"]:
                state["first"] = now
            try:
                rt, record = decoder(value)
            except CodecError:
                continue
            readings = record["readings"] if rt is RecordType.METER_READING_BATCH else [record]
            for r in readings:
                good = {}
                for q, v in r["measurements"].items():
                    lo_hi = bounds.get(q)
                    if lo_hi is None or not math.isfinite(v) or not lo_hi[0] <= v <= lo_hi[1]:
                        state["rejected"] += 1
                        continue
                    good[q] = v
                last_ts[r["device_id"]] = r["ts"]
                await out.send(key=r["device_id"].encode(), value={"device_id": r["device_id"], "ts": r["ts"],
                                                                    "values": good})  # fmt: skip
                state["readings"] += 1
            state["messages"] += 1
            state["last"] = time.time()
            if not state["written"] and (
                state["messages"] >= args.expect or state["last"] - state["first"] >= args.max_seconds
            ):
                finish()

    return app


def naive_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.references naive")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--expect", type=int, required=True, help="stop counting after this many messages")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="or after this long")
    parser.add_argument("--result", required=True, help="JSON result file")
    args = parser.parse_args(argv)
    import faust

    app = _naive_app(args)
    sys.argv = [sys.argv[0], "worker"]
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "naive":
        raise SystemExit("usage: python -m bench.references naive --bootstrap ... (see --help)")
    naive_main(sys.argv[2:])
