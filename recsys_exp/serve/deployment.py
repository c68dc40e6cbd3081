"""``mode=serve``: a trained checkpoint behind Ray Serve's HTTP proxy.

One deployment, :class:`SlateRecommender`, serves any checkpoint this framework writes: it rebuilds
the RLModule from the checkpoint and its saved config (:func:`recsys_exp.offline.policy.build_module`),
validates every request body (:mod:`recsys_exp.serve.requests`: 4xx naming the field, never a
crashed replica), flattens the observation exactly as in training and answers with the policy's
greedy slate. Requests are batched across clients by ``@serve.batch`` (``serve.max_batch_size``,
``serve.batch_wait_timeout_s``).

Routes under ``route_prefix`` (default ``/<env name>``):

* ``POST <prefix>`` — ``{"user": [...], "docs": [[...], ...], "response": {...}}`` or a list of them →
  ``{"slate": [...], "scores": [...], "model": name, "request_id": id}`` (a list for a list);
* ``GET <prefix>/info`` — algorithm, env, N, K, feature sizes, checkpoint.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

MAX_SERVE_BATCH = 16  # default of @serve.batch; the config's value is applied in __init__


def route_prefix(c: dict[str, Any]) -> str:
    """``serve.route_prefix`` or ``/<env name>``."""
    prefix = c["serve"]["route_prefix"] or f"/{c['env']['name']}"
    return "/" + prefix.strip("/")


@serve.deployment
class SlateRecommender:
    """Greedy slates of one checkpoint's policy over HTTP (inference only, no exploration)."""

    def __init__(self, config: dict[str, Any], checkpoint: str, name: str):
        import torch

        from recsys_exp.config.validate import env_observation_space
        from recsys_exp.offline.policy import ModulePolicy, build_module
        from recsys_exp.serve.requests import ObservationSpec

        torch.set_num_threads(1)
        s = config["serve"]
        n, k = config["env"]["num_candidates"], config["env"]["slate_size"]
        self.space = env_observation_space(config)
        self.spec = ObservationSpec.from_space(self.space, max_body_bytes=s["max_body_bytes"],
                                               max_batch=s["max_request_batch"])
        self.policy = ModulePolicy(build_module(config, checkpoint), n, k)
        self.name = name
        self.info_body = {
            "model": name, "algorithm": config["algo"]["name"], "env": config["env"]["name"],
            "num_candidates": n, "slate_size": k, "user_dim": self.spec.user_dim, "doc_dim": self.spec.doc_dim,
            "response_fields": self.spec.response_fields, "checkpoint": str(checkpoint),
            "max_body_bytes": s["max_body_bytes"], "max_request_batch": s["max_request_batch"],
        }
        self.recommend.set_max_batch_size(s["max_batch_size"])
        self.recommend.set_batch_wait_timeout_s(s["batch_wait_timeout_s"])

    @serve.batch(max_batch_size=MAX_SERVE_BATCH, batch_wait_timeout_s=0.002)
    async def recommend(self, flats: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One forward pass for the observations of several requests (each (b_i, obs_dim))."""
        flat = np.concatenate(flats)
        slates, scores = self.policy.greedy_with_scores(flat)
        out, start = [], 0
        for f in flats:
            out.append((slates[start:start + len(f)], scores[start:start + len(f)]))
            start += len(f)
        return out

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        from recsys_exp.offline.dataset import flatten_observations
        from recsys_exp.serve.requests import RequestError, parse_recommend

        path = request.url.path.rstrip("/")
        if request.method == "GET" and path.endswith("/info"):
            return JSONResponse(self.info_body)
        if request.method != "POST" or path.endswith("/info"):
            return JSONResponse({"error": f"{request.method} {request.url.path}: use POST <prefix> or GET <prefix>/info"},
                                status_code=405)
        try:
            obs, is_batch = parse_recommend(await request.body(), self.spec)
        except RequestError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        slates, scores = await self.recommend(flatten_observations(self.space, obs))
        answers = [{"slate": s.tolist(), "scores": [round(float(x), 6) for x in p], "model": self.name,
                    "request_id": uuid.uuid4().hex} for s, p in zip(slates, scores)]
        return JSONResponse(answers if is_batch else answers[0])


def start_app(c: dict[str, Any], checkpoint: str | Path, name: str = "recommender") -> str:
    """Deploy ``checkpoint`` (config ``c``) on a running Ray; returns the URL of its route."""
    s = c["serve"]
    serve.start(http_options={"host": s["host"], "port": s["port"]})
    prefix = route_prefix(c)
    app = SlateRecommender.options(num_replicas=s["num_replicas"],
                                   ray_actor_options={"num_cpus": s["replica_num_cpus"]}).bind(c, str(checkpoint), name)
    serve.run(app, name=name, route_prefix=prefix)
    return f"http://{s['host']}:{s['port']}{prefix}"


def run_serve(c: dict[str, Any], run_dir: Path) -> None:
    """``mode=serve``: start Ray and the app, write serve.json, and (foreground) wait for Ctrl-C."""
    import time

    from recsys_exp.runner.run_dir import atomic_write_json, locate_checkpoint
    from recsys_exp.runner.train import init_ray

    checkpoint, _ = locate_checkpoint(c["restore"])
    init_ray(c)
    try:
        url = start_app(c, checkpoint)
        atomic_write_json(run_dir / "serve.json", {"url": url, "info": f"{url}/info", "checkpoint": str(checkpoint)})
        print(f"serving {c['algo']['name']} from {checkpoint} at {url} (GET {url}/info); Ctrl-C stops", flush=True)
        if c["serve"]["foreground"]:
            while True:
                time.sleep(1)
    except KeyboardInterrupt:  # Ctrl-C / SIGINT is how a foreground server is meant to stop
        print("stopping the server", flush=True)
    finally:
        serve.shutdown()

