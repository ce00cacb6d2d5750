"""Generated protobuf and gRPC code for the spillway API (see protos/spillway/v1)."""
