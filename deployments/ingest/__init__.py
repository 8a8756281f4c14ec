"""Doors that turn a message stream into durable jobs: the Kafka ingress (``kafka.py``, a Serve
deployment) and the gateway method it submits through (``door.py``). docs/KAFKA.md."""
