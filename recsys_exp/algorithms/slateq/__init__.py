"""SlateQ (Ie et al., IJCAI 2019) on RLlib's new API stack: ``SlateQConfig``, ``SlateQ``."""

from recsys_exp.algorithms.slateq.slateq import SlateQ, SlateQConfig

__all__ = ["SlateQ", "SlateQConfig"]
