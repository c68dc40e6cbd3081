"""The algorithm plugin contract: what the runner asks of an algorithm, without importing RLlib.

An algorithm is named in its YAML with Hydra's ``_target_`` (``conf/algo/<name>.yaml``)::

    _target_: my_package.my_algo.MyAlgoPlugin
    name: my_algo
    training: {lr: 0.001, ...}       # AlgorithmConfig.training(**) keywords

The plugin class says which env it needs (:class:`EnvNeeds`), which ``exploration.type`` values
it reads and how they become ``training()`` keywords, its own typed hyperparameters (``Params``,
a dataclass of the ``algo.training`` keys that are its own rather than RLlib's) with their checks,
and where its RLlib ``AlgorithmConfig`` lives. A user's plugin lives in the user's package and
config dir (``hydra.searchpath``); nothing in ``recsys_exp/config`` or ``recsys_exp/runner``
names any algorithm.

Plugin modules stay light (no RLlib or torch at import): composing and validating a config is
fast, RLlib is imported when the run is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from recsys_exp.errors import ConfigError

if TYPE_CHECKING:
    from recsys_exp.envs.spec import EnvSpec


@dataclass(frozen=True)
class EnvNeeds:
    """What an algorithm needs from the env.

    ``slate``: the slate observation (user, doc, response.click; :mod:`recsys_exp.envs.layout`) and
    ``MultiDiscrete([N]*K)`` slates; ``discrete_actions``: a ``Discrete`` action space (slate envs
    must set ``algo.flatten_actions=true``); ``logged_data``: learns only from ``offline.path``, never by
    sampling the simulator (algorithms that can do both set ``AlgorithmPlugin.logged_config_class``).
    """

    slate: bool = False
    discrete_actions: bool = False
    logged_data: bool = False


def epsilon_schedule(ex: Mapping[str, Any]) -> list[tuple[int, float]] | None:
    """The linear epsilon decay ``[(0, initial), (epsilon_timesteps, final)]``, or None unless epsilon_greedy."""
    if ex["type"] != "epsilon_greedy":
        return None
    return [(0, ex["initial_epsilon"]), (ex["epsilon_timesteps"], ex["final_epsilon"])]


class AlgorithmPlugin:
    """Base class of every algorithm plugin; subclasses set the class attributes and may override
    :meth:`check`, :meth:`exploration_settings` and :meth:`model_config`."""

    config_class: ClassVar[str]  # "package.module:AlgorithmConfigSubclass", imported lazily
    # "package.module:AlgorithmConfigSubclass" of the same algorithm learning from the rows of
    # ``offline.path`` instead of sampling the env (used when ``offline.path`` is set in mode=train),
    # or None when it can only sample. Algorithms that *only* learn from logs say so in ``needs``.
    logged_config_class: ClassVar[str | None] = None
    needs: ClassVar[EnvNeeds] = EnvNeeds()
    explorations: ClassVar[tuple[str, ...]] = ("none",)  # allowed exploration.type values, the default first
    Params: ClassVar[type | None] = None  # dataclass of this algorithm's own algo.training keys
    # "package.module:Class" of the policy contract for this algorithm's RLModule
    # (:mod:`recsys_exp.algorithms.policy_adapters`): how its actions and probabilities are read.
    policy_adapter: ClassVar[str] = "recsys_exp.algorithms.policy_adapters:CategoricalPolicy"

    @property
    def learns_from_logs(self) -> bool:
        """Whether this algorithm can train on logged data (``offline.path``) without a simulator."""
        return self.needs.logged_data or self.logged_config_class is not None

    # --- typed hyperparameters -------------------------------------------------------------
    def params(self, training: Mapping[str, Any]) -> Any:
        """The algorithm's own ``algo.training`` keys as a ``Params`` instance (defaults filled in);
        a wrong type raises one ``ConfigError`` naming ``algo.training.<key>``. None without ``Params``."""
        if self.Params is None:
            return None
        values = {}
        for f in dataclasses.fields(self.Params):
            if f.name not in training:
                continue
            value = training[f.name]
            allowed = _allowed_types(f.type)
            if allowed and (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)):
                names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
                raise ConfigError(f"algo.training.{f.name}={value!r}: must be {names}")
            values[f.name] = value
        return self.Params(**values)

    def check(self, c: Mapping[str, Any], spec: "EnvSpec") -> None:
        """Checks of this algorithm against the run config ``c`` and its env; raise ``ConfigError``
        naming the key. Called after the generic checks of :attr:`needs` passed."""
        self.params(c["algo"]["training"])

    # --- building the RLlib config ------------------------------------------------------------
    def load_config_class(self, logged: bool = False) -> type:
        """Import and return the ``AlgorithmConfig`` subclass (imports RLlib); ``logged``: the one
        that learns from ``offline.path`` (:attr:`logged_config_class`, or the only one)."""
        name = self.logged_config_class if logged and self.logged_config_class else self.config_class
        module, cls = name.split(":")
        return getattr(importlib.import_module(module), cls)

    def exploration_settings(self, exploration: Mapping[str, Any]) -> dict[str, Any]:
        """``training()`` keywords that carry the ``exploration`` group into the algorithm."""
        return {}

    def model_config(self, c: Mapping[str, Any], spec: "EnvSpec") -> Any:
        """The RLModule's ``model_config``: RLlib's ``DefaultModelConfig`` from the ``model`` group."""
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

        model = c["model"]
        return DefaultModelConfig(fcnet_hiddens=list(model["hidden_sizes"]), fcnet_activation=model["activation"])


class SlateAlgorithmPlugin(AlgorithmPlugin):
    """A recsys_exp slate module (:class:`recsys_exp.algorithms.common.SlatePolicyModule`): reads the
    slate layout; ``exploration=epsilon_greedy`` mixes in uniform slates with the group's schedule."""

    needs: ClassVar[EnvNeeds] = EnvNeeds(slate=True)
    policy_adapter: ClassVar[str] = "recsys_exp.algorithms.policy_adapters:SlateModulePolicy"

    def model_config(self, c: Mapping[str, Any], spec: "EnvSpec") -> dict[str, Any]:
        """Network sizes, the observation layout and epsilon of the slate modules."""
        model = c["model"]
        return {"hidden_sizes": list(model["hidden_sizes"]), "activation": model["activation"],
                "embedding_size": model["embedding_size"], "slate_layout": spec.slate_layout,
                "epsilon": epsilon_schedule(c["exploration"])}


def _allowed_types(annotation: Any) -> tuple[type, ...]:
    """Runtime types of a ``Params`` field annotation (``int``, ``float``, ``str``, ``bool``,
    ``X | None``; a float field also takes an int)."""
    if isinstance(annotation, str):  # from __future__ annotations
        names = [a.strip() for a in annotation.split("|")]
        table = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}
        if not all(n in table for n in names):
            return ()
        types = tuple(table[n] for n in names)
    else:
        types = (annotation,) if isinstance(annotation, type) else ()
    if float in types and int not in types:
        types += (int,)
    return types


def method_keywords(config_class: type, method: str) -> set[str]:
    """The keywords ``config_class.<method>()`` accepts, its own and every base class's (RLlib's
    config subclasses add theirs and pass the rest on with ``**kwargs``)."""
    keys: set[str] = set()
    for klass in config_class.__mro__:
        fn = klass.__dict__.get(method)
        if fn is not None:
            keys |= {p for p, v in inspect.signature(fn).parameters.items()
                     if p != "self" and v.kind is not inspect.Parameter.VAR_KEYWORD}
    return keys


def check_keywords(config_class: type, method: str, where: str, kwargs: Mapping[str, Any]) -> None:
    """Every key of ``kwargs`` is a keyword of ``config_class.<method>()``; else one ``ConfigError``
    naming ``<where>.<key>`` with the closest known names."""
    known = method_keywords(config_class, method)
    for key in kwargs:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{where}.{key}: not a parameter of {config_class.__name__}.{method}(){hint}")


_PLUGINS: dict[str, AlgorithmPlugin] = {}


def load_plugin(algo: Mapping[str, Any]) -> AlgorithmPlugin:
    """The plugin named by the ``algo`` group's ``_target_`` (``package.module.Class``), instantiated
    once per class. Raises one ``ConfigError`` naming ``algo._target_`` when it cannot be used."""
    target = algo.get("_target_")
    if not target:
        raise ConfigError(f"algo._target_: missing for algo={algo.get('name')}; name the algorithm's plugin class, "
                          f"e.g. _target_: recsys_exp.algorithms.plugins.SlateQ")
    if target not in _PLUGINS:
        module, _, cls = target.replace(":", ".").rpartition(".")
        try:
            klass = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigError(f"algo._target_={target}: cannot import it ({type(e).__name__}: {e}); the package "
                              f"must be importable (installed, or on PYTHONPATH)") from None
        if not (isinstance(klass, type) and issubclass(klass, AlgorithmPlugin)):
            raise ConfigError(f"algo._target_={target}: is not a subclass of "
                              f"recsys_exp.algorithms.plugin.AlgorithmPlugin")
        _PLUGINS[target] = klass()
    return _PLUGINS[target]
