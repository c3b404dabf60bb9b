#!/usr/bin/env python3
"""One Kafka client CLI over three real client libraries, for the data-path tests.

    kclient.py LIB produce --bootstrap B --topic T --input FILE [--compression C] [--acks A] [--pause-after N]
    kclient.py LIB consume --bootstrap B --topic T --expect N [--group G] [--timeout S]

LIB is confluent (librdkafka), kafka-python or aiokafka.

produce: record i (0-based line of FILE, newline stripped) is sent with key str(i);
prints one JSON line per acknowledged record: {"i", "partition", "offset"}.
With --pause-after N it flushes after N records, prints "PAUSED", waits for a
line on stdin, then sends the rest with the same producer (the caller
restarts the broker meanwhile). Ends with "DONE <n>".

consume: prints one JSON line per record {"partition", "offset", "key", "value"}
(key/value hex) until --expect records arrived or --timeout passed; with
--group it subscribes in that consumer group, commits synchronously after the
records and closes cleanly; without, it assigns every partition from the start.
"""
import argparse
import asyncio
import json
import sys
import time


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def record_line(partition, offset, key, value):
    emit({
        "partition": partition,
        "offset": offset,
        "key": (key or b"").hex(),
        "value": (value or b"").hex(),
    })


def read_input(path):
    with open(path, "rb") as f:
        return [line.rstrip(b"\n") for line in f if line.strip()]


def wait_resume(args, sent):
    if args.pause_after and sent == args.pause_after:
        emit("PAUSED")
        sys.stdin.readline()


# ---------------------------------------------------------------- confluent-kafka
def confluent_produce(args, lines):
    from confluent_kafka import Producer
    acks = {"0": "0", "1": "1", "all": "all"}[args.acks]
    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "compression.type": args.compression,
        "acks": acks,
        "linger.ms": 5,
        "message.timeout.ms": 120000,
        "retry.backoff.ms": 200,
        # tansu does not implement idempotent producers fully; plain retries instead.
        "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1,
    })
    errors = []

    def report(i):
        def cb(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                emit({"i": i, "partition": msg.partition(), "offset": msg.offset()})
        return cb

    for i, value in enumerate(lines):
        while True:
            try:
                p.produce(args.topic, value=value, key=str(i).encode(), on_delivery=report(i))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
        if args.pause_after and i + 1 == args.pause_after:
            p.flush(60)
            wait_resume(args, i + 1)
    left = p.flush(120)
    if errors or left:
        sys.exit(f"produce failed: {left} undelivered, errors {errors[:5]}")


def confluent_consume(args):
    from confluent_kafka import Consumer, TopicPartition
    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group or f"kclient-{time.time_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    }
    c = Consumer(conf)
    if args.group:
        c.subscribe([args.topic])
    else:
        md = c.list_topics(args.topic, timeout=30)
        parts = sorted(md.topics[args.topic].partitions)
        c.assign([TopicPartition(args.topic, p, 0) for p in parts])
    got = 0
    deadline = time.time() + args.timeout
    while got < args.expect and time.time() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            sys.stderr.write(f"consumer error: {msg.error()}\n")
            continue
        record_line(msg.partition(), msg.offset(), msg.key(), msg.value())
        got += 1
    if args.group and got:
        c.commit(asynchronous=False)
    c.close()


# ---------------------------------------------------------------- kafka-python
def kafka_python_produce(args, lines):
    from kafka import KafkaProducer
    acks = {"0": 0, "1": 1, "all": "all"}[args.acks]
    comp = None if args.compression == "none" else args.compression
    p = KafkaProducer(bootstrap_servers=args.bootstrap, acks=acks, compression_type=comp,
                      linger_ms=5, retries=10, request_timeout_ms=30000, max_in_flight_requests_per_connection=1)
    futures = []
    for i, value in enumerate(lines):
        futures.append((i, p.send(args.topic, key=str(i).encode(), value=value)))
        if args.pause_after and i + 1 == args.pause_after:
            p.flush(60)
            for j, f in futures:
                md = f.get(timeout=60)
                emit({"i": j, "partition": md.partition, "offset": md.offset})
            futures = []
            wait_resume(args, i + 1)
    p.flush(120)
    for j, f in futures:
        md = f.get(timeout=60)
        emit({"i": j, "partition": md.partition, "offset": md.offset})
    p.close(30)


def kafka_python_consume(args):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group, auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=1000)
    if args.group:
        c.subscribe([args.topic])
    else:
        parts = None
        deadline = time.time() + 30
        while not parts and time.time() < deadline:
            parts = c.partitions_for_topic(args.topic)
            time.sleep(0.1)
        tps = [TopicPartition(args.topic, p) for p in sorted(parts or [])]
        c.assign(tps)
        c.seek_to_beginning(*tps)
    got = 0
    deadline = time.time() + args.timeout
    while got < args.expect and time.time() < deadline:
        batches = c.poll(timeout_ms=500, max_records=args.expect - got)
        for _tp, records in sorted(batches.items(), key=lambda kv: kv[0].partition):
            for r in records:
                record_line(r.partition, r.offset, r.key, r.value)
                got += 1
    if args.group and got:
        c.commit()
    c.close()


# ---------------------------------------------------------------- aiokafka
async def aiokafka_produce(args, lines):
    from aiokafka import AIOKafkaProducer
    acks = {"0": 0, "1": 1, "all": "all"}[args.acks]
    comp = None if args.compression == "none" else args.compression
    p = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks=acks, compression_type=comp, linger_ms=5,
                         request_timeout_ms=30000)
    await p.start()
    try:
        pending = []
        for i, value in enumerate(lines):
            pending.append((i, await p.send(args.topic, key=str(i).encode(), value=value)))
            if args.pause_after and i + 1 == args.pause_after:
                for j, f in pending:
                    md = await f
                    emit({"i": j, "partition": md.partition, "offset": md.offset})
                pending = []
                emit("PAUSED")
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for j, f in pending:
            md = await f
            emit({"i": j, "partition": md.partition, "offset": md.offset})
    finally:
        await p.stop()


async def aiokafka_consume(args):
    from aiokafka import AIOKafkaConsumer, TopicPartition
    c = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group, auto_offset_reset="earliest",
                         enable_auto_commit=False)
    await c.start()
    try:
        if args.group:
            c.subscribe([args.topic])
        else:
            parts = None
            deadline = time.time() + 30
            while not parts and time.time() < deadline:
                await c.topics()  # refreshes metadata
                parts = c.partitions_for_topic(args.topic)
            tps = [TopicPartition(args.topic, p) for p in sorted(parts or [])]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
        got = 0
        deadline = time.time() + args.timeout
        while got < args.expect and time.time() < deadline:
            batches = await c.getmany(timeout_ms=500, max_records=args.expect - got)
            for _tp, records in sorted(batches.items(), key=lambda kv: kv[0].partition):
                for r in records:
                    record_line(r.partition, r.offset, r.key, r.value)
                    got += 1
        if args.group and got:
            await c.commit()
    finally:
        await c.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib", choices=["confluent", "kafka-python", "aiokafka"])
    ap.add_argument("mode", choices=["produce", "consume"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--input")
    ap.add_argument("--compression", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    ap.add_argument("--acks", default="all", choices=["0", "1", "all"])
    ap.add_argument("--pause-after", type=int, default=0)
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--group")
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()
    if args.mode == "produce":
        lines = read_input(args.input)
        if args.lib == "confluent":
            confluent_produce(args, lines)
        elif args.lib == "kafka-python":
            kafka_python_produce(args, lines)
        else:
            asyncio.run(aiokafka_produce(args, lines))
        emit(f"DONE {len(lines)}")
    else:
        if args.lib == "confluent":
            confluent_consume(args)
        elif args.lib == "kafka-python":
            kafka_python_consume(args)
        else:
            asyncio.run(aiokafka_consume(args))


if __name__ == "__main__":
    main()
