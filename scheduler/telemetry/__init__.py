"""What a replica says about itself: Prometheus metrics, OpenTelemetry traces, and
outage logging that speaks once per outage."""
