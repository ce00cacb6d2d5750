"""The `spillway` command (`main`), its clients, the dev stack and the demo.

The only part of `scheduler` that imports `gateway`, and the only one that starts the
stack's other services (Redis, the S3 server, in-house renderers, the gateway); the
rest of the package is the scheduler replica itself.
"""
