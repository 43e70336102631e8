"""Atari 2600 games (ALE v5 protocol) as Gymnasium environments with 64x64 pixel observations.

Observations are uint8 [H, W, 3]: the 210x160 screen box-filtered down to `size`, with the score,
lives and timer displays zeroed (see `score_masks`). Actions are discrete (the game's minimal
action set unless `full_action_space`). `info['ram']` holds the console's 128-byte RAM, which
scripted experts read; the video model and the agent only ever see pixels.

Defaults follow Machado et al. (2018) as in DreamerV3/VIPER: frameskip 4, sticky actions with
probability 0.25, episodes capped at 108k emulator frames.
"""
from __future__ import annotations

import functools

import gymnasium
import numpy as np

from viper_jax.envs import score_masks
from viper_jax.envs.pixel_env import PixelEnv

# Episodes are capped at 108k emulator frames (30 minutes of play); with frameskip 4 that is
# 27000 agent steps.
ATARI_EPISODE_FRAMES = 108_000


@functools.lru_cache(maxsize=1)
def _ale_games() -> tuple[str, ...]:
  import ale_py
  gymnasium.register_envs(ale_py)
  # ale-py ships a few multi-player-only ROMs (combat, joust, ...) that it cannot run as single-
  # player games; its v5 registrations list exactly the playable ones.
  games = {spec.kwargs['game'] for env_id, spec in gymnasium.registry.items()
           if env_id.startswith('ALE/') and env_id.endswith('-v5')
           and spec.kwargs.get('obs_type', 'rgb') == 'rgb'}
  return tuple(sorted(games))


def atari_game_names() -> list[str]:
  """All 'atari:<game>' names (snake_case, e.g. 'atari:ms_pacman') that ale-py can run."""
  return [f'atari:{game}' for game in _ale_games()]


class AtariEnv(PixelEnv):
  """One Atari game. See module docstring for the observation/action conventions."""

  metadata = {'render_modes': ['rgb_array'], 'render_fps': 15}

  def __init__(self, game: str, *, size=(64, 64), action_repeat: int = 4,
               time_limit: int | None = None, seed: int | None = None,
               sticky_action_prob: float = 0.25, mask_score: bool = True,
               full_action_space: bool = False):
    from ale_py.env import AtariEnv as ALEEnv
    if game.startswith('atari:'):
      game = game.split(':', 1)[1]
    if game not in _ale_games():
      raise ValueError(f'Unknown Atari game {game!r}. Valid games: {", ".join(_ale_games())}')
    if not 0.0 <= sticky_action_prob <= 1.0:
      raise ValueError(f'sticky_action_prob must be in [0, 1], got {sticky_action_prob}')
    self.game = game
    self.name = f'atari:{game}'
    self._init_pixels(size, action_repeat, seed)
    self.mask_score = bool(mask_score)
    # We own the episode limit (in agent steps), so ALE's own frame cap stays off.
    self._env = ALEEnv(game=game, obs_type='rgb', frameskip=self._action_repeat,
                       repeat_action_probability=float(sticky_action_prob),
                       full_action_space=full_action_space, max_num_frames_per_episode=None)
    if time_limit is None:
      time_limit = -(-ATARI_EPISODE_FRAMES // self._action_repeat)
    self.time_limit = int(time_limit)
    native = self._env.ale.getScreenDims()
    self._native_size = (int(native[0]), int(native[1]))
    self._keep = (score_masks.score_mask(game, self._size)[:, :, None] if self.mask_score
                  else None)
    self.action_space = gymnasium.spaces.Discrete(self._env.action_space.n)

  @property
  def ale(self):
    """The ALEInterface (for scripted experts and tests; not part of the observation)."""
    return self._env.ale

  def get_action_meanings(self) -> list[str]:
    """Names of the discrete actions, e.g. ['NOOP', 'FIRE', 'RIGHT', ...] for Pong."""
    return self._env.get_action_meanings()

  def _observe(self) -> np.ndarray:
    screen = self._env.ale.getScreenRGB()
    if self._size != self._native_size:
      from PIL import Image
      # Box filter = area average: thin objects (Pong's ball, bullets) fade instead of vanishing.
      image = Image.fromarray(screen).resize(self._size[::-1], Image.Resampling.BOX)
      screen = np.asarray(image)
    if self._keep is not None:
      screen = screen * self._keep
    self._frame = np.ascontiguousarray(screen, dtype=np.uint8)
    return self._frame

  def _info(self) -> dict:
    return {'ram': np.array(self._env.ale.getRAM(), dtype=np.uint8, copy=True),
            'lives': int(self._env.ale.lives())}

  def reset(self, *, seed: int | None = None, options: dict | None = None):
    # A new simulator seed re-seeds ALE's generator (sticky actions) and reloads the ROM.
    self._env.reset(seed=self._simulator_seed(seed))
    return self._observe(), self._info()

  def step(self, action):
    action_array = np.asarray(action)
    if action_array.size != 1 or not np.issubdtype(action_array.dtype, np.integer):
      raise ValueError(f'{self.name}: action must be one integer, got {action!r}')
    action = int(action_array.reshape(()))
    if not 0 <= action < self.action_space.n:
      raise ValueError(f'{self.name}: action must be in [0, {self.action_space.n}), got {action}')
    # One call repeats the action `action_repeat` frames (sticky actions apply per frame).
    _, reward, terminated, ale_truncated, _ = self._env.step(action)
    self._steps += 1
    truncated = not terminated and (ale_truncated or self._steps >= self.time_limit)
    return self._observe(), float(reward), bool(terminated), bool(truncated), self._info()
