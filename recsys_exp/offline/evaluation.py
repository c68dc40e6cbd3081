"""``mode=evaluate restore=<run> offline.path=<data>``: off-policy estimates of a checkpoint's value.

The target policy is the restored module — greedy, as it would be served (``offline.target=greedy``),
or with its exploration (``explore``). Its probabilities of the logged slates come from the
policy contract of :class:`~recsys_exp.runner.policy.Policy`; ``dm`` and ``dr`` use a fitted Q-evaluation
(:mod:`recsys_exp.offline.fqe`) of that policy on the same data; the estimators and their
bootstrap intervals are :mod:`recsys_exp.offline.ope`. The estimated quantity is the expected
(γ-discounted, γ = ``offline.gamma``) session return — the number the simulator's evaluation
reports — so the two can be compared directly. That truth (``simulated``) is measured by the same
engine as ``mode=evaluate`` (:func:`recsys_exp.runner.simulate.simulate`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from recsys_exp.errors import ConfigError
from recsys_exp.run_dir import eval_seed


def target_policy(c: dict[str, Any], checkpoint: str | Path):
    """The restored module as a :class:`~recsys_exp.runner.policy.Policy` (exploration settings from ``c``)."""
    from recsys_exp.runner.policy import Policy

    return Policy.from_checkpoint(c, checkpoint)


def ope_inputs(data, policy, space, explore: bool, gamma: float, estimators, fqe_iters: int | None, seed: int,
               fqe_refits: int = 3):
    """Everything the estimators need from logged ``data`` and a target ``policy``; fits FQE
    (``fqe_iters`` refreshes, None = the horizon; ``fqe_refits`` bootstrap refits) only when an
    estimator that reads it (dm, or dr, sndr, dros, switch_dr) is asked for. Returns (OPEInputs, info dict)."""
    from recsys_exp.algorithms.slates import NotEnumerable
    from recsys_exp.envs.layout import slate_layout
    from recsys_exp.offline.fqe import FQEConfig, fit_fqe, q_values, support_values
    from recsys_exp.offline.ope import MODEL_ESTIMATORS, OPEInputs, check_propensities
    from recsys_exp.runner.policy import slate_probability, slot_probability

    obs, next_obs, has_next = data.observations(space)
    try:
        support, probs = policy.support(obs, explore)
    except NotEnumerable as e:
        hint = "; evaluate the greedy policy (offline.target=greedy)" if explore else ""
        raise ConfigError(f"offline.target={'explore' if explore else 'greedy'}: {e}{hint}") from None
    k = data.slate_size
    slot_reward = np.zeros((data.num_rows, k))
    clicked = np.flatnonzero(data.click >= 0)
    slot_reward[clicked, data.click[clicked]] = data.reward[clicked]
    inputs = OPEInputs(
        episode=data.episode_id, reward=data.reward, behaviour_prob=data.propensity,
        target_prob=slate_probability(support, probs, data.slate), behaviour_slot_prob=data.slot_propensity,
        target_slot_prob=slot_probability(support, probs, data.slate), slot_reward=slot_reward, gamma=gamma,
        row_labels=_RowLabels(data), behaviour_prefix_prob=behaviour_prefix_probability(data),
        target_prefix_prob=prefix_probability(support, probs, data.slate))
    # Propensity problems surface before the costly model fit (the dr family needs what ips needs).
    weighted = sorted({"ips" if e in MODEL_ESTIMATORS else e for e in estimators if e != "dm"})
    if weighted:
        check_propensities(inputs, weighted)
    info: dict[str, Any] = {}
    if set(MODEL_ESTIMATORS) & set(estimators):
        start = time.perf_counter()
        next_support, next_probs = policy.support(next_obs, explore)
        done = data.terminated | ~has_next
        iterations = fqe_iterations(data, gamma, fqe_iters)
        config = FQEConfig(iterations=iterations, seed=seed, refits=fqe_refits)
        # The slate logged at the next state, for FQE's behaviour check (unused at a session's last row).
        next_logged = np.roll(data.slate, -1, axis=0)
        q = fit_fqe(obs, data.slate, data.reward, next_obs, done, next_support, next_probs,
                    data.num_candidates, gamma, config, layout=slate_layout(space), steps=data.step,
                    episodes=data.episode_id, next_logged_slates=next_logged)
        # the model and its refits come out of one forward pass over the ensemble
        inputs.q_logged, q_refits = q_values(q, obs, data.slate, data.step, refits=True)
        inputs.v_target, v_refits = support_values(q, obs, support, probs, data.step, refits=True)
        if config.refits:
            inputs.q_logged_refits, inputs.v_target_refits = q_refits, v_refits
        info["fqe"] = {"max_iterations": iterations, "hidden_sizes": list(config.hidden_sizes), **q.diagnostics,
                       "seconds": time.perf_counter() - start}
    return inputs, info


def prefix_probability(support: np.ndarray, probs: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """π(slots 0..k show A_0..A_k | s) of slates (B, K) under a distribution ``(support (B, M, K),
    probs (B, M))``: (B, K), the cascade probabilities rips weights slot k by."""
    prefix_match = np.logical_and.accumulate(support == slates[:, None, :], axis=-1)  # (B, M, K)
    return (probs[:, :, None] * prefix_match).sum(1)


def behaviour_prefix_probability(data) -> np.ndarray:
    """μ(slots 0..k show A_0..A_k | s) from the logs: (n, K), slot 0's from ``slot_propensity``, the
    last slot's from the slate ``propensity``, NaN (not logged) in between."""
    prefix = np.full((data.num_rows, data.slate_size), np.nan)
    prefix[:, 0] = data.slot_propensity[:, 0]
    prefix[:, -1] = data.propensity
    return prefix


def simulated_value(c: dict[str, Any], policy, explore: bool, gamma: float, episodes: int, seed: int) -> dict[str, Any]:
    """The target's true γ-discounted session return, by simulating ``episodes`` sessions in the env
    (the ground truth the estimates are compared with): :func:`recsys_exp.runner.simulate.simulate`
    in rounds of ``eval.num_envs`` users, the exploring target at env step 0 (as its support is)."""
    from recsys_exp.runner.simulate import simulate
    from recsys_exp.stats import mean_ci95

    result = simulate(policy, episodes, c["eval"]["num_envs"], seed, explore=explore, gamma=gamma)
    mean, _, _, ci = mean_ci95(result.returns)
    return {"value": mean, "ci95": ci, "episodes": int(len(result.returns)), "seed": seed}


def fqe_iterations(data, gamma: float, requested: int | None) -> int:
    """FQE needs about one iteration per step of horizon: the longest session, or the effective
    horizon log(0.01)/log(γ) when discounting makes that shorter."""
    if requested:
        return requested
    longest = int(data.step.max()) + 1
    if gamma < 1.0:
        longest = min(longest, int(np.ceil(np.log(0.01) / np.log(gamma))) if gamma > 0 else 1)
    return max(longest, 1)


class _RowLabels:
    """Lazy ``row i (episode e, step t)`` labels (only built for rows named in an error)."""

    def __init__(self, data):
        self.data = data

    def __getitem__(self, i):
        return self.data.row_label(int(i))

    def __len__(self):
        return self.data.num_rows


def check_held_out(c: dict[str, Any]) -> None:
    """Before a logged-env training run: its held-out sessions exist and carry what the estimators
    need (behaviour propensities for the importance-weighted ones), so the final off-policy
    evaluation cannot fail after training. Raises ConfigError naming the rows and the fix."""
    import numpy as np

    from recsys_exp.offline.dataset import DataError, LoggedData, held_out_sessions
    from recsys_exp.offline.ope import IS_ESTIMATORS

    off = c["offline"]
    try:
        data = LoggedData.read(off["path"])
    except DataError as e:
        raise ConfigError(f"offline.path={off['path']}: {e}") from None
    rows = held_out_sessions(data.episode_id, off["eval_fraction"], c["seed"])
    if not rows.any():
        raise ConfigError(f"offline.eval_fraction={off['eval_fraction']}: no session of the "
                          f"{int(data.first_rows().sum())} in offline.path={off['path']} is held out for the "
                          f"off-policy evaluation; raise it or log more sessions")
    weighted = [e for e in off["estimators"] if e in IS_ESTIMATORS]
    missing = np.flatnonzero(rows & ~np.isfinite(data.propensity))
    if weighted and len(missing):
        raise ConfigError(f"offline.estimators={off['estimators']}: {', '.join(weighted)} need behaviour "
                          f"propensities, missing in {len(missing)} held-out row(s), first {data.row_label(missing[0])} "
                          f"of offline.path={off['path']}; log propensities or use offline.estimators=[dm] "
                          f"(and offline.select_by=dm)")


def read_logged_data(c: dict[str, Any], held_out: bool = False):
    """``offline.path`` as :class:`~recsys_exp.offline.dataset.LoggedData`, checked against the env's
    observation space; ``held_out``: only the sessions a logged-env training run with this config holds
    out (``offline.eval_fraction``, split by :func:`~recsys_exp.offline.dataset.held_out_sessions`
    with ``c["seed"]``). Raises ConfigError naming ``offline.path``."""
    from recsys_exp.envs.spec import env_spec
    from recsys_exp.offline.dataset import DataError, LoggedData, held_out_sessions

    off = c["offline"]
    try:
        data = LoggedData.read(off["path"])
        data.check_space(env_spec(c).observation_space, f"offline.path={off['path']}")
        if held_out:
            data = data.select(held_out_sessions(data.episode_id, off["eval_fraction"], c["seed"]))
            if data.num_rows == 0:
                raise DataError(f"no session was held out (offline.eval_fraction={off['eval_fraction']}); "
                                f"raise it or log more sessions")
    except DataError as e:
        raise ConfigError(f"offline.path={off['path']}: {e}") from None
    return data


def policy_estimates(c: dict[str, Any], policy, data, held_out: bool = False,
                     checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Estimates (``offline.estimators``) of ``policy``'s value from logged ``data``: the content of
    ope.json. With a simulator, ``simulated`` holds the target's true value; ``env=logged`` has none.
    ``held_out`` and ``checkpoint`` are recorded as given."""
    from recsys_exp.envs.spec import env_spec
    from recsys_exp.offline.dataset import DataError
    from recsys_exp.offline.ope import OPEError, decision_support, estimate
    from recsys_exp.offline.verdict import add_verdicts, feasible_range

    off, spec = c["offline"], env_spec(c)
    start = time.perf_counter()
    explore = off["target"] == "explore"
    try:
        inputs, info = ope_inputs(data, policy, spec.observation_space, explore, off["gamma"], off["estimators"],
                                  off["fqe_iterations"], c["seed"], off["fqe_refits"])
        estimates = estimate(inputs, off["estimators"], n_bootstrap=off["bootstrap"], seed=c["seed"],
                             clip=off["clip"], dros_lambda=off["dros_lambda"], switch_tau=off["switch_tau"],
                             model_bias=info.get("fqe", {}).get("bias_bound"))
        support = decision_support(inputs)
    except (OPEError, DataError) as e:
        raise ConfigError(f"offline.path={off['path']}: {e}") from None
    # A verdict next to every number (recsys_exp.offline.verdict): reliable or not, why, which to read.
    feasible = feasible_range(data.reward, data.episode_id, off["gamma"])
    recommended = add_verdicts(estimates, feasible, info.get("fqe"), support)
    truth = None if spec.is_logged else simulated_value(c, policy, explore, off["gamma"], c["eval"]["episodes"],
                                                        eval_seed(c["seed"]))
    return {"estimates": estimates, "recommended": recommended, "feasible_range": list(feasible), "support": support,
            **({"simulated": truth} if truth else {}), "target": off["target"],
            "gamma": off["gamma"], "clip": off["clip"],
            "checkpoint": None if checkpoint is None else str(checkpoint),
            "held_out": held_out,
            "data": {"path": str(off["path"]), "rows": data.num_rows,
                     "episodes": int(data.first_rows().sum()), "behaviour": data.meta.get("algo"),
                     "behaviour_exploration": data.meta.get("exploration")},
            "bootstrap": off["bootstrap"], "seconds": time.perf_counter() - start, **info}


def off_policy_evaluation(c: dict[str, Any], checkpoint: str | Path, held_out: bool = False) -> dict[str, Any]:
    """Estimates of the checkpoint's value from ``offline.path``: the content of ope.json.

    ``held_out``: only the sessions a logged-env training run held out (see :func:`read_logged_data`).
    With a simulator, ``simulated`` holds the target's true value; ``env=logged`` has none.
    """
    data = read_logged_data(c, held_out)
    return policy_estimates(c, target_policy(c, checkpoint), data, held_out, checkpoint)


def objective_block(c: dict[str, Any], ope: dict[str, Any]) -> dict[str, Any]:
    """The ``offline.select_by`` estimate of ope.json ``ope`` (``recommended``: the recommended one,
    :func:`~recsys_exp.offline.verdict.selected`) as a run's objective (summary.json):
    ``{kind: off_policy, estimator, value, ci95, ess, n_episodes, held_out_fraction, reliable, reason,
    select_by}`` (``ess`` None for ``dm``, which does not weight sessions)."""
    from recsys_exp.offline.verdict import selected

    name = selected(ope, c["offline"]["select_by"])
    est = ope["estimates"][name]
    return {"kind": "off_policy", "estimator": name, "value": est["value"], "ci95": est["ci95"],
            "ess": est.get("ess"), "n_episodes": est["n_episodes"],
            "held_out_fraction": c["offline"]["eval_fraction"], "reliable": est.get("reliable"),
            "reason": est.get("reason"), "select_by": c["offline"]["select_by"]}
