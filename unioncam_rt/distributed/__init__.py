"""Running on Ray (the ``serve`` extra): ``explain DIR --ray`` and ``evaluate --ray`` on Ray Data.

* `engines` - the engine a worker opens, resolved (exported) once in the driver;
* `cluster` - connecting to a Ray cluster or starting a local one;
* `explain_job` - explaining a folder with an actor pool, same files as the serial run;
* `evaluate_job` - an evaluation with an actor pool, resumable through ``records.jsonl``.

Nothing here imports ray at import time.
"""
