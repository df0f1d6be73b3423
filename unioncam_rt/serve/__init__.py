"""``unioncam-rt serve``: explanations over HTTP on Ray Serve (the ``serve`` extra).

Layers, each its own module, none importing ray at import time:

* `decode` - request bytes to a `LoadedImage`, under the rules of `unioncam_rt.images`
  plus size limits;
* `errors` - request errors, their HTTP statuses, and `Refusal` (a failed answer as values);
* `service` - one replica's work without Ray: explainers per (method, theta, budget) on one
  engine, query parsing, one `explain_loaded` call per group of a batch, response bodies;
* `batching` - `BatchQueue`: batches formed only when the engine is free;
* `worker` - `EngineWorker`: decode on a thread, queue, batch on the engine thread;
* `http` - Starlette requests to engine calls (body deadline, health) and JSON responses;
* `deployments` - the Ray Serve deployments: the HTTP ingress and the engine replicas;
* `app` - the application: `bind_application` (the CLI) and `build_app` (config files);
* `runner` - `run_serve`: starting Ray and Serve, waiting for a signal;
* `command` - the typer command (``unioncam-rt serve``, ``python -m unioncam_rt.serve``).
"""
