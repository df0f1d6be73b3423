"""The library's jobs: explain a folder, evaluate methods; each runs serially in this process
or on Ray Data, with the same inputs, files, resume and exit behaviour.

* `explain` - `ExplainConfig` and `explain_images` (serial), `explain_ray` (Ray Data);
* `evaluate` - `EvaluateConfig` and `evaluate` (serial), `evaluate_ray` (Ray Data);
* `resume` - which outputs of an earlier run in the same folder are kept;
* `settings` - the method options every worker shares, and `RayRun` (where a job runs);
* `engine_spec` - the engine a job's workers open, exported once by the driver.

The CLI parses options into these configs and calls one function per command. Nothing
here imports ray, torch or an engine backend at import time.
"""
