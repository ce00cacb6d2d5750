"""From the queue to a pool and back: the dispatcher, one attempt of a job, the I/O
shell around the pure spillover policy, the in-house fleet, webhook delivery, and the
leases that give a chore to one replica."""
