"""Reference policies measured on a run's own env after training: uniformly random slates and,
where the env has one, its myopic policy (``algo=greedy`` with the score the results tables use).

Each plays greedy episodes with the run's evaluation settings (``eval.episodes``, ``eval.num_envs``
and the evaluation seed), i.e. on the same simulated users as the trained policy's evaluation; a
fresh policy needs no training, so this costs about as much as the run's own evaluation.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from recsys_exp.envs.spec import EnvSpec, env_spec
from recsys_exp.run_dir import eval_seed

log = logging.getLogger(__name__)

# env name -> algo=greedy's score settings of its myopic policy (as in benchmarks/*.py):
# Interest Evolution ranks by <user interests, doc cluster> (what drives the click), Long-Term
# Satisfaction by clickbait (doc feature 0, the immediate engagement), Interest Exploration by the
# observed quality (the last doc feature, after the topic one-hot).
MYOPIC = {
    "interest_evolution": {"score": "affinity"},
    "long_term_satisfaction": {"score": "feature", "feature_index": 0},
    "interest_exploration": {"score": "feature", "feature_index": "last"},
}


def baseline_policies(spec: EnvSpec) -> dict[str, tuple[str, dict[str, Any], str]]:
    """``{name: (algo, training settings, label)}`` of the reference policies of an env: random
    slates for every slate env, the myopic policy where :data:`MYOPIC` names one; none for
    ``env=gym`` and ``env=logged``."""
    if spec.is_gym or spec.is_logged:
        return {}
    out = {"random": ("random", {}, "random slates")}
    if spec.name in MYOPIC:
        training = dict(MYOPIC[spec.name])
        if training.get("feature_index") == "last":
            training["feature_index"] = spec.slate_layout["doc"][2] - 1
        by = "affinity" if training["score"] == "affinity" else f"doc feature {training['feature_index']}"
        out["myopic"] = ("greedy", training, f"myopic (greedy by {by})")
    return out


_COMPOSED: dict[tuple, dict[str, Any]] = {}  # (algo, config sources) -> its composed groups


def _composed_groups(algo: str) -> dict[str, Any]:
    """The config ``algo=<algo>`` composes to (a plain dict), memoised per config search path: a
    process composes each baseline once, not once per run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():
        from recsys_exp.config.schema import CONF_DIR, register_configs

        register_configs()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return _composed_groups(algo)
    try:
        sources = tuple((s.provider, s.path) for s in hydra.config_loader().repository.get_sources())
    except AttributeError:  # Hydra's internals moved: compose every time
        sources = None
    key = (algo, sources)
    if sources is None or key not in _COMPOSED:
        composed = OmegaConf.to_container(compose("config", overrides=[f"algo={algo}"]), resolve=True)
        if sources is None:
            return composed
        _COMPOSED[key] = composed
    return copy.deepcopy(_COMPOSED[key])


def baseline_config(c: dict[str, Any], algo: str, training: dict[str, Any]) -> dict[str, Any]:
    """The run's config with ``algo`` instead (its algo and exploration groups composed by Hydra,
    ``training`` on top); env, seed and evaluation settings stay the run's. Both parts were
    validated already (the run's config, and Hydra's composition against the schema)."""
    composed = _composed_groups(algo)
    sub = copy.deepcopy(c)
    for key in ("algo", "exploration", "offline", "tune"):  # no logged data, no search space
        sub[key] = composed[key]
    sub["algo"]["training"].update(training)
    sub["choices"] = {**c.get("choices", {}), "algo": algo}
    return sub


def measure_baselines(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Greedy evaluations of the env's reference policies (:func:`baseline_policies`) with the run's
    evaluation settings: ``{name: {label, overrides, episode_return_mean, ci95, episodes, ...}}``.
    A policy that cannot run on this env is left out (the reason goes to the log)."""
    from recsys_exp.runner.evaluate import evaluate_policy
    from recsys_exp.runner.policy import Policy

    spec = env_spec(c)
    out: dict[str, dict[str, Any]] = {}
    for name, (algo, training, label) in baseline_policies(spec).items():
        overrides = [f"algo={algo}", *(f"algo.training.{k}={v}" for k, v in training.items())]
        try:
            policy = Policy.from_checkpoint(baseline_config(c, algo, training), None)
            ev = evaluate_policy(policy, c["eval"]["episodes"], c["eval"]["num_envs"], eval_seed(c["seed"]))
        except Exception as e:  # a reference line must never fail the run it describes
            log.warning("baseline %s (%s) not measured: %s: %s", name, " ".join(overrides), type(e).__name__, e)
            continue
        out[name] = {"label": label, "overrides": overrides, **ev}
    return out
