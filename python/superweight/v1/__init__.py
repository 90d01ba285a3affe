"""The service's contract, generated from proto/superweight/v1/superweight.proto when the package
is built: superweight_pb2 (messages) and superweight_pb2_grpc (the stub)."""
