"""What is kept: jobs, their events and queues in Redis (every write a Lua script in
`lua/`, every key in `keys`), webhook endpoints and deliveries, and the MP4s in S3."""
