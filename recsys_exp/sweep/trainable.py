"""One sweep configuration trained under several seeds in lockstep, reported as their mean.

Tuning on a single seed picks lucky seeds (RL Zoo issues #40, #151, #204, #314); here every
Tune trial owns ``tune.seeds`` RLlib Algorithms that differ only in their seed and steps them
together, so schedulers (ASHA rungs, PBT exploits) and searchers see the seed-averaged metric.

A trial's result holds every numeric metric of RLlib's result averaged over the seeds (so any
``tune.metric`` works), ``seeds/<seed>/...`` with each seed's own curve, and, after the step that
reaches the stop budget (or after which every seed's Algorithm reported ``done``: the bandits
learned from logs end after one pass), ``evaluation/episode_return_mean`` (greedy, averaged) with
``evaluation/per_seed``. A checkpoint holds one RLlib checkpoint per seed (``seed_<s>/``), each
with its resolved ``config.yaml``, so ``restore=<sweep dir>/best_checkpoint/seed_<s>`` works.

With ``env=logged`` (no simulator) every seed trains without its held-out sessions (the split of
its own seed, as a training run with that seed) and the evaluation is off-policy: the trial reports
``off_policy/value``, the mean over seeds of the ``offline.select_by`` estimate on each seed's
held-out sessions, with ``off_policy/per_seed/<seed>/{value, ci95_low, ci95_high, ess, n_episodes}``
and the smallest ESS and session count over the seeds. It is computed after every iteration when
a scheduler compares trials mid-run (``tune.scheduler`` asha or pbt), otherwise after the last one
(NaN before). The final evaluation is that estimate (``evaluation/per_seed``: each seed's value),
and each checkpoint taken right after an estimate holds it as ``seed_<s>/ope.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from recsys_exp.config.search_space import seed_list, trial_config

# Keys Tune's Trainable fills in itself; RLlib's copies are dropped before averaging.
TRAINABLE_KEYS = {"training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "date", "pid", "hostname",
                  "node_ip", "config", "trial_id", "experiment_tag", "done", "timesteps_since_restore",
                  "iterations_since_restore", "time_since_restore", "perf", "should_checkpoint",
                  "checkpoint_dir_name", "episodes_total", "timesteps_total"}
RETURN_KEY = "episode_return_mean"
OFF_POLICY_KEY = "off_policy"  # env=logged: the trial's off-policy estimate (its tune metric: off_policy/value)
TRIAL_FILE = "sweep_trial.json"  # in each trial checkpoint: seeds, sampled params, final evaluation


def average_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every numeric leaf present in all ``results`` (NaN-aware); other leaves from the first."""
    out: dict[str, Any] = {}
    first = results[0]
    for key, value in first.items():
        if key in TRAINABLE_KEYS or not all(key in r for r in results):
            continue
        values = [r[key] for r in results]
        if isinstance(value, dict):
            if all(isinstance(v, dict) for v in values):
                out[key] = average_results(values)
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            numbers = np.array([float(v) for v in values if isinstance(v, (int, float, np.number))])
            finite = numbers[~np.isnan(numbers)]
            out[key] = float(finite.mean()) if finite.size else float("nan")
    return out


class SeedAveragedTrainable(tune.Trainable):
    """Tune trainable of one sweep configuration: ``tune.seeds`` Algorithms stepped together.

    Trial ``config`` = the sampled search-space values as ``{dotted key: value}``; ``base`` = the
    sweep's validated config (passed with ``tune.with_parameters``).
    """

    def setup(self, config: dict[str, Any], base: dict[str, Any] | None = None):
        from recsys_exp.envs.rllib import register_envs
        from recsys_exp.envs.spec import env_spec
        from recsys_exp.runner.build import build_algorithm_config

        import torch

        torch.set_num_threads(1)
        register_envs()
        self.base = base
        self.params = dict(config)
        self.seeds = seed_list(base)
        self.configs = [trial_config(base, self.params, s) for s in self.seeds]
        self.algos = []
        for c in self.configs:
            _, algo_config = build_algorithm_config(c)
            self.algos.append(algo_config.build_algo())
        # The last finished-episode return of each seed: iterations without a finished episode
        # report NaN, which would otherwise blank the mean that schedulers compare.
        self.last_return = [math.nan] * len(self.seeds)
        self.evaluation: dict[str, Any] | None = None
        self.logged = env_spec(base).is_logged
        if self.logged:
            from recsys_exp.offline.evaluation import read_logged_data

            self.held_out = [read_logged_data(c, held_out=True) for c in self.configs]
            self.every_iteration = base["tune"]["scheduler"] != "none"
            self.ope: list[dict[str, Any]] | None = None  # the latest estimates, one ope.json per seed
            self.ope_iteration = 0                          # the iteration whose weights they are of

    def step(self) -> dict[str, Any]:
        results = [algo.train() for algo in self.algos]
        for i, r in enumerate(results):
            ret = r.get("env_runners", {}).get(RETURN_KEY)
            if ret is not None and not math.isnan(ret):
                self.last_return[i] = float(ret)
            r.setdefault("env_runners", {})[RETURN_KEY] = self.last_return[i]
        out = average_results(results)
        out["seeds"] = {str(s): _seed_row(r) for s, r in zip(self.seeds, results)}
        import ray

        out["node_id"] = ray.get_runtime_context().get_node_id()
        # An Algorithm may end its own run (the bandits learned from logs: one pass over the rows); the
        # trial ends when every seed's has (a finished seed's further steps absorb nothing).
        finished = all(r.get("done", False) for r in results)
        final = self._reaches_stop(out) or finished
        if finished:
            out["done"] = True
        if self.logged:
            if final or self.every_iteration:
                self.ope, self.ope_iteration = self._off_policy(), self.iteration + 1
            out[OFF_POLICY_KEY] = off_policy_result(self.seeds, self.ope, self.base["offline"]["select_by"])
        if final:
            self.evaluation = self._evaluate()
        if self.evaluation is not None:
            out["evaluation"] = self.evaluation
        return out

    def _reaches_stop(self, result: dict[str, Any]) -> bool:
        stop = self.base["stop"]
        steps = result.get("num_env_steps_sampled_lifetime") or 0
        return ((stop["timesteps"] is not None and steps >= stop["timesteps"])
                or (stop["iterations"] is not None and self.iteration + 1 >= stop["iterations"]))

    def _off_policy(self) -> list[dict[str, Any]]:
        """``env=logged``: each seed's off-policy estimates (ope.json's content) of its in-memory
        module on its held-out sessions (:func:`recsys_exp.offline.evaluation.policy_estimates`)."""
        from recsys_exp.offline.evaluation import policy_estimates
        from recsys_exp.runner.policy import Policy

        return [policy_estimates(c, Policy.from_module(_live_module(algo), c), data, held_out=True)
                for c, algo, data in zip(self.configs, self.algos, self.held_out)]

    def _evaluate(self) -> dict[str, Any]:
        """Greedy evaluation of every seed (``eval.*``) on the in-memory modules, in the one
        simulation engine (:func:`recsys_exp.runner.evaluate.evaluate_policy`); with ``env=logged``
        the off-policy estimates of the last iteration instead (``off_policy``: per seed)."""
        from recsys_exp.run_dir import eval_seed
        from recsys_exp.runner.evaluate import evaluate_policy
        from recsys_exp.runner.policy import Policy

        if self.logged:
            result = off_policy_result(self.seeds, self.ope, self.base["offline"]["select_by"])
            per_seed = {s: r["value"] for s, r in result["per_seed"].items()}
            return {RETURN_KEY: result["value"], "per_seed": per_seed, OFF_POLICY_KEY: result}
        per_seed = {}
        for s, c, algo in zip(self.seeds, self.configs, self.algos):
            policy = Policy.from_module(_live_module(algo), c)
            ev = evaluate_policy(policy, c["eval"]["episodes"], c["eval"]["num_envs"], eval_seed(s))
            per_seed[str(s)] = ev["episode_return_mean"]
        return {RETURN_KEY: float(np.mean(list(per_seed.values()))), "per_seed": per_seed}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        from recsys_exp.run_dir import CONFIG_FILE, atomic_write_json, write_config

        for i, (s, c, algo) in enumerate(zip(self.seeds, self.configs, self.algos)):
            path = Path(checkpoint_dir) / f"seed_{s}"
            algo.save_to_path(str(path))
            write_config(path / CONFIG_FILE, c)
            if self.logged and self.ope is not None and self.ope_iteration == self.iteration:
                # the estimates of these very weights
                atomic_write_json(path / "ope.json", {**self.ope[i], "checkpoint": str(path)})
        atomic_write_json(Path(checkpoint_dir) / TRIAL_FILE, {"seeds": self.seeds, "params": self.params,
                                                               "evaluation": self.evaluation})
        # None: Tune hands this directory back to load_checkpoint.

    def load_checkpoint(self, checkpoint: str) -> None:
        import json

        path = Path(checkpoint)
        for s, algo in zip(self.seeds, self.algos):
            # Weights, optimizer and connector state; the learning rate stays this trial's own,
            # since RLlib re-applies its lr schedule after every update (PBT restores a better
            # trial's weights into a perturbed configuration).
            algo.restore_from_path(str(path / f"seed_{s}"))
        saved = json.loads((path / TRIAL_FILE).read_text())
        if saved["params"] == self.params:  # a resumed trial keeps its final evaluation
            self.evaluation = saved["evaluation"]

    def cleanup(self) -> None:
        for algo in self.algos:
            algo.stop()


def off_policy_result(seeds: list[int], ope: list[dict[str, Any]] | None, select_by: str) -> dict[str, Any]:
    """A logged-env trial's ``off_policy`` result from each seed's ope.json content (None: not yet
    estimated, every number NaN): ``value`` (mean over seeds of the ``select_by`` estimate: with
    ``recommended``, each seed's recommended one), the smallest ``ess`` (NaN for ``dm``) and
    ``n_episodes`` over the seeds, and ``per_seed`` (with each seed's estimator and verdict)."""
    from recsys_exp.offline.verdict import selected

    nan = math.nan
    per_seed = {}
    for i, s in enumerate(seeds):
        name = selected(ope[i], select_by) if ope is not None else None
        est = ope[i]["estimates"][name] if ope is not None else {}
        low, high = est.get("ci95", (nan, nan))
        ess = est.get("ess")
        per_seed[str(s)] = {"value": est.get("value", nan), "ci95_low": low, "ci95_high": high,
                            "ess": nan if ess is None else ess, "n_episodes": est.get("n_episodes", nan),
                            "estimator": name, "reliable": est.get("reliable"), "reason": est.get("reason")}
    rows = list(per_seed.values())
    return {"value": float(np.mean([r["value"] for r in rows])), "ess": _smallest([r["ess"] for r in rows]),
            "n_episodes": _smallest([r["n_episodes"] for r in rows]), "per_seed": per_seed}


def _smallest(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return min(finite) if finite else math.nan


def _live_module(algo):
    """The Algorithm's current RLModule, its (first) Learner's: the freshest weights, and present for
    offline algorithms too (which have no training EnvRunners, so ``algo.get_module()`` fails)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    return [r.get() for r in algo.learner_group.foreach_learner(lambda learner: learner.module[DEFAULT_MODULE_ID])][0]


def _seed_row(result: dict[str, Any]) -> dict[str, Any]:
    """The per-seed numbers a learning curve needs."""
    runners = result.get("env_runners", {})
    return {"num_env_steps_sampled_lifetime": result.get("num_env_steps_sampled_lifetime"),
            "env_runners": {k: runners.get(k) for k in (RETURN_KEY, "episode_len_mean", "num_episodes",
                                                         "num_env_steps_sampled")}}


def trial_resources(c: dict[str, Any]):
    """Placement group of a trial: one bundle for the trainable, each seed's EnvRunner bundles."""
    from ray.tune import PlacementGroupFactory

    from recsys_exp.runner.build import build_algorithm_config

    algo_cls, algo_config = build_algorithm_config(trial_config(c, {}, c["seed"]))
    bundles = algo_cls.default_resource_request(algo_config).bundles
    return PlacementGroupFactory([bundles[0]] + bundles[1:] * len(seed_list(c)), strategy="PACK")
