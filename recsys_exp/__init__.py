"""recsys_exp: reinforcement-learning recommender experiments on RecSim, RLlib, Tune and Hydra."""

__version__ = "0.1.0"
