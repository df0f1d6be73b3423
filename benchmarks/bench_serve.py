"""``unioncam-rt serve`` under load vs the single-process API, and the service's memory.

Three parts, one run, same photos and engine:

1. the Python API in one process (`Explainer.explain`, one photo after another): latency
   per image and throughput;
2. the HTTP service (``python -m unioncam_rt.serve``, local Ray) with ``--clients``
   concurrent clients sending ``--requests`` UnionCAM requests (``--budget`` K: budgeted region
   scoring): throughput, p50/p99 latency (queueing included), and cross-request batching:
   ``explain_loaded`` calls and the images each held (the replica's ``/v1/stats`` before and
   after), and the mean batch a request shared;
3. memory: ``--memory-requests`` cheap (Grad-CAM) requests; resident memory of the replica
   process and proportional memory (PSS) of the whole service process tree after the first
   50 and after all of them.

Every loop is bounded by a count and by ``--time-limit`` seconds; traffic goes to 127.0.0.1.

Usage::

    python benchmarks/bench_serve.py --images 4 --requests 8 --clients 4 --memory-requests 500
    python benchmarks/bench_serve.py --images 8 --requests 48 --clients 8 --budget 128 --memory-requests 0
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, dev_images, machine, print_table, write_json  # noqa: E402

MEMORY_CHECKPOINT = 50


def percentile(values, q) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def engine_dir(args) -> Path:
    if args.engine:
        return Path(args.engine)
    from unioncam_rt.cache import cached_engine_dir
    from unioncam_rt.sources import ModelSource

    return cached_engine_dir(ModelSource("efficientnet-lite0"))


def api_run(engine: Path, photos: list[Path], budget: str | None) -> dict:
    """UnionCAM with the Python API in this process, one photo after another."""
    from unioncam_rt.explainer import Explainer

    explainer = Explainer(engine, method="unioncam", **({"budget": budget} if budget else {}))
    explainer.explain(photos[0])  # warm-up
    latencies = []
    started = time.perf_counter()
    for path in photos:
        begin = time.perf_counter()
        explainer.explain(path)
        latencies.append(time.perf_counter() - begin)
    wall = time.perf_counter() - started
    return {"mode": f"Python API, 1 process, unioncam{f' budget={budget}' if budget else ''}", "requests": len(photos),
            "clients": 1,
            "throughput_per_s": len(photos) / wall, "p50_s": percentile(latencies, 50),
            "p99_s": percentile(latencies, 99), "images_per_engine_call": 1.0}


class Server:
    """``python -m unioncam_rt.serve`` in a subprocess on a free loopback port."""

    def __init__(self, engine: Path, args):
        import requests

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(HERE / "results" / "bench_serve.server.log", "wb")
        command = [sys.executable, "-m", "unioncam_rt.serve", "--engine", str(engine), "--port", str(self.port),
                   "--num-cpus", str(args.num_cpus), "--replicas", str(args.replicas), "--max-batch",
                   str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms)]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        self.stop()
        sys.exit(f"serve did not start; see {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def engine_calls(url: str) -> dict[int, int]:
    """The replica's ``explain_loaded`` calls so far, by images per call (one replica)."""
    import requests

    stats = requests.get(f"{url}/v1/stats", timeout=60).json()
    return {int(images): calls for images, calls in stats["images_per_call"].items()}


def calls_between(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] - before.get(k, 0)}


def load(url: str, bodies: list[bytes], params: dict, count: int, clients: int, deadline: float) -> dict:
    """``count`` requests from ``clients`` threads (photos in turn), stopping at ``deadline``."""
    import requests

    before = engine_calls(url)

    lock = threading.Lock()
    issued = iter(range(count))
    latencies, shared, replicas, failures = [], [], set(), []

    def client():
        session = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                n = next(issued, None)
            if n is None:
                return
            begin = time.perf_counter()
            answer = session.post(f"{url}/explain", params=params, data=bodies[n % len(bodies)],
                                  headers={"Content-Type": "image/jpeg"}, timeout=300)
            elapsed = time.perf_counter() - begin
            with lock:
                if answer.status_code != 200:
                    failures.append(answer.text[:200])
                    continue
                body = answer.json()
                latencies.append(elapsed)
                shared.append(body["batch"]["images"])
                replicas.add(body["batch"]["replica"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    calls = calls_between(before, engine_calls(url))
    return {"requests": len(latencies), "failures": len(failures), "failure_sample": failures[:3],
            "throughput_per_s": len(latencies) / wall if latencies else 0.0, "p50_s": percentile(latencies, 50),
            "p99_s": percentile(latencies, 99), "engine_calls": sum(calls.values()), "calls_by_images": calls,
            "images_per_engine_call": sum(k * v for k, v in calls.items()) / max(1, sum(calls.values())),
            "batch_shared_per_request": float(np.mean(shared)) if shared else 0.0, "replicas": sorted(replicas)}


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def memory_mib(pid: int, field: str, source: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def service_memory(server: Server, replicas: set[str]) -> dict:
    pids = [int(r.rsplit(":", 1)[1]) for r in replicas]
    return {"replica_rss_mib": sum(memory_mib(p, "VmRSS", "status") for p in pids),
            "service_pss_mib": sum(memory_mib(p, "Pss", "smaps_rollup") for p in tree(server.process.pid))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", help="engine directory (default: efficientnet-lite0 from the export cache)")
    parser.add_argument("--images", type=int, default=4, help="photos (rows 100..) for the API and the load")
    parser.add_argument("--requests", type=int, default=8, help="UnionCAM requests sent to the service")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--memory-requests", type=int, default=500, help="Grad-CAM requests for the memory part")
    parser.add_argument("--budget", help="region-map budget of the UnionCAM load, e.g. 128 (default: exact)")
    parser.add_argument("--max-batch", type=int, default=8, help="the service's --max-batch")
    parser.add_argument("--batch-wait-ms", type=float, default=20, help="the service's --batch-wait-ms")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the service's local Ray")
    parser.add_argument("--time-limit", type=float, default=240, help="seconds for all load loops together")
    args = parser.parse_args()

    deadline = time.monotonic() + args.time_limit
    engine = engine_dir(args)
    photos = dev_images(100, args.images)
    bodies = [p.read_bytes() for p in photos]
    unioncam = {"method": "unioncam", **({"budget": args.budget} if args.budget else {})}
    label = f"unioncam{'' if not args.budget else f' budget={args.budget}'}"
    rows = [api_run(engine, photos, args.budget)]
    (HERE / "results").mkdir(parents=True, exist_ok=True)
    server = Server(engine, args)
    memory = None
    try:
        load(server.url, bodies[:1], unioncam, 1, 1, deadline)  # warm-up
        serve = load(server.url, bodies, unioncam, args.requests, args.clients, deadline)
        rows.append({"mode": f"HTTP serve, {args.replicas} replica(s), {args.clients} clients, {label}", **serve,
                     "clients": args.clients})
        if args.memory_requests > 0:
            memory, rest = memory_run(server, bodies, args, deadline)
            rows.append({"mode": f"HTTP serve, {args.clients} clients, gradcam", **rest, "clients": args.clients})
    finally:
        server.stop()

    print(f"\nEfficientNet-Lite0, {args.images} photos, {args.num_cpus}-CPU local Ray, --max-batch {args.max_batch}, "
          f"--batch-wait-ms {args.batch_wait_ms:g}\n")
    print_table(["mode", "requests", "throughput /s", "p50 s", "p99 s", "engine calls", "images per engine call",
                 "calls by images held"],
                [[r["mode"], r["requests"], r["throughput_per_s"], r["p50_s"], r["p99_s"], r.get("engine_calls", "-"),
                  r["images_per_engine_call"], r.get("calls_by_images", "-")] for r in rows])
    if memory:
        print()
        print_table(["after requests", "replica RSS MiB", "service PSS MiB (all Ray processes)"],
                    [[memory["after_requests"][i], f"{memory['replica_rss_mib'][i]:.1f}",
                      f"{memory['service_pss_mib'][i]:.1f}"] for i in range(2)])
    write_json(HERE / "results" / "serve-efficientnet-lite0.json",
               {"machine": machine(), "args": vars(args), "rows": rows, "memory": memory})


def memory_run(server: Server, bodies: list[bytes], args, deadline: float) -> tuple[dict, dict]:
    """Grad-CAM requests; the service's memory after the first 50 and after all of them."""
    gradcam = {"method": "gradcam"}
    first = load(server.url, bodies, gradcam, MEMORY_CHECKPOINT, args.clients, deadline)
    after_first = service_memory(server, set(first["replicas"]))
    rest = load(server.url, bodies, gradcam, max(0, args.memory_requests - MEMORY_CHECKPOINT), args.clients, deadline)
    after_all = service_memory(server, set(first["replicas"]) | set(rest["replicas"]))
    memory = {"after_requests": [first["requests"], first["requests"] + rest["requests"]],
              "replica_rss_mib": [after_first["replica_rss_mib"], after_all["replica_rss_mib"]],
              "service_pss_mib": [after_first["service_pss_mib"], after_all["service_pss_mib"]]}
    return memory, rest


if __name__ == "__main__":
    main()
