"""``mode=serve``: a trained checkpoint behind Ray Serve's HTTP proxy.

One deployment, :class:`SlateRecommender`, serves any checkpoint this framework writes: it rebuilds
the policy from the checkpoint and its saved config (:class:`recsys_exp.runner.policy.Policy`),
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
MAX_PENDING = 100_000  # unrated request ids kept for feedback (oldest forgotten first)


def route_prefix(c: dict[str, Any]) -> str:
    """``serve.route_prefix`` or ``/<env name>``."""
    prefix = c["serve"]["route_prefix"] or f"/{c['env']['name']}"
    return "/" + prefix.strip("/")


def app_name(c: dict[str, Any]) -> str:
    """The Serve application's name: its route prefix without slashes (one app per route)."""
    return route_prefix(c).strip("/").replace("/", "_") or "root"


@serve.deployment
class SlateRecommender:
    """Greedy slates of one or several checkpoints' policies over HTTP (inference only).

    ``models``: ``[(name, config, checkpoint)]``; with more than one, a :class:`ModelSelector`
    picks the model of each request and learns from ``POST <prefix>/feedback``; its state is saved
    to ``state_path`` after every feedback and loaded from there at start.
    """

    def __init__(self, models: list[tuple[str, dict[str, Any], str]], state_path: str | None = None):
        import torch

        from recsys_exp.envs.spec import env_spec
        from recsys_exp.runner.policy import Policy
        from recsys_exp.serve.requests import ObservationSpec
        from recsys_exp.serve.selector import ModelSelector

        torch.set_num_threads(1)
        config = models[0][1]
        s = config["serve"]
        n, k = config["env"]["num_candidates"], config["env"]["slate_size"]
        self.space = env_spec(config).observation_space
        self.spec = ObservationSpec.from_space(self.space, max_body_bytes=s["max_body_bytes"],
                                               max_batch=s["max_request_batch"])
        self.names = [name for name, _, _ in models]
        self.policies = [Policy.from_checkpoint(cfg, ckpt) for _, cfg, ckpt in models]
        self.model_info = [{"model": name, "algorithm": cfg["algo"]["name"], "checkpoint": str(ckpt)}
                           for name, cfg, ckpt in models]
        self.info_body = {
            "env": config["env"]["name"], "num_candidates": n, "slate_size": k, "user_dim": self.spec.user_dim,
            "doc_dim": self.spec.doc_dim, "response_fields": self.spec.response_fields,
            "max_body_bytes": s["max_body_bytes"], "max_request_batch": s["max_request_batch"],
            **(self.model_info[0] if len(models) == 1 else {"models": self.model_info}),
        }
        self.selector, self.state_path, self.pending = None, state_path, {}
        if len(models) > 1:
            self.selector = ModelSelector(self.names, s["selector"], s["selector_alpha"], s["selector_epsilon"],
                                          seed=config["seed"])
            if state_path:
                self.selector.load(Path(state_path))
        self.recommend.set_max_batch_size(s["max_batch_size"])
        self.recommend.set_batch_wait_timeout_s(s["batch_wait_timeout_s"])

    @serve.batch(max_batch_size=MAX_SERVE_BATCH, batch_wait_timeout_s=0.002)
    async def recommend(self, requests: list[tuple[int, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One forward pass per model for the observations of several requests ((model, (b_i, obs_dim)))."""
        out: list = [None] * len(requests)
        for arm in {arm for arm, _ in requests}:
            idx = [i for i, (a, _) in enumerate(requests) if a == arm]
            flat = np.concatenate([requests[i][1] for i in idx])
            slates, scores = self.policies[arm].greedy_with_scores(flat)
            start = 0
            for i in idx:
                b = len(requests[i][1])
                out[i] = (slates[start:start + b], scores[start:start + b])
                start += b
        return out

    def info(self) -> dict[str, Any]:
        """What /info answers: the model(s), the observation layout and the selector's state."""
        if self.selector is None:
            return self.info_body
        return {**self.info_body, "selection": self.selector.state()}

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        path = request.url.path.rstrip("/")
        if request.method == "GET" and path.endswith("/info"):
            return JSONResponse(self.info())
        if request.method == "POST" and path.endswith("/feedback"):
            return self.feedback(await request.body())
        if request.method != "POST" or path.endswith("/info"):
            return JSONResponse({"error": f"{request.method} {request.url.path}: use POST <prefix>, "
                                          f"POST <prefix>/feedback or GET <prefix>/info"}, status_code=405)
        return await self.answer(await request.body())

    async def answer(self, body: bytes):
        """Validate a recommendation request and answer it with the chosen model's greedy slate(s)."""
        from starlette.responses import JSONResponse

        from recsys_exp.serve.requests import RequestError, parse_recommend

        try:
            obs, is_batch = parse_recommend(body, self.spec)
        except RequestError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        arm = self.selector.choose() if self.selector else 0
        slates, scores = await self.recommend((arm, self.policies[arm].flatten(obs)))
        answers = []
        for slate, score in zip(slates, scores):
            request_id = uuid.uuid4().hex
            if self.selector:
                self.pending[request_id] = arm
                if len(self.pending) > MAX_PENDING:  # forget the oldest unrated requests
                    self.pending.pop(next(iter(self.pending)))
            answers.append({"slate": slate.tolist(), "scores": [round(float(x), 6) for x in score],
                            "model": self.names[arm], "request_id": request_id})
        return JSONResponse(answers if is_batch else answers[0])

    def feedback(self, body: bytes):
        """``{"request_id", "reward"}``: credit the model that answered that request (once)."""
        from starlette.responses import JSONResponse

        from recsys_exp.run_dir import atomic_write_json
        from recsys_exp.serve.requests import RequestError, parse_feedback

        try:
            request_id, reward = parse_feedback(body, self.spec.max_body_bytes)
        except RequestError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        if self.selector is None:
            return JSONResponse({"error": "feedback: this app serves one model (set serve.candidates for "
                                          "model selection)"}, status_code=404)
        arm = self.pending.pop(request_id, None)
        if arm is None:
            return JSONResponse({"error": f"request_id: {request_id!r} is unknown or already rated"},
                                status_code=404)
        self.selector.update(arm, reward)
        if self.state_path:
            atomic_write_json(Path(self.state_path), self.selector.state())
        return JSONResponse({"request_id": request_id, "model": self.names[arm], "reward": reward})


def serving_models(c: dict[str, Any], checkpoint: str | Path | None = None) -> list[tuple[str, dict[str, Any], str]]:
    """``[(name, config, checkpoint)]`` to serve: ``checkpoint`` (config ``c``), else ``serve.candidates``
    (each with its own saved config and this run's serve settings), else ``restore``."""
    from recsys_exp.errors import ConfigError
    from recsys_exp.run_dir import load_config, locate_checkpoint

    if checkpoint is not None:
        return [(c["algo"]["name"], c, str(checkpoint))]
    if not c["serve"]["candidates"]:
        return [(c["algo"]["name"], c, str(locate_checkpoint(c["restore"])[0]))]
    models, names = [], set()
    for path in c["serve"]["candidates"]:
        try:
            ckpt, config_dir = locate_checkpoint(path)
        except FileNotFoundError as e:
            raise ConfigError(f"serve.candidates: {e}") from None
        cfg = {**load_config(config_dir / "config.yaml"), "serve": c["serve"]}
        name = Path(path).name
        while name in names:
            name += "'"
        names.add(name)
        models.append((name, cfg, str(ckpt)))
    first = models[0][1]["env"]
    for name, cfg, _ in models[1:]:
        if {k: cfg["env"][k] for k in ("name", "num_candidates", "slate_size")} != \
                {k: first[k] for k in ("name", "num_candidates", "slate_size")}:
            raise ConfigError(f"serve.candidates: {name} was trained on env {cfg['env']['name']} "
                              f"{cfg['env']['num_candidates']}-{cfg['env']['slate_size']}, {models[0][0]} on "
                              f"{first['name']} {first['num_candidates']}-{first['slate_size']}; candidates must share the env")
    return models


def start_app(c: dict[str, Any], checkpoint: str | Path | None = None, name: str | None = None,
              state_path: str | Path | None = None) -> str:
    """Deploy on a running Ray: ``checkpoint`` with config ``c`` (as model ``name``), or
    :func:`serving_models`' choice; returns the URL of the route."""
    s = c["serve"]
    models = serving_models(c, checkpoint)
    if name is not None and len(models) == 1:
        models = [(name, *models[0][1:])]
    serve.start(http_options={"host": s["host"], "port": s["port"]})
    prefix = route_prefix(c)
    app = SlateRecommender.options(num_replicas=s["num_replicas"], max_ongoing_requests=s["max_ongoing_requests"],
                                   ray_actor_options={"num_cpus": s["replica_num_cpus"]}).bind(
        models, str(state_path) if state_path else None)
    serve.run(app, name=app_name(c), route_prefix=prefix)
    return f"http://{s['host']}:{s['port']}{prefix}"


def run_serve(c: dict[str, Any], run_dir: Path) -> None:
    """``mode=serve``: start Ray and the app, write serve.json, and (foreground) wait for Ctrl-C."""
    import signal
    import time

    from recsys_exp.run_dir import atomic_write_json
    from recsys_exp.runner.lifecycle import ensure_ray

    models = serving_models(c)  # config errors before Ray starts
    ensure_ray(c, run_dir)
    try:
        url = start_app(c, state_path=run_dir / "selector.json")
        atomic_write_json(run_dir / "serve.json", {"url": url, "info": f"{url}/info",
                                                   "models": {name: ckpt for name, _, ckpt in models}})
        print(f"serving {', '.join(name for name, _, _ in models)} at {url} (GET {url}/info); Ctrl-C stops",
              flush=True)
        if c["serve"]["foreground"]:
            # A process started with SIGINT ignored (inherited from its parent) would never see
            # Ctrl-C: make SIGINT raise KeyboardInterrupt here, whatever the parent did.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            while True:
                time.sleep(1)
    except KeyboardInterrupt:  # Ctrl-C / SIGINT is how a foreground server is meant to stop
        print("stopping the server", flush=True)
    finally:
        # On a Ray this run started, ray.shutdown() (the runner's) ends Serve's actors with the
        # cluster; Serve's own graceful shutdown is only needed to leave a shared cluster clean.
        if c["ray"]["address"] is not None:
            serve.shutdown()

