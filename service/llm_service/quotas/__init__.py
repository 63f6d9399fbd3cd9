"""Per-caller quotas, budgets and attribution: requests and tokens per minute, concurrent streams,
US dollars per day and per month, counted in Redis (shared by every replica) or in process memory.

`limits` says what a caller may use (the configuration reads it without loading the rest),
`counters` how it is counted (and keeps the counters in memory), `redis` the shared counters,
`gate` admission before anything goes upstream and settlement after.
"""
