"""Greedy evaluation episodes: the TRUE task return (logged only), and a video of the first."""
from __future__ import annotations

import jax
import numpy as np

from viper_jax.agent import env_actions


def run_episode(agent, state, policy_fn, env, key) -> tuple[float, np.ndarray]:
  """One greedy episode -> (true return, frames uint8 [T + 1, H, W, 3] with the reset frame)."""
  obs, _ = env.reset()
  frames, total, carry, first, done = [obs], 0.0, agent.initial_carry(1), True, False
  while not done:
    key, sub = jax.random.split(key)
    action, carry = policy_fn(state, carry, {'image': obs[None], 'is_first': np.array([first])},
                              sub, np.bool_(True))
    obs, reward, terminated, truncated, _ = env.step(
        env_actions.to_env_action(np.asarray(action)[0], env.action_space, agent.discrete))
    frames.append(obs)
    total, first, done = total + float(reward), False, terminated or truncated
  return total, np.stack(frames)


def evaluate(agent, state, policy_fn, env, episodes: int, key, likelihood_fn=None):
  """Runs greedy episodes; returns (metrics with the true return, (frames, true return) of
  episode 0).

  With `likelihood_fn` the VIPER return of each episode is logged beside it (eval/viper_return).
  """
  returns, lengths, viper_returns, video = [], [], [], None
  for episode in range(episodes):
    key, sub = jax.random.split(key)
    total, frames = run_episode(agent, state, policy_fn, env, sub)
    returns.append(total)
    lengths.append(len(frames))
    if likelihood_fn is not None:
      viper_returns.append(float(np.sum(likelihood_fn(frames[None])[0])))
    if episode == 0:
      video = frames
  metrics = {'eval/return': np.mean(returns), 'eval/length': np.mean(lengths)}
  if viper_returns:
    metrics['eval/viper_return'] = np.mean(viper_returns)
  return metrics, (video, returns[0])
