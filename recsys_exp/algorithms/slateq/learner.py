"""SlateQ's learner: Q-learning of item values through the slate decomposition, plus the choice model.

For a replayed step (s, A, r, s') where the user clicked slot k (item a_k) or nothing (⊥):

    y = r_t + … + γⁿ⁻¹r_{t+n−1} + γⁿ·(1 − terminated)·max_{A'} Σ_{i ∈ A' ∪ {⊥}} P(i | s', A')·Q̄_target(s', i)
    L_Q = ℓ(Q̄(s, a_k or ⊥) − y)        (ℓ = MSE or Huber, weighted by PER importance weights)

With ``targets=monte_carlo`` the replay buffer sums the rewards to the end of the stored session
(n = its remaining steps; nothing to bootstrap once the session has ended: :mod:`.replay`), and
the regressed value is Q̄(s, a_k or ⊥) + h(t[, r̄_t]), with the module's session baseline h of the step
index t (and of the session's mean reward before t; bootstrapped values at T get h(T[, r̄_T]) too); h is
common to all outcomes of a step, so it cannot change which slate is best.
Only the consumed item's value (or the no-click value) is regressed, as in the paper's
SlateQ-QL update (Ie et al. 2019, Eq. 7). The max over A' uses the slate optimiser under the
current choice model; with ``double_q`` the online network picks A' and the target network
values it. The choice model is fitted by cross-entropy to the observed outcome over the K slots
and no-click: L_choice = −log P(outcome | s, A). Each loss has its own optimizer (``lr``,
``choice_lr``); the target network is synced by RLlib's ``DQNLearner`` every
``target_network_update_freq`` env steps.
"""

from __future__ import annotations

import torch
from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.utils.metrics import TD_ERROR_KEY

from recsys_exp.algorithms.slateq.replay import NEXT_OBS_1, PAST_REWARD, PAST_REWARD_END, SESSION_STEP
from recsys_exp.algorithms.slateq.slate_value import choice_probabilities, slate_values


class SlateQLearner(DQNTorchLearner):
    """DQN's replay/target-network machinery with SlateQ's loss."""

    def configure_optimizers_for_module(self, module_id, config=None):
        module = self._module[module_id]
        q_params = self.get_parameters(module.q_net)
        if hasattr(module, "session_baseline"):
            q_params = q_params + self.get_parameters(module.session_baseline)
        self.register_optimizer(module_id=module_id, optimizer_name="q", optimizer=torch.optim.Adam(q_params),
                                params=q_params, lr_or_lr_schedule=config.lr)
        self.register_optimizer(module_id=module_id, optimizer_name="choice",
                                optimizer=torch.optim.Adam(module.choice.parameters()),
                                params=self.get_parameters(module.choice), lr_or_lr_schedule=config.choice_lr)

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        m = self.module[module_id].unwrapped()
        # Refresh the input statistics for the next forward passes (this one already ran).
        m.update_feature_statistics(batch[Columns.OBS])
        next_obs = batch[Columns.NEXT_OBS]  # o_{t+n}: bootstrap from here
        if NEXT_OBS_1 in batch:
            response_obs = batch[NEXT_OBS_1]  # o_{t+1} (SlateQ's replay buffers add it)
        elif config.n_step == 1:
            response_obs = next_obs
        else:
            raise ValueError(f"SlateQ with n_step={config.n_step} needs one of the replay buffers of "
                             "recsys_exp.algorithms.slateq.replay (o_{t+n} does not say what step t's user clicked)")
        slates = m.slates_from_actions(batch[Columns.ACTIONS])  # (B, K)
        clicks = m.clicks(response_obs)  # (B, K): the response to this step's slate
        clicked = clicks.sum(-1) > 0
        slot = torch.where(clicked, clicks.argmax(-1), torch.full_like(clicked, m.slate_size, dtype=torch.long))

        # Q̄ of the consumed item (or of no click).
        q_items, q_null = fwd_out["q_items"], fwd_out["q_null"]
        item = slates.gather(1, slot.clamp_max(m.slate_size - 1)[:, None])[:, 0]
        q_taken = torch.where(clicked, q_items.gather(1, item[:, None])[:, 0], q_null)
        session_step = batch.get(SESSION_STEP) if hasattr(m, "session_baseline") else None
        if session_step is not None:
            # Monte Carlo rows: regress Q̄ + h on the return to go (module docstring); the value
            # scale then follows the batch's returns (from the bootstrap below and the next forward pass).
            if m.baseline_inputs == "step_and_past_reward":
                m.update_past_reward_statistics(batch[PAST_REWARD])
            baseline = m.baseline(session_step, batch.get(PAST_REWARD))
            q_taken = q_taken + baseline
            m.update_return_statistics(batch[Columns.REWARDS])
            self.metrics.log_value((module_id, "session_baseline_mean"), baseline.mean().item(), window=50)

        with torch.no_grad():
            target_q, target_q_null = m.item_values(next_obs, m._target_q_net)
            if config.double_q:
                next_slate, online_value = m.best_slate(next_obs)
                logits, null_logit = m.choice_logits(next_obs)
                next_value = slate_values(target_q, target_q_null, logits, null_logit, m.choice.position_bias,
                                          next_slate[:, None, :])[:, 0]
                if config.clipped_double_q:  # the smaller of the two estimates of the chosen slate (Fujimoto 2018)
                    next_value = torch.minimum(next_value, online_value)
            else:
                _, next_value = m.best_slate(next_obs, m._target_q_net)
            n_step = batch.get("n_step", torch.ones_like(next_value))
            discount = config.gamma ** n_step.float()
            done = batch[Columns.TERMINATEDS].float()
            if session_step is not None:
                # a running session's rest, at T
                next_value = next_value + m.baseline(session_step + n_step, batch.get(PAST_REWARD_END))
            target = batch[Columns.REWARDS].float() + discount * (1.0 - done) * next_value

        td_error = q_taken - target
        weights = batch.get("weights", torch.ones_like(td_error))
        if config.td_error_loss_fn == "huber":
            per_row = torch.nn.functional.huber_loss(q_taken, target, reduction="none")
        else:
            per_row = td_error.pow(2)
        q_loss = (weights * per_row).mean()

        # Choice model: cross-entropy of the observed outcome over the K slots + no click.
        logits, null_logit = fwd_out["choice_logits"], fwd_out["null_logit"]
        probs = choice_probabilities(logits, null_logit, m.choice.position_bias, slates[:, None, :])[:, 0]
        choice_loss = -probs.gather(1, slot[:, None]).clamp_min(1e-8).log().mean()

        self.metrics.log_value((module_id, "q_loss"), q_loss.item(), window=50)
        self.metrics.log_value((module_id, "choice_loss"), choice_loss.item(), window=50)
        self.metrics.log_value((module_id, "q_taken_mean"), q_taken.mean().item(), window=50)
        self.metrics.log_value((module_id, TD_ERROR_KEY), td_error.detach().abs(), reduce="item_series")
        return q_loss + choice_loss
