"""The gRPC services callers reach (Scheduler, Admin, Webhooks): authentication,
validation, errors, and the conversions between protos and the store's records."""
