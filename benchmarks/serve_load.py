"""Load test of ``mode=serve`` over loopback HTTP: latency and slates/s of Ray Serve against the same
module called in-process.

Setup, all in this process: a local Ray (2 CPUs), a tiny checkpoint (``--algo lin_ucb`` trained
one iteration on Interest Evolution, 10 candidates / slate 2, like ``tests/test_serve.py``; or
``--restore <run dir>`` to serve an existing run's checkpoint with its saved config), then
``recsys_exp.serve.deployment.start_app`` on a free loopback port. Request bodies are real
observations of the configured env, JSON-encoded before any timing.

Phases (one table row each):

1. ``serve single``: ``--clients`` threads, each with its own keep-alive ``http.client`` connection,
   POST one observation per request, until ``--requests`` requests or ``--seconds`` have passed;
   a share ``--bad`` of the bodies are malformed (rotating: invalid JSON, wrong candidate count,
   NaN, missing ``user``) and must get a 4xx;
2. ``serve batch``: the same with ``--batch`` observations per body (the list form) → slates/s;
3. ``in-process``: ``Policy.from_checkpoint(c, checkpoint).greedy`` on the flattened
   observations, one per call (latency) and ``--batch`` per call (slates/s) — the same module
   without HTTP, Serve or JSON; plus, for attribution, one observation per call *including*
   the replica's JSON validation (``parse_recommend``) and flattening.

Latency percentiles are over the valid (2xx) requests; slates/s counts the slates of 2xx answers
per second of wall time. The ratios compare serve with in-process throughput measured in the same
run. A per-process CPU breakdown (from /proc) of each serve phase shows where the cores went.

    python benchmarks/serve_load.py [--clients 16 --requests 4000 --seconds 30 --batch 32 --bad 0.05]
    python benchmarks/serve_load.py --replicas 2 serve.max_batch_size=32 serve.batch_wait_timeout_s=0.005
    python benchmarks/serve_load.py --restore outputs/<run dir>

Caveat: the load generator (Python threads, one GIL), the HTTP proxy, the replica(s) and Ray's own
processes all share the machine's cores (2 here), so the numbers are a lower bound for a server
with cores of its own; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import shlex
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")
BAD_KINDS = ("invalid JSON", "wrong candidate count", "NaN", "missing user")
TARGETS = {"p50_ms": 5.0, "p99_ms": 25.0, "batch_slates_s": 1000.0}


# ----------------------------------------------------------------------------------------- config

def compose_config(*overrides: str, restore: str | None = None) -> dict[str, Any]:
    """Compose ``conf/`` with ``overrides`` and validate it as the CLI does (``restore``: on top of
    that run's saved config, like ``mode=serve restore=...``)."""
    from hydra import compose, initialize_config_dir

    from recsys_exp.config.compose import apply_overrides
    from recsys_exp.config.schema import register_configs
    from recsys_exp.config.validate import check_schema, check_semantics
    from recsys_exp.run_dir import CONFIG_FILE, load_config, locate_checkpoint

    overrides = list(overrides)
    if restore is not None:
        overrides += ["mode=serve", f"restore={restore}"]
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    if restore is not None:
        _, config_dir = locate_checkpoint(restore)
        c = check_schema(apply_overrides(load_config(config_dir / CONFIG_FILE), cfg, overrides))
    else:
        from omegaconf import OmegaConf

        c = check_schema(OmegaConf.to_container(cfg, resolve=True))
    check_semantics(c)
    return c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_tiny_checkpoint(c: dict[str, Any], out: Path) -> str:
    """One training iteration of ``c``'s algorithm, saved to ``out``."""
    from recsys_exp.runner.build import build_algorithm_config

    _, config = build_algorithm_config(c)
    algo = config.build_algo()
    try:
        algo.train()
        return algo.save_to_path(str(out))
    finally:
        algo.stop()


# ---------------------------------------------------------------------------------------- bodies

def observations(c: dict[str, Any], count: int, seed: int = 1) -> dict[str, Any]:
    """``count`` observations of the configured env (batched, env layout), a few steps into sessions."""
    import numpy as np

    from recsys_exp.envs.registry import make_vector_env

    e = c["env"]
    env = make_vector_env(e["name"], count, num_candidates=e["num_candidates"], slate_size=e["slate_size"],
                          resample_documents=e["resample_documents"], max_episode_steps=e["max_episode_steps"],
                          seed=seed, **e["params"])
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(3):
        slates = np.argsort(rng.random((count, e["num_candidates"])), axis=1)[:, :e["slate_size"]]
        obs, *_ = env.step(slates)
    return obs


def request_dicts(obs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"user": obs["user"][i].tolist(), "docs": obs["doc"][i].tolist(),
             "response": {k: v[i].tolist() for k, v in obs["response"].items()}} for i in range(len(obs["user"]))]


def malformed(req: dict[str, Any], kind: int) -> bytes:
    """One malformed single body of kind ``kind`` (see BAD_KINDS); every one must get a 4xx."""
    kind %= len(BAD_KINDS)
    if kind == 0:
        return json.dumps(req).encode()[:-7]  # truncated: invalid JSON
    if kind == 1:
        return json.dumps({**req, "docs": req["docs"][:-1]}).encode()
    if kind == 2:  # NaN is not JSON; Python's json would accept it, so the server must reject it
        user = "[NaN" + "".join(f", {x!r}" for x in req["user"][1:]) + "]"
        return json.dumps({**req, "user": "@"}).encode().replace(b'"@"', user.encode())
    return json.dumps({k: v for k, v in req.items() if k != "user"}).encode()


def is_bad(i: int, share: float) -> bool:
    """Request ``i`` is malformed: an even spread of ``share`` of the requests."""
    return int((i + 1) * share) > int(i * share)


def build_bodies(reqs: list[dict[str, Any]], count: int, batch: int, share: float) -> list[tuple[bytes, bool]]:
    """``count`` (body, is_valid) pairs; ``batch`` > 1: list bodies, a malformed one has one bad element
    (or is truncated JSON)."""
    bodies, kinds = [], itertools.count()
    for i in range(count):
        bad = is_bad(i, share)
        if batch == 1:
            req = reqs[i % len(reqs)]
            bodies.append((malformed(req, next(kinds)) if bad else json.dumps(req).encode(), not bad))
            continue
        chunk = [reqs[(i * batch + j) % len(reqs)] for j in range(batch)]
        body = json.dumps(chunk).encode()
        if bad:
            kind = next(kinds) % len(BAD_KINDS)
            if kind == 0:
                body = body[:-7]
            else:
                parts = [json.dumps(r).encode() for r in chunk]
                parts[batch // 2] = malformed(chunk[batch // 2], kind)
                body = b"[" + b", ".join(parts) + b"]"
        bodies.append((body, not bad))
    return bodies


# ------------------------------------------------------------------------------------- load test

class CpuSampler:
    """CPU seconds per process group (from /proc) between ``start()`` and ``stop()``: this process and
    its descendants (Ray's processes started by ``ray.init``) by role, everything else as "not this
    benchmark" (other work on the machine distorts the numbers)."""

    GROUPS = (("replica", "ServeReplica"), ("proxy", "ProxyActor"), ("controller", "ServeController"))

    def __init__(self):
        self.tick = os.sysconf("SC_CLK_TCK")

    def _snapshot(self) -> tuple[dict[int, tuple[str, int, float]], float]:
        procs: dict[int, tuple[str, int, float]] = {}  # pid -> (cmdline, ppid, cpu seconds)
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            procs[int(proc.name)] = (cmd, int(fields[1]), (int(fields[11]) + int(fields[12])) / self.tick)
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        busy = (sum(vals) - vals[3] - vals[4]) / self.tick  # minus idle and iowait
        return procs, busy

    def _group(self, pid: int, procs: dict[int, tuple[str, int, float]]) -> str:
        me = os.getpid()
        if pid == me:
            return "load generator (this process)"
        p, seen = pid, set()
        while p in procs and p not in seen and p != me:
            seen.add(p)
            p = procs[p][1]
        if p != me:
            return "not this benchmark"
        return next((g for g, pat in self.GROUPS if pat in procs[pid][0]), "other ray processes")

    def start(self) -> None:
        self.before, self.busy0 = self._snapshot()
        self.t0 = time.perf_counter()

    def stop(self) -> str:
        after, busy1 = self._snapshot()
        wall = time.perf_counter() - self.t0
        used: dict[str, float] = {}
        for pid, (_, _, cpu) in after.items():  # processes that exited meanwhile are not counted
            g = self._group(pid, after)
            used[g] = used.get(g, 0.0) + cpu - (self.before[pid][2] if pid in self.before else 0.0)
        parts = [f"{g} {v / wall:.2f}" for g, v in sorted(used.items(), key=lambda kv: -kv[1]) if v / wall >= 0.01]
        return (f"cores busy {(busy1 - self.busy0) / wall:.2f} of {os.cpu_count()} "
                f"(per process group: {', '.join(parts)})")


def run_load(url: str, bodies: list[tuple[bytes, bool]], total: int, clients: int, seconds: float,
             stop: threading.Event) -> dict[str, Any]:
    """``clients`` keep-alive connections POSTing ``total`` of ``bodies`` (cycling, in order) for at most
    ``seconds``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port, path = parts.hostname, parts.port, parts.path
    headers = {"Content-Type": "application/json"}
    counter = itertools.count()
    results: list[list[tuple[float, int, bool]]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    deadline = time.perf_counter() + seconds

    def client(slot: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        out, errs = results[slot], errors[slot]
        try:
            while not stop.is_set():
                i = next(counter)  # atomic under the GIL
                if i >= total or time.perf_counter() >= deadline:
                    return
                body, valid = bodies[i % len(bodies)]
                t = time.perf_counter()
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    out.append((time.perf_counter() - t, resp.status, valid))
                except (OSError, http.client.HTTPException) as e:
                    errs.append(f"{type(e).__name__}: {e}")
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=60)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(s,), daemon=True) for s in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # short joins: Ctrl-C reaches the main thread
    wall = time.perf_counter() - start
    return {"results": [r for rs in results for r in rs], "errors": [e for es in errors for e in es], "wall": wall}


def percentiles(lat_s: list[float]) -> tuple[float, float, float]:
    import numpy as np

    if not lat_s:
        return (float("nan"),) * 3
    p = np.percentile(np.asarray(lat_s) * 1000, [50, 95, 99])
    return float(p[0]), float(p[1]), float(p[2])


def summarize_http(phase: str, run: dict[str, Any], per_body: int) -> dict[str, Any]:
    res = run["results"]
    ok = [lat for lat, st, _ in res if 200 <= st < 300]
    p50, p95, p99 = percentiles(ok)
    count = {c: sum(1 for _, st, _ in res if st // 100 == c) for c in (2, 4, 5)}
    wrong = sum(1 for _, st, valid in res if (valid and not 200 <= st < 300) or (not valid and st // 100 != 4))
    other = len(run["errors"]) + sum(1 for _, st, _ in res if st // 100 not in (2, 4, 5))
    return {"phase": phase, "requests": len(res) + len(run["errors"]), "p50": p50, "p95": p95, "p99": p99,
            "slates_s": len(ok) * per_body / run["wall"], "2xx": count[2], "4xx": count[4], "5xx": count[5],
            "other": other, "wrong_class": wrong, "bad_sent": sum(1 for _, _, v in res if not v),
            "wall": run["wall"], "errors": run["errors"][:3]}


# ------------------------------------------------------------------------------------ in-process

def in_process(fn, inputs: list, total: int, seconds: float, per_call: int) -> dict[str, Any]:
    """Call ``fn`` on ``total`` inputs in turn (cycling) or until ``seconds`` passed."""
    lat = []
    start = time.perf_counter()
    for i in range(total):
        x = inputs[i % len(inputs)]
        t = time.perf_counter()
        fn(x)
        lat.append(time.perf_counter() - t)
        if t - start >= seconds:
            break
    wall = time.perf_counter() - start
    p50, p95, p99 = percentiles(lat)
    return {"requests": len(lat), "p50": p50, "p95": p95, "p99": p99, "slates_s": len(lat) * per_call / wall,
            "2xx": "", "4xx": "", "5xx": "", "other": "", "wall": wall}


# ------------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent keep-alive client connections")
    parser.add_argument("--requests", type=int, default=4000, help="requests per serve phase (at most)")
    parser.add_argument("--seconds", type=float, default=30.0, help="time limit per phase")
    parser.add_argument("--batch", type=int, default=32, help="observations per body in the batch phase")
    parser.add_argument("--bad", type=float, default=0.05, help="share of malformed bodies (must get 4xx)")
    parser.add_argument("--algo", default="lin_ucb", help="algorithm of the tiny checkpoint trained here")
    parser.add_argument("--restore", default=None, help="serve this run dir's / checkpoint dir's checkpoint instead")
    parser.add_argument("--replicas", type=int, default=None, help="serve.num_replicas (default: the config's)")
    parser.add_argument("--warmup", type=int, default=64, help="unmeasured requests before each serve phase")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable for Ray/Serve processes (set before ray.init), e.g. "
                             "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0; repeatable")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. serve.max_batch_size=32")
    args = parser.parse_args()
    if not 0 <= args.bad < 1 or args.clients < 1 or args.batch < 1 or args.requests < 1:
        parser.error("need --clients, --batch, --requests >= 1 and 0 <= --bad < 1")
    for kv in args.env:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            parser.error(f"--env {kv!r}: expected KEY=VALUE")
        os.environ[key] = value

    t_start = time.perf_counter()
    import numpy as np
    import ray
    import torch
    from ray import serve

    from recsys_exp.envs.spec import env_spec
    from recsys_exp.envs.rllib import register_envs
    from recsys_exp.envs.layout import flatten_observations
    from recsys_exp.runner.policy import Policy
    from recsys_exp.serve.requests import ObservationSpec, parse_recommend

    torch.set_num_threads(1)
    overrides = ["serve=http", f"serve.port={free_port()}", *args.overrides]
    if args.replicas is not None:
        overrides.append(f"serve.num_replicas={args.replicas}")
    if args.restore is None:
        c = compose_config(f"algo={args.algo}", "env=interest_evolution", "env.num_candidates=10",
                           "env.slate_size=2", "algo.training.train_batch_size_per_learner=200", *overrides)
    else:
        c = compose_config(*overrides, restore=args.restore)
    n, k = c["env"]["num_candidates"], c["env"]["slate_size"]

    stop = threading.Event()
    tmp = tempfile.TemporaryDirectory(prefix="serve_load_")
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        register_envs()
        if args.restore is None:
            print(f"training a tiny {args.algo} checkpoint (1 iteration) ...", flush=True)
            checkpoint = train_tiny_checkpoint(c, Path(tmp.name) / "ckpt")
        else:
            from recsys_exp.run_dir import locate_checkpoint

            checkpoint = str(locate_checkpoint(args.restore)[0])

        # Bodies (pre-encoded) and the same observations flattened for the in-process side.
        pool = 512
        obs = observations(c, pool)
        reqs = request_dicts(obs)
        space = env_spec(c).observation_space
        flat = flatten_observations(space, obs)
        unique = 400  # distinct bodies per phase, cycled (keeps memory small at large --batch/--requests)
        single = build_bodies(reqs, min(args.requests, unique), 1, args.bad)
        batched = build_bodies(reqs, min(args.requests, unique), args.batch, args.bad)
        warm_single = build_bodies(reqs, args.warmup, 1, 0.0)
        warm_batch = build_bodies(reqs, max(1, args.warmup // 4), args.batch, 0.0)

        # (3) in-process baseline first, before Serve's processes exist.
        print("in-process baseline ...", flush=True)
        policy = Policy.from_checkpoint(c, checkpoint)
        expected = policy.greedy(flat)
        for i in range(50):
            policy.greedy(flat[i:i + 1])
        ones = [flat[i:i + 1] for i in range(pool)]
        chunks = [flat[np.arange(i * args.batch, (i + 1) * args.batch) % pool] for i in range(unique)]
        proc_single = in_process(policy.greedy, ones, args.requests, args.seconds, 1)
        proc_batch = in_process(policy.greedy, chunks, args.requests, args.seconds, args.batch)
        spec = ObservationSpec.from_space(space, max_body_bytes=c["serve"]["max_body_bytes"],
                                          max_batch=c["serve"]["max_request_batch"])
        good = [b for b, _ in build_bodies(reqs, unique, 1, 0.0)]
        proc_parse = in_process(lambda b: policy.greedy(flatten_observations(space, parse_recommend(b, spec)[0])),
                                good, args.requests, args.seconds, 1)

        print(f"starting Serve ({c['serve']['num_replicas']} replica(s), {c['serve']['replica_num_cpus']} CPU each, "
              f"max_batch_size {c['serve']['max_batch_size']}, batch_wait_timeout_s "
              f"{c['serve']['batch_wait_timeout_s']}) ...", flush=True)
        from recsys_exp.serve.deployment import start_app

        url = start_app(c, checkpoint, name=f"{c['algo']['name']}_load")

        # Correctness before timing: served slates equal the in-process ones.
        conn = http.client.HTTPConnection("127.0.0.1", c["serve"]["port"], timeout=60)
        path = url.split(str(c["serve"]["port"]), 1)[1]
        conn.request("POST", path, body=json.dumps(reqs[:8]).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        conn.close()
        same = resp.status == 200 and [a["slate"] for a in answer] == expected[:8].tolist()
        notes.append(f"served slates equal the in-process module's: {'yes' if same else 'NO'} (8 observations)")

        sampler = CpuSampler()
        for phase, bodies, warm, per_body in (("serve single (1 obs/request)", single, warm_single, 1),
                                              (f"serve batch ({args.batch} obs/request)", batched, warm_batch,
                                               args.batch)):
            print(f"{phase}: warm-up, then {args.requests} requests at {args.clients} clients (<= {args.seconds:g} s)"
                  " ...", flush=True)
            run_load(url, warm, len(warm), args.clients, 60.0, stop)
            sampler.start()
            row = summarize_http(phase, run_load(url, bodies, args.requests, args.clients, args.seconds, stop),
                                 per_body)
            notes.append(f"{phase}: {sampler.stop()}")
            if row["errors"]:
                notes.append(f"{phase}: first errors: {row['errors']}")
            rows.append(row)
        rows.append({"phase": "in-process greedy (1 obs/call)", **proc_single})
        rows.append({"phase": f"in-process greedy ({args.batch} obs/call)", **proc_batch})
        rows.append({"phase": "in-process parse+flatten+greedy (1 obs/call)", **proc_parse})
    except KeyboardInterrupt:
        stop.set()
        print("interrupted: shutting down", file=sys.stderr, flush=True)
        raise
    finally:
        stop.set()
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            tmp.cleanup()

    def fmt(v: Any, spec: str) -> str:
        return v if isinstance(v, str) else format(v, spec)

    print("\n| phase | requests | p50 ms | p95 ms | p99 ms | slates/s | 2xx | 4xx | 5xx | other errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['phase']} | {r['requests']:,} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | "
              f"{r['slates_s']:,.0f} | {fmt(r['2xx'], ',')} | {fmt(r['4xx'], ',')} | {fmt(r['5xx'], ',')} | "
              f"{fmt(r['other'], ',')} |")
    s_single, s_batch = rows[0], rows[1]
    print(f"\nRatios (serve / in-process, same run): single-request throughput "
          f"{s_single['slates_s']:,.0f} / {proc_single['slates_s']:,.0f} = "
          f"{s_single['slates_s'] / proc_single['slates_s']:.3f}; batch slates/s "
          f"{s_batch['slates_s']:,.0f} / {proc_batch['slates_s']:,.0f} = "
          f"{s_batch['slates_s'] / proc_batch['slates_s']:.3f}")
    for r in (s_single, s_batch):
        print(f"{r['phase']}: {r['bad_sent']} malformed bodies sent; answers of the wrong class "
              f"(valid → not 2xx or malformed → not 4xx): {r['wrong_class']}; wall {r['wall']:.1f} s")
    for note in notes:
        print(note)

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    five = s_single["5xx"] + s_batch["5xx"]
    print(f"\nTargets (from the issue), at {args.clients} clients:")
    print(f"- p50 <= {TARGETS['p50_ms']:g} ms (single): {s_single['p50']:.2f} ms, {met(s_single['p50'] <= TARGETS['p50_ms'])}")
    print(f"- p99 <= {TARGETS['p99_ms']:g} ms (single): {s_single['p99']:.2f} ms, {met(s_single['p99'] <= TARGETS['p99_ms'])}")
    print(f"- >= {TARGETS['batch_slates_s']:,.0f} slates/s with batching: {s_batch['slates_s']:,.0f}, "
          f"{met(s_batch['slates_s'] >= TARGETS['batch_slates_s'])}")
    print(f"- zero 5xx: {five}, {met(five == 0)}")
    command = "python benchmarks/serve_load.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"\nMeasured with `{command.strip()}` on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, algo {c['algo']['name']}, {c['env']['name']} "
          f"{n}-{k}, {c['serve']['num_replicas']} replica(s) x {c['serve']['replica_num_cpus']} CPU, "
          f"max_batch_size {c['serve']['max_batch_size']}, batch_wait_timeout_s {c['serve']['batch_wait_timeout_s']}"
          f"{''.join(f', {kv}' for kv in args.env)}; "
          f"client and server share the cores. Wall time {time.perf_counter() - t_start:.0f} s.")


if __name__ == "__main__":
    main()
