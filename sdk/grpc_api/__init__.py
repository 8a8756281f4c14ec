"""Generated protobuf and gRPC stubs of ``huabu.v1`` (proto/huabu/v1/images.proto).

Checked in and regenerated with ``python proto/generate.py``; importing them needs grpcio and
protobuf (``pip install 'huabu[grpc]'``), which the base SDK install does not carry."""

# What Serve's gRPC proxy registers (gRPCOptions.grpc_servicer_functions) to serve huabu.v1.Images;
# named here, beside the stubs, so server commands and configs need not import the gateway.
SERVICER_FUNCTIONS = ("huabu.sdk.grpc_api.images_pb2_grpc.add_ImagesServicer_to_server",)
