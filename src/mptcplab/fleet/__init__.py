"""Several machines: a campaign of jobs on a procrastinate queue in PostgreSQL, run by `mptcplab worker`s.

queue.py: the campaign (its content-derived id, one job per scenario x
kernel x repetition, interleaved), submitting it idempotently, and its
progress; worker.py: the procrastinate worker that runs one job at a time
with the same executor as `run` and `matrix` and stores each repetition
exactly once. The store and the analysis never import this package; the
CLI is cli/fleet.py.
"""
