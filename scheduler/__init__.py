"""spillway's scheduler: the gRPC Scheduler service, job store, dispatch, pools and upload."""
