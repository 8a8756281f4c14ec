"""A product catalogue through Kafka: 200 prompts produced to huabu's requests topic, their results
collected from the results topic, the images downloaded into a contact sheet.

    huabu up --kafka 127.0.0.1:9092
    python examples/kafka_batch/kafka_batch.py --bootstrap 127.0.0.1:9092 --out catalogue

Each product's request carries its SKU as the correlation id and ``<run>/<sku>`` as the idempotency
key: producing the catalogue twice with the same ``--run`` makes no second job (the results come
again, with the same ids). Needs ``pip install 'huabu[kafka]'`` (confluent-kafka) beside the SDK.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "product_variants"))
from contact_sheet import Tile, contact_sheet

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
PRODUCTS = ["circle", "square", "triangle", "ring", "star"]
PLACES = ["on the left", "on the right", "in the centre", "at the top", "at the bottom"]


@dataclass(frozen=True)
class Product:
    sku: str
    prompt: str


def catalogue(count: int) -> list[Product]:
    """``count`` products: every colour x shape x place in a fixed order (the bundled model draws shapes)."""
    combos = [(c, p, w) for w in PLACES for p in PRODUCTS for c in COLOURS]
    return [Product(f"sku-{i:04d}", "a {} {} {}".format(*combos[i % len(combos)])) for i in range(count)]


def request(product: Product, run: str, size: str, steps: int | None) -> bytes:
    job: dict[str, Any] = {"kind": "generate", "prompt": product.prompt, "size": size, "seed": int(product.sku[4:])}
    if steps is not None:
        job["steps"] = steps
    envelope = {"version": 1, "correlation_id": product.sku, "idempotency_key": f"{run}/{product.sku}", "job": job}
    return json.dumps(envelope).encode()


def results_from_now(bootstrap: str, topic: str) -> Consumer:
    """A consumer of every partition of ``topic`` from its current end (no group: nothing to commit)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"kafka-batch-{uuid.uuid4().hex[:8]}"})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = [TopicPartition(topic, p, OFFSET_END) for p in partitions]
    # Resolve "end" to numbers now, so results produced before the first poll are not skipped.
    consumer.assign([TopicPartition(topic, tp.partition, consumer.get_watermark_offsets(tp, 10)[1]) for tp in ends])
    return consumer


def collect(consumer: Consumer, wanted: set[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """The first result of each wanted correlation id (repeats carry the same id and are dropped)."""
    results: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while wanted - results.keys() and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        result = json.loads(message.value())
        if result.get("correlation_id") in wanted:
            results.setdefault(result["correlation_id"], result)
            print(f"\r{len(results)}/{len(wanted)} results", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--requests-topic", default="huabu.requests")
    parser.add_argument("--results-topic", default="huabu.results")
    parser.add_argument("--count", type=int, default=200, help="products in the catalogue (default 200)")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    parser.add_argument("--run", default=time.strftime("catalogue-%Y%m%d"), help="idempotency scope of this run")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for every result")
    parser.add_argument("--out", default="catalogue", help="folder for results.jsonl and contact_sheet.png")
    args = parser.parse_args(argv)

    products = catalogue(args.count)
    consumer = results_from_now(args.bootstrap, args.results_topic)
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True})
    for product in products:
        producer.produce(
            args.requests_topic, key=product.sku.encode(), value=request(product, args.run, args.size, args.steps)
        )
        producer.poll(0)
    if producer.flush(60):
        print("some requests could not be produced", file=sys.stderr)
        return 1
    print(f"produced {len(products)} requests to {args.requests_topic}", file=sys.stderr)
    try:
        results = collect(consumer, {p.sku for p in products}, args.timeout)
    finally:
        consumer.close()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tiles = []
    with (out / "results.jsonl").open("w") as lines, httpx.Client(timeout=60) as http:
        for product in products:
            result = results.get(product.sku)
            lines.write(json.dumps(result or {"correlation_id": product.sku, "status": "missing"}) + "\n")
            if result is None or result["status"] != "succeeded":
                continue
            image = Image.open(io.BytesIO(http.get(result["images"][0]["url"]).raise_for_status().content))
            tiles.append(Tile(image, product.sku, product.prompt))
    if tiles:
        contact_sheet(tiles, columns=10, cell=96).save(out / "contact_sheet.png")
    failed = len(products) - len(tiles)
    print(f"{len(tiles)} images in {out / 'contact_sheet.png'}; {failed} missing or failed", file=sys.stderr)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
