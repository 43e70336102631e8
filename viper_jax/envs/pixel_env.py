"""What every pixel environment here shares: the observation space, the last rendered frame, the
action repeat, and how `reset(seed=)` seeds the underlying simulator."""
from __future__ import annotations

import gymnasium
import numpy as np


class PixelEnv(gymnasium.Env):
  """Base of DMCEnv and AtariEnv. Subclasses call `_init_pixels` and, in reset, `_simulator_seed`.

  Observations are uint8 [H, W, 3]; `render()` returns the last one.
  """

  render_mode = 'rgb_array'

  def _init_pixels(self, size, action_repeat: int, seed: int | None) -> None:
    if action_repeat < 1:
      raise ValueError(f'action_repeat must be >= 1, got {action_repeat}')
    self._size = tuple(int(s) for s in size)
    self._action_repeat = int(action_repeat)
    self.observation_space = gymnasium.spaces.Box(0, 255, self._size + (3,), np.uint8)
    self._frame = None
    self._steps = 0
    self._needs_seed = True
    self._initial_seed = seed

  @property
  def action_repeat(self) -> int:
    return self._action_repeat

  def _simulator_seed(self, seed: int | None) -> int | None:
    """Runs gymnasium's reset seeding; returns a seed for the simulator, or None to continue it.

    The first reset uses the constructor's seed; reset(seed=s) always derives the same simulator
    seed from s, so it replays identically; later unseeded resets continue the simulator's own
    generator (None).
    """
    if seed is None and self._needs_seed:
      seed = self._initial_seed
    gymnasium.Env.reset(self, seed=seed)
    self._steps = 0
    if seed is None and not self._needs_seed:
      return None
    self._needs_seed = False
    return int(self.np_random.integers(2**31 - 1))

  def render(self):
    return self._frame

  def close(self):
    self._env.close()
