"""Where the user, the candidates and the last clicks sit in RLlib's flattened slate observation.

Slate algorithms read the env's ``Dict(doc, response, user)`` observation after RLlib's
``FlattenObservations`` connector (one float vector per step, also what the replay buffer and
the logged data hold). That connector walks the Dict in sorted-key order, flattens Boxes
row-major and one-hot encodes Discrete / MultiDiscrete leaves, so the flat vector is

    [doc (N·D) | response.click (K one-hot pairs) | other response fields | user (U)]

``response.click`` of step t+1's observation says which slot of the slate shown at step t was
clicked. :func:`slate_layout` computes the offsets from the env's observation space without
importing RLlib; the modules receive them through ``model_config["slate_layout"]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def _flat_size(space: gym.Space) -> int:
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Dict):
        return sum(_flat_size(s) for s in space.spaces.values())
    raise TypeError(f"cannot flatten observation space {space}")


def slate_layout(space: gym.spaces.Dict) -> dict[str, Any]:
    """Offsets of ``user``, ``doc`` and ``response.click`` in the flattened observation.

    Returns ``{"obs_dim", "user": [start, U], "doc": [start, N, D], "click": [start, K]}``; the
    click block holds K one-hot pairs, so slot k was clicked iff ``obs[start + 2k + 1] == 1``.
    Raises ``ValueError`` naming what is missing when the space is not a slate observation.
    """
    if not isinstance(space, gym.spaces.Dict):
        raise ValueError(f"a slate observation is a Dict(user, doc, response), got {space}")
    missing = [k for k in ("user", "doc", "response") if k not in space.spaces]
    if missing:
        raise ValueError(f"the observation has no {', '.join(missing)} (keys: {', '.join(space.spaces)})")
    doc, user, response = space["doc"], space["user"], space["response"]
    if not (isinstance(doc, gym.spaces.Box) and len(doc.shape) == 2):
        raise ValueError(f"observation 'doc' must be a Box of shape (N, D), got {doc}")
    if not (isinstance(user, gym.spaces.Box) and len(user.shape) == 1):
        raise ValueError(f"observation 'user' must be a Box of shape (U,), got {user}")
    if not (isinstance(response, gym.spaces.Dict) and isinstance(response.spaces.get("click"),
                                                                  gym.spaces.MultiDiscrete)):
        raise ValueError("observation 'response' must be a Dict with a per-slot MultiDiscrete 'click'")
    layout: dict[str, Any] = {}
    offset = 0
    for key in sorted(space.spaces):  # FlattenObservations walks the Dict in sorted-key order
        sub = space[key]
        if key == "doc":
            layout["doc"] = [offset, int(doc.shape[0]), int(doc.shape[1])]
        elif key == "user":
            layout["user"] = [offset, int(user.shape[0])]
        elif key == "response":
            inner = offset
            for rkey in sorted(sub.spaces):
                if rkey == "click":
                    layout["click"] = [inner, len(sub["click"].nvec)]
                inner += _flat_size(sub[rkey])
        offset += _flat_size(sub)
    layout["obs_dim"] = offset
    return layout


def flatten_observations(space: gym.Space, obs: Any) -> np.ndarray:
    """A batch of observations (leading batch axis on every leaf) -> (B, flat_dim) float32, exactly
    like RLlib's ``FlattenObservations`` connector: its own ``flatten_inputs_to_1d_tensor`` over the
    space's structure (Dict keys sorted, Boxes flattened row-major, Discrete / MultiDiscrete leaves
    one-hot). Works for Dict slate observations and for plain Box / Discrete gym observations."""
    from ray.rllib.utils.numpy import flatten_inputs_to_1d_tensor
    from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

    flat = flatten_inputs_to_1d_tensor(obs, spaces_struct=get_base_struct_from_space(space), batch_axis=True)
    return np.asarray(flat, dtype=np.float32)
