"""Ray plumbing for the jobs that run on Ray Data (`unioncam_rt.jobs`) and the service (the
``serve`` extra):

* `cluster` - connecting to a Ray cluster or starting a local one; the actor pool's size;
* `pool` - rows of an actor-pool job, streamed in input order.

Nothing here imports ray at import time.
"""
