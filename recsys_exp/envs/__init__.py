"""Google RecSim's three slate environments, re-implemented batched in numpy, simulators
assembled from parts (``make_env("custom", documents=..., users=..., ...)``, see
:mod:`recsys_exp.envs.custom`) and any gymnasium env (:mod:`recsys_exp.envs.gym_env`).

>>> from recsys_exp.envs import make_env, make_vector_env
>>> env = make_env("interest_evolution", num_candidates=10, slate_size=2, seed=0)
>>> venv = make_vector_env("interest_evolution", num_envs=1024, num_candidates=10, slate_size=2, seed=0)
"""

from recsys_exp.envs.bandit import BanditObservation, bandit_feature_dim, bandit_features
from recsys_exp.envs.registry import ENV_NAMES, env_param_names, make_env, make_vector_env
from recsys_exp.envs.rllib import register_envs, rllib_env_name

__all__ = [
    "ENV_NAMES",
    "BanditObservation",
    "bandit_feature_dim",
    "bandit_features",
    "env_param_names",
    "make_env",
    "make_vector_env",
    "register_envs",
    "rllib_env_name",
]
