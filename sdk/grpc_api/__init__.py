"""Generated protobuf and gRPC stubs of ``huabu.v1`` (proto/huabu/v1/images.proto).

Checked in and regenerated with ``python proto/generate.py``; importing them needs grpcio and
protobuf (``pip install 'huabu[grpc]'``), which the base SDK install does not carry."""
