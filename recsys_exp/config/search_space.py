"""Search spaces of the ``tune`` group: parse, validate against the config, convert to Ray Tune.

A search space maps config keys of the ``algo``, ``model`` and ``exploration`` groups to a
domain, written nested or dotted in YAML::

    search_space:
      algo.training.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
      model:
        hidden_sizes: {type: choice, values: [[64, 64], [256, 256]]}

Domains: ``choice`` / ``grid`` (``values``), ``uniform`` / ``loguniform`` (float ``low`` <
``high``), ``randint`` (int ``low`` <= x < ``high``, as in Tune). A trial's sampled values are
put onto a copy of the run's config (:func:`apply_params`), so every key means exactly what it
means on the command line. Nothing here imports Ray; :mod:`recsys_exp.sweep.run` turns a flat
space into Tune domains and builds every probe's RLlib config.
"""

from __future__ import annotations

import copy
from typing import Any

DOMAINS = {"choice": ("values",), "grid": ("values",), "uniform": ("low", "high"),
           "loguniform": ("low", "high"), "randint": ("low", "high")}
GROUPS = ("algo", "model", "exploration")
# Which exploration keys each exploration type reads (a key no one reads is a silent no-op).
EXPLORATION_KEYS = {"epsilon_greedy": ("initial_epsilon", "final_epsilon", "epsilon_timesteps"),
                    "ucb": ("alpha",), "thompson": ("scale",), "none": ()}


# The sweep keys of a single training run (tune=none): what a sweep's trial configs carry.
SINGLE_RUN = {"search_space": {}, "seeds": 1, "scheduler": "none", "search_alg": "random", "num_samples": 1}


def single_run_tune(tune: dict[str, Any]) -> dict[str, Any]:
    """The ``tune`` block of one plain training run with ``tune``'s metric and mode."""
    return {**tune, **SINGLE_RUN, "name": "none", "max_concurrent_trials": None}


class SearchSpaceError(ValueError):
    """A bad search-space entry; the message names ``tune.search_space.<key>``."""


def _is_domain(node: Any) -> bool:
    return isinstance(node, dict) and "type" in node


def flatten_space(space: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Nested or dotted ``search_space`` -> ``{"algo.training.lr": {type: ..., ...}}``."""
    flat: dict[str, dict[str, Any]] = {}
    for key, node in space.items():
        path = f"{prefix}{key}"
        if _is_domain(node):
            flat[path] = dict(node)
        elif isinstance(node, dict) and node:
            flat.update(flatten_space(node, f"{path}."))
        else:
            raise SearchSpaceError(f"tune.search_space.{path}={node!r}: expected a domain "
                                   f"{{type: {'|'.join(DOMAINS)}, ...}}")
    return flat


def check_domain(key: str, spec: dict[str, Any]) -> None:
    """One domain is well formed: known type, its arguments and nothing else, sensible bounds."""
    where = f"tune.search_space.{key}"
    kind = spec.get("type")
    if kind not in DOMAINS:
        raise SearchSpaceError(f"{where}.type={kind!r}: allowed: {', '.join(DOMAINS)}")
    wanted = set(DOMAINS[kind])
    extra, missing = set(spec) - wanted - {"type"}, wanted - set(spec)
    if extra or missing:
        raise SearchSpaceError(f"{where}: type {kind} takes {', '.join(sorted(wanted))}"
                               + (f"; unknown {', '.join(sorted(extra))}" if extra else "")
                               + (f"; missing {', '.join(sorted(missing))}" if missing else ""))
    if kind in ("choice", "grid"):
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise SearchSpaceError(f"{where}.values={spec['values']!r}: must be a non-empty list")
        return
    low, high = spec["low"], spec["high"]
    numbers = (int,) if kind == "randint" else (int, float)
    if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in (low, high)):
        raise SearchSpaceError(f"{where}: low and high must be {'integers' if kind == 'randint' else 'numbers'}, "
                               f"got {low!r}, {high!r}")
    if not low < high:
        raise SearchSpaceError(f"{where}: low={low} must be < high={high}")
    if kind == "loguniform" and low <= 0:
        raise SearchSpaceError(f"{where}: loguniform needs low > 0, got {low}")


def probe_values(spec: dict[str, Any]) -> list[Any]:
    """The values a domain can produce that are worth validating: every choice, both ends."""
    if spec["type"] in ("choice", "grid"):
        return list(spec["values"])
    if spec["type"] == "randint":
        return [spec["low"], spec["high"] - 1]
    return [spec["low"], spec["high"]]


def set_key(c: dict[str, Any], key: str, value: Any) -> None:
    """``c["a"]["b"]["c"] = value`` for ``key="a.b.c"``; inner dicts of free blocks are created."""
    node = c
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SearchSpaceError(f"tune.search_space.{key}: {part} is not a mapping in the config")
    node[parts[-1]] = value


def apply_params(c: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of config ``c`` with one trial's sampled ``params`` (dotted keys) put in."""
    out = copy.deepcopy(c)
    for key, value in params.items():
        set_key(out, key, value)
    return out


def check_key(c: dict[str, Any], key: str) -> None:
    """The key belongs to a searchable group, exists in the schema, and the run reads it."""
    from recsys_exp.config.schema import GROUPS as SCHEMAS

    where = f"tune.search_space.{key}"
    group, _, rest = key.partition(".")
    if group not in GROUPS or not rest:
        raise SearchSpaceError(f"{where}: only keys of the {', '.join(GROUPS)} groups can be searched "
                               f"(seeds: tune.seeds)")
    field, _, inner = rest.partition(".")
    fields = SCHEMAS[group].__dataclass_fields__
    if field not in fields or field == "name":
        allowed = ", ".join(f for f in fields if f != "name")
        raise SearchSpaceError(f"{where}: {group} has no key {field!r} (allowed: {allowed})")
    free = group == "algo" and field in ("training", "env_runners")
    if inner and not free:
        raise SearchSpaceError(f"{where}: {group}.{field} has no sub-keys")
    if free and not inner:
        raise SearchSpaceError(f"{where}: name a key inside {group}.{field} (e.g. {group}.{field}.lr)")
    if group == "exploration":
        kind = c["exploration"]["type"]
        if field not in EXPLORATION_KEYS.get(kind, ()) and field != "type":
            used = ", ".join(EXPLORATION_KEYS.get(kind, ())) or "none"
            raise SearchSpaceError(f"{where}: algo={c['algo']['name']} explores with {kind}, which does not "
                                   f"read {field} (its keys: {used})")


def check_search_space(c: dict[str, Any], validate_config) -> dict[str, dict[str, Any]]:
    """Validate ``c["tune"]["search_space"]``; returns the flat space.

    ``validate_config(config)`` runs the normal config checks; it is called with each probe value
    put in, so e.g. ``exploration.final_epsilon: {type: uniform, low: 0, high: 2}`` fails the
    same range check as on the command line, naming the search-space key.
    """
    flat = flatten_space(c["tune"]["search_space"])
    for key, spec in flat.items():
        check_domain(key, spec)
        check_key(c, key)
        for value in probe_values(spec):
            probe = apply_params(c, {key: value})
            # The probe is one plain training config: no sweep settings to re-check.
            probe["tune"] = single_run_tune(probe["tune"])
            try:
                validate_config(probe)
            except ValueError as e:
                raise SearchSpaceError(f"tune.search_space.{key}: value {value!r} is invalid: {e}") from None
    return flat


def seed_list(c: dict[str, Any]) -> list[int]:
    """Seeds of every configuration: ``seed, seed + 1, ..., seed + tune.seeds - 1``."""
    return [c["seed"] + i for i in range(c["tune"]["seeds"])]


def trial_config(c: dict[str, Any], params: dict[str, Any], seed: int) -> dict[str, Any]:
    """The plain training config of one seed of a trial (``tune=none``: restorable on its own)."""
    out = apply_params(c, params)
    out["seed"] = seed
    out["tune"] = single_run_tune(out["tune"])
    return out


def params_label(params: dict[str, Any]) -> str:
    """Short ``lr=0.001,hidden_sizes=[64, 64]`` label of a trial's sampled values."""
    parts = []
    for key, value in params.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key.split('.')[-1]}={value}")
    return ",".join(parts)
