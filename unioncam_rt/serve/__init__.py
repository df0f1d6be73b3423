"""``unioncam-rt serve``: explanations over HTTP on Ray Serve (the ``serve`` extra).

Layers, each its own module, none importing ray at import time:

* `decode` - request bytes to a `LoadedImage`, under the rules of `unioncam_rt.images`
  plus size limits;
* `errors` - request errors and their HTTP statuses;
* `service` - one replica's work without Ray: explainers per (method, theta, budget) on one
  engine, query parsing, one `explain_loaded` call per group of a batch, response bodies;
* `http` - Starlette requests to service calls and JSON responses;
* `app` - the Ray Serve deployment (``@serve.batch``) and its options;
* `runner` - `run_serve`: starting Ray and Serve, waiting for a signal;
* `command` - the typer command (``unioncam-rt serve``, ``python -m unioncam_rt.serve``).
"""
