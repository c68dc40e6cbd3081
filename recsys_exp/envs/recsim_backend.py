"""The original recsim 0.2.4 environments behind the native envs' gymnasium API (``backend="recsim"``).

:class:`RecSimReferenceEnv` builds Google's own simulator the way RLlib's RecSim wrapper did
(recsim.md §2–§5) and drives the raw ``recsim.simulator.recsim_gym.RecSimGymEnv`` directly
(old gym API: ``reset() -> obs``, ``step() -> (obs, reward, done, info)``). Its observation and
action spaces are *built from the native simulator* (:func:`recsys_exp.envs.core.single_spaces`),
so the two backends cannot drift apart:

* ``user`` float32 (U,), ``doc`` float32 (N, D) in action-index order (IEv: cluster one-hot;
  LTS: clickbait score; IExp: topic one-hot then quality);
* ``response``: per-slot arrays (K,) with the native keys and dtypes (LTS engagement clipped
  to [0, 100], as the original's observation; the reward stays unclipped); zeros at reset.

It exists for fidelity tests and benchmarks, not for training: it is one Python object per user.

Seeding. ``seed`` seeds every stream, as in the native env:

* the document and user samplers get ``RandomState(seed)`` (both the same seed, as RLlib did;
  for LTS too, although RLlib's creator ignored the seed and always used 0);
* the original draws its choice and transition noise from the **process-global** ``np.random``
  (recsim.md §7.1), which no constructor argument reaches. ``reset(seed=s)`` — and only a
  seeded reset — calls ``np.random.seed(global_noise_seed(s))`` (a ``SeedSequence`` derived
  from ``s``, so that the noise is not the samplers' MT19937 sequence), after rebuilding the
  original with its samplers seeded ``s``; ``reset()`` continues every stream. Constructing an
  env never touches the global state. Consequences (as in the original and in RLlib): every
  reference env of a process shares one noise stream (in a ``SyncVectorEnv`` reset with a
  seed, the last sub-env's seed wins), and other code using ``np.random`` changes the draws.
  Swapping a private ``RandomState`` in and out of ``np.random`` around every call was
  measured at ≈130 µs per step (``get_state``/``set_state`` copy the 2.5 KB MT state), a
  1.3–4.6× slowdown of the original (N=10–50), so it is not done.
  Hence ``make_env(..., backend="recsim", seed=s).reset(seed=s)`` is reproducible;
  ``seed`` at construction alone fixes the users and documents but not the noise.

Model constants: the env's parameters (``settings.params``) are passed into the original
wherever its constructors allow it (IEv: budget, step penalty, no-click mass, min normalizer,
quality factors, update alpha and intercepts, video length, cluster means; LTS: every
``LTSStaticUserSampler`` constant; IExp: every sampler constant and the no-click mass). A
non-default constant the original hard-codes (IEv ``quality_stddev``) raises ``ValueError``.

Install: ``pip install --no-deps recsim==0.2.4 && pip install 'recsys_exp[recsim]'``. Importing
recsim needs neither TensorFlow nor Dopamine thanks to a small import shim (recsim.md §6.3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import io
import sys
import types
from typing import Any

import gymnasium as gym
import numpy as np

from recsys_exp.envs.core import check_slate, single_spaces
from recsys_exp.envs.interest_evolution import InterestEvolutionParams
from recsys_exp.envs.interest_exploration import NUM_TOPICS, InterestExplorationParams
from recsys_exp.envs.long_term_satisfaction import LongTermSatisfactionParams
from recsys_exp.envs.settings import ENVS, EnvSettings

INSTALL_HINT = "pip install --no-deps recsim==0.2.4 && pip install 'recsys_exp[recsim]'"

__all__ = ["INSTALL_HINT", "RecSimReferenceEnv", "global_noise_seed", "make_original_env", "make_reference_vector_env"]


# ---------------------------------------------------------------------------------------
# Importing the original without TensorFlow / Dopamine (recsim.md §6.3)
# ---------------------------------------------------------------------------------------
def _stub_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__doc__ = "Empty stand-in registered by recsys_exp.envs.recsim_backend (no TensorFlow)."
    sys.modules[name] = module
    return module


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _import_quietly(name: str) -> types.ModuleType:
    """Import ``name`` with stderr captured: gym 0.26.2 prints a NumPy-2 banner on import."""
    with contextlib.redirect_stderr(io.StringIO()):
        return importlib.import_module(name)


def _shim_gin_tf() -> None:
    """Make ``import gin.tf`` work: the real one if TensorFlow supports it, else an empty stub.

    The environment modules only use the plain ``gin.configurable`` decorator; ``gin.tf``
    imports TensorFlow and (gin-config 0.5.0) a ``tf.estimator`` class removed in TF 2.16.
    """
    import gin

    if "gin.tf" in sys.modules:
        return
    if _has_module("tensorflow"):
        try:
            _import_quietly("gin.tf")
            return
        except Exception:  # e.g. AttributeError: tensorflow has no attribute 'estimator'
            for name in [m for m in sys.modules if m == "gin.tf" or m.startswith("gin.tf.")]:
                del sys.modules[name]
    gin.tf = _stub_module("gin.tf")


def _shim_runner_lib() -> None:
    """``recsim.simulator.__init__`` imports ``runner_lib`` (Dopamine + TF 1 training loop), which
    the environments never use: register an empty module unless Dopamine and TF are installed."""
    name = "recsim.simulator.runner_lib"
    if name in sys.modules:
        return
    if _has_module("dopamine") and _has_module("tensorflow"):
        return  # the real module will import (slowly) with the package
    _stub_module(name)


def _import_recsim() -> types.SimpleNamespace:
    if not _has_module("recsim"):
        raise ModuleNotFoundError(f"backend='recsim' needs the original recsim 0.2.4, which is not installed: "
                                  f"{INSTALL_HINT}", name="recsim")
    try:
        if "gym" not in sys.modules:
            _import_quietly("gym")
        _shim_gin_tf()
        _shim_runner_lib()
        from recsim import choice_model, user
        from recsim.environments import interest_evolution, interest_exploration, long_term_satisfaction
        from recsim.simulator import environment, recsim_gym
    except ImportError as exc:
        raise ImportError(f"backend='recsim' could not import recsim 0.2.4 ({exc}); install it with: "
                          f"{INSTALL_HINT}") from exc
    return types.SimpleNamespace(choice_model=choice_model, user=user, environment=environment,
                                 recsim_gym=recsim_gym, iev=interest_evolution, iex=interest_exploration,
                                 lts=long_term_satisfaction)


_rs = _import_recsim()


# ---------------------------------------------------------------------------------------
# Building the original environments (recsim.md §2–§5), with the native constants
# ---------------------------------------------------------------------------------------
def _changed(params: Any, defaults: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields among ``names`` whose value differs from the native default."""
    return {n: getattr(params, n) for n in names if getattr(params, n) != getattr(defaults, n)}


def _build_interest_evolution(s: EnvSettings, seed: int | None):
    iev = _rs.iev
    p: InterestEvolutionParams = s.params
    d = InterestEvolutionParams()
    if p.quality_stddev != d.quality_stddev:
        raise ValueError(f"interest_evolution: quality_stddev={p.quality_stddev} cannot be passed to the "
                         f"original recsim (UtilityModelVideoSampler hard-codes 0.1); use backend='native'")
    num_clusters = len(p.cluster_means)
    # Constants UtilityModelUserSampler hard-codes (or receives but IEvUserModel does not pass on):
    # they go in through the user-state constructor, which receives every user feature.
    overrides = _changed(p, d, ("time_budget", "step_penalty", "min_normalizer", "user_quality_factor",
                                "document_quality_factor", "user_update_alpha"))
    doc_ctor, state_ctor = iev.IEvVideo, iev.IEvUserState
    if num_clusters != iev.IEvVideo.NUM_FEATURES:
        doc_ctor = type("IEvVideo", (iev.IEvVideo,), {"NUM_FEATURES": num_clusters})
    if overrides or num_clusters != iev.IEvUserState.NUM_FEATURES:
        state_ctor = _iev_user_state_ctor(overrides, num_clusters)
    user_model = iev.IEvUserModel(
        s.slate_size,
        choice_model_ctor=_rs.choice_model.MultinomialProportionalChoiceModel,
        response_model_ctor=iev.IEvResponse,
        user_state_ctor=state_ctor,
        no_click_mass=p.no_click_mass,
        seed=seed,
        alpha_x_intercept=p.alpha_x_intercept,
        alpha_y_intercept=p.alpha_y_intercept)
    sampler = iev.UtilityModelVideoSampler(doc_ctor=doc_ctor, video_length=p.video_length, seed=seed)
    if tuple(p.cluster_means) != tuple(d.cluster_means):
        sampler.cluster_means = np.asarray(p.cluster_means, dtype=np.float64)
    raw = _rs.environment.Environment(user_model, sampler, s.num_candidates, s.slate_size,
                                      resample_documents=s.resample_documents)
    return _rs.recsim_gym.RecSimGymEnv(raw, iev.clicked_watchtime_reward)


def _iev_user_state_ctor(overrides: dict[str, Any], num_clusters: int):
    base = _rs.iev.IEvUserState

    class IEvUserState(base):  # the original state class, with some constructor arguments replaced
        NUM_FEATURES = num_clusters

        def __init__(self, user_interests, **features):
            features.update(overrides)
            super().__init__(user_interests, **features)

    return IEvUserState


def _build_long_term_satisfaction(s: EnvSettings, seed: int | None):
    lts = _rs.lts
    p: LongTermSatisfactionParams = s.params
    if p.observe_satisfaction:
        raise ValueError("long_term_satisfaction: observe_satisfaction=True is the 2022 tutorial's wrapper, not "
                         "part of the original recsim; use backend='native'")
    if p == LongTermSatisfactionParams():
        # RLlib's creator, except that the seed is passed (RLlib left the default 0).
        user_model = lts.LTSUserModel(s.slate_size, user_state_ctor=lts.LTSUserState,
                                      response_model_ctor=lts.LTSResponse, seed=seed)
    else:
        constants = {k: v for k, v in dataclasses.asdict(p).items() if k != "observe_satisfaction"}
        sampler = lts.LTSStaticUserSampler(user_ctor=lts.LTSUserState, seed=seed, **constants)
        user_model = _lts_user_model_class()(s.slate_size, sampler)
    sampler = lts.LTSDocumentSampler(seed=seed)
    raw = _rs.environment.Environment(user_model, sampler, s.num_candidates, s.slate_size,
                                      resample_documents=s.resample_documents)
    return _rs.recsim_gym.RecSimGymEnv(raw, lts.clicked_engagement_reward)


def _lts_user_model_class():
    lts = _rs.lts

    class LTSUserModel(lts.LTSUserModel):
        """The original user model around a user sampler built with non-default constants
        (``LTSUserModel.__init__`` builds ``LTSStaticUserSampler(user_ctor, seed)`` itself)."""

        def __init__(self, slate_size, user_sampler):
            _rs.user.AbstractUserModel.__init__(self, lts.LTSResponse, user_sampler, slate_size)

    return LTSUserModel


def _build_interest_exploration(s: EnvSettings, seed: int | None):
    iex = _rs.iex
    p: InterestExplorationParams = s.params
    d = InterestExplorationParams()
    if len(p.topic_probs) != NUM_TOPICS:
        raise ValueError(f"interest_exploration: the reference backend supports {NUM_TOPICS} topics, "
                         f"got topic_probs={p.topic_probs}")
    # RLlib's creators never set these class attributes (0 → Discrete(0) spaces, recsim.md §5.5).
    iex.IEDocument.NUM_CLUSTERS = iex.IEResponse.NUM_CLUSTERS = NUM_TOPICS
    sampler = iex.IETopicDocumentSampler(topic_distribution=p.topic_probs, topic_quality_mean=p.topic_quality_mean,
                                         topic_quality_stddev=p.topic_quality_stddev, doc_ctor=iex.IEDocument,
                                         seed=seed)
    if not _changed(p, d, ("user_type_probs", "affinity_mean", "affinity_stddev")):
        user_model = iex.IEUserModel(s.slate_size, no_click_mass=p.no_click_mass, user_state_ctor=iex.IEUserState,
                                     response_model_ctor=iex.IEResponse, seed=seed)
    else:
        user_sampler = iex.IEClusterUserSampler(
            user_type_distribution=p.user_type_probs, user_document_mean_affinity_matrix=p.affinity_mean,
            user_document_stddev_affinity_matrix=p.affinity_stddev, user_ctor=iex.IEUserState, seed=seed)
        user_model = _ie_user_model_class()(s.slate_size, user_sampler, p.no_click_mass)
    raw = _rs.environment.Environment(user_model, sampler, s.num_candidates, s.slate_size,
                                      resample_documents=s.resample_documents)
    return _rs.recsim_gym.RecSimGymEnv(raw, iex.total_clicks_reward)


def _ie_user_model_class():
    iex = _rs.iex

    class IEUserModel(iex.IEUserModel):
        """The original user model around a user sampler built with non-default constants."""

        def __init__(self, slate_size, user_sampler, no_click_mass):
            _rs.user.AbstractUserModel.__init__(self, iex.IEResponse, user_sampler, slate_size)
            self._user_state_ctor = iex.IEUserState
            self.choice_model = _rs.choice_model.MultinomialLogitChoiceModel({"no_click_mass": no_click_mass})

    return IEUserModel


_BUILDERS = {
    "interest_evolution": _build_interest_evolution,
    "long_term_satisfaction": _build_long_term_satisfaction,
    "interest_exploration": _build_interest_exploration,
}


def make_original_env(settings: EnvSettings, seed: int | None = None):
    """The raw original ``RecSimGymEnv`` (old gym API) for ``settings``, samplers seeded with ``seed``.

    Note: its choice/transition noise uses the caller's global ``np.random``.
    """
    return _BUILDERS[settings.name](settings, seed)


def _doc_features_array(values: list[Any], feature_dim: int) -> np.ndarray:
    """Observations of the candidates, in action-index order, as (N, D) float32."""
    if values and isinstance(values[0], dict):  # IExp: {'quality', 'cluster_id'} → [one-hot topic, quality]
        out = np.zeros((len(values), feature_dim), dtype=np.float32)
        for j, doc in enumerate(values):
            out[j, int(doc["cluster_id"])] = 1.0
            out[j, feature_dim - 1] = doc["quality"]
        return out
    return np.asarray(values, dtype=np.float32).reshape(len(values), feature_dim)


class RecSimReferenceEnv(gym.Env):
    """One original recsim environment as a ``gymnasium.Env`` with the native spaces (see module doc)."""

    metadata = {"render_modes": []}

    def __init__(self, settings: EnvSettings):
        if settings.name not in _BUILDERS:
            raise ValueError(f"unknown env {settings.name!r}; known envs: {', '.join(_BUILDERS)}")
        self.settings = settings
        self.name = settings.name
        self.num_candidates, self.slate_size = settings.num_candidates, settings.slate_size
        self.max_episode_steps = settings.max_episode_steps
        sim = ENVS[settings.name].build(settings.params)
        self.observation_space, self.action_space = single_spaces(sim, self.num_candidates, self.slate_size)
        self._feature_dim = sim.documents.feature_dim
        # (key, dtype, (low, high) for Box fields else None), in the native response order.
        self._response_fields = [
            (key, space.dtype, (float(space.low[0]), float(space.high[0])) if isinstance(space, gym.spaces.Box) else None)
            for key, space in self.observation_space["response"].spaces.items()]
        self._seed_streams(settings.seed)
        self._elapsed = 0
        self._done = True

    # -- streams ------------------------------------------------------------------------
    def _seed_streams(self, seed: int | None) -> None:
        """(Re)build the original env with both samplers seeded ``seed``."""
        self.raw_env = make_original_env(self.settings, seed)

    # -- gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Draw a new user (and candidates if resampling).

        ``seed`` re-seeds every stream: the original is rebuilt with its samplers seeded
        ``seed`` and the process-global ``np.random`` (the original's choice/transition noise)
        is seeded with :func:`global_noise_seed` ``(seed)``.
        """
        if seed is not None:
            self._seed_streams(seed)
            np.random.seed(global_noise_seed(seed))
        raw_obs = self.raw_env.reset()
        self._elapsed, self._done = 0, False
        return self._observation(raw_obs, ()), {}

    def step(self, action):
        """Serve one slate (K,); returns (obs, reward, terminated, truncated, info)."""
        if self._done:
            raise RuntimeError(f"{self.name}: the episode has ended (or never started); call reset()")
        slate = check_slate(self.name, action, (self.slate_size,), self.num_candidates)
        raw_obs, reward, done, _ = self.raw_env.step(slate.tolist())
        self._elapsed += 1
        term = bool(done)
        trunc = self.max_episode_steps is not None and self._elapsed >= self.max_episode_steps and not term
        self._done = term or trunc
        return self._observation(raw_obs, raw_obs["response"]), float(reward), term, trunc, {}

    def _observation(self, raw_obs: dict[str, Any], responses) -> dict[str, Any]:
        response = {}
        for key, dtype, bounds in self._response_fields:
            values = [r.get(key, 0) for r in responses]
            values += [0] * (self.slate_size - len(values))  # slots without a response
            if bounds is None:
                response[key] = np.array(values, dtype=dtype)
            else:  # e.g. LTS engagement is clipped at 100 (the original clips it too)
                low, high = bounds
                response[key] = np.array([min(max(float(v), low), high) for v in values], dtype=dtype)
        return {"user": np.array(raw_obs["user"], dtype=np.float32).reshape(-1),
                "doc": _doc_features_array(list(raw_obs["doc"].values()), self._feature_dim),
                "response": response}


def global_noise_seed(seed: int) -> np.ndarray:
    """The seed ``reset(seed=s)`` gives the global ``np.random``: derived from ``s`` through a
    ``SeedSequence`` so that it is not the same MT19937 sequence as the samplers' ``RandomState(s)``."""
    return np.random.SeedSequence([seed, 0x676C6F62]).generate_state(4)


def make_reference_vector_env(settings: EnvSettings, num_envs: int) -> gym.vector.VectorEnv:
    """``num_envs`` reference envs in a ``SyncVectorEnv`` (NEXT_STEP autoreset).

    Sub-env i's samplers are seeded ``seed + i`` (unseeded if ``seed`` is None). The choice and
    transition noise is the process-global ``np.random`` shared by all sub-envs; ``reset(seed=s)``
    re-seeds sub-env i with ``s + i``, so the global stream ends up seeded from ``s + num_envs − 1``.
    """

    def env_fn(i: int):
        seed = None if settings.seed is None else settings.seed + i
        sub = dataclasses.replace(settings, seed=seed)
        return lambda: RecSimReferenceEnv(sub)

    return gym.vector.SyncVectorEnv([env_fn(i) for i in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
