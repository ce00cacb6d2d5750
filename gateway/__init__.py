"""The thin REST gateway: the OpenAI Videos API over the Scheduler's gRPC service."""
