"""A small Kafka client for the e2e parts (kafka-python), the standard client beside ours.

    kafka_tool.py BROKERS create TOPIC[:PARTITIONS]...   topics, 3 partitions unless named
    kafka_tool.py BROKERS consume TOPIC EXPECTED         a topic as JSON lines, by partition
    kafka_tool.py BROKERS publish TOPIC < LINES          JSON lines {"key", "value"} as records
    kafka_tool.py BROKERS committed GROUP TOPIC          the group's committed offsets, summed
    kafka_tool.py BROKERS copy-offsets FROM TO TOPIC     group FROM's committed offsets, for TO
"""
import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

brokers, command, *args = sys.argv[1:]
if command == "create":
    admin = KafkaAdminClient(bootstrap_servers=brokers)
    topics = [name.split(":") + ["3"] for name in args]
    admin.create_topics([NewTopic(t[0], int(t[1]), 1) for t in topics])
elif command == "consume":
    topic, expected = args[0], int(args[1])
    consumer = KafkaConsumer(topic, bootstrap_servers=brokers, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=2000)
    seen, deadline = [], time.time() + 30
    while len(seen) < expected and time.time() < deadline:
        for record in consumer:
            seen.append({"partition": record.partition, "offset": record.offset,
                         "key": record.key.decode() if record.key else None,
                         "headers": {k: v.decode() for k, v in record.headers},
                         "value": record.value.decode("utf-8", "replace")})
    for message in sorted(seen, key=lambda m: (m["partition"], m["offset"])):
        print(json.dumps(message))
elif command == "publish":
    producer = KafkaProducer(bootstrap_servers=brokers, acks="all")
    for line in sys.stdin:
        record = json.loads(line)
        key = record["key"].encode() if record.get("key") else None
        producer.send(args[0], key=key, value=record["value"].encode())
    producer.flush()
elif command == "committed":
    # An offset fetch for the group, without joining it.
    group, topic = args
    consumer = KafkaConsumer(bootstrap_servers=brokers, group_id=group, enable_auto_commit=False)
    partitions = consumer.partitions_for_topic(topic) or set()
    committed = [consumer.committed(TopicPartition(topic, p)) for p in partitions]
    print(sum(offset for offset in committed if offset))
elif command == "copy-offsets":
    # Read as `committed` does, then committed for the other group by a consumer that is
    # assigned the partitions instead of joining a group.
    source, target, topic = args
    reader = KafkaConsumer(bootstrap_servers=brokers, group_id=source, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or set()]
    offsets = {tp: reader.committed(tp) for tp in partitions}
    writer = KafkaConsumer(bootstrap_servers=brokers, group_id=target, enable_auto_commit=False)
    writer.assign(partitions)
    writer.commit({tp: OffsetAndMetadata(offset, "", -1)
                   for tp, offset in offsets.items() if offset is not None})
    print(sum(offset for offset in offsets.values() if offset))
else:
    sys.exit("unknown command " + command)
