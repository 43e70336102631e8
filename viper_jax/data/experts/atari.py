"""Scripted Atari experts that read the console RAM (`info['ram']`, uint8 [128]) of `AtariEnv`.

They exist to record expert videos for the video model; they never see pixels. Each follows the
policy protocol of `viper_jax.data.policies`: `reset(seed)`, then `__call__(obs, info) -> int`.
"""
from __future__ import annotations

import numpy as np

# --- Pong RAM layout, found by correlating RAM bytes with object positions in rendered frames
# (ball: the white pixels of the play area; paddle: the green pixels in columns 140-143).
#   49: ball x. The ball's screen columns are ram[49] - 49 .. ram[49] - 48.
#   54: ball y. Its screen rows are ram[54] - 14 .. ram[54] - 11. 0 while no ball is in play;
#       in play it spans 44 (top wall) .. 206 (bottom wall).
#   51: player (right, green) paddle y. Its 16 screen rows start at about ram[51] - 13.5;
#       range 38 .. 203.
#   60: the same paddle y one frame ahead of 51 (51 is its copy); the fresher reading, used here.
#   21 / 50: computer paddle y. 13 / 14: computer / player score.
_BALL_X, _BALL_Y, _PADDLE_Y = 49, 54, 60
# ram[49] when the ball reaches the player's paddle face (paddle at columns 140-143).
_PADDLE_FACE_X = 188
_BALL_Y_MIN, _BALL_Y_MAX = 44, 206
# ram[54] - ram[51] at contact lies in about [-11, 24] for returned balls (measured over ~600
# returns); aiming the paddle at ball_y - 7 centres the ball on it.
_BALL_TO_PADDLE = 7
_PADDLE_REST = 120  # Mid-court, where to wait while no ball is in play.


def _action_index(env, name: str, default: int) -> int:
  meanings = getattr(getattr(env, 'unwrapped', env), 'get_action_meanings', None)
  if meanings is None:
    return default
  return list(meanings()).index(name)


class PongExpert:
  """Returns the ball by moving the paddle to where the ball will cross the paddle's column.

  The ball's path is extrapolated from its last two positions with wall bounces. The paddle does
  not follow the joystick directly: each frame of UP/DOWN moves a hidden set-point ~5.5 units,
  and the drawn paddle closes half its gap to it every 2 frames. So control acts on the paddle
  position led by its velocity (`lead`), with a dead zone about half the set-point's travel in one
  agent step (4 frames x 5.5) so that it settles instead of oscillating. Tuned for frameskip 4
  with sticky actions 0.25: full episodes end +13 to +19 (random: about -20), but rallies are
  long, so some episodes hit the 27000-step limit before either side reaches 21.
  """

  def __init__(self, env, *, lead: float = 0.5, dead_zone: float = 10.0):
    self.lead = float(lead)
    self.dead_zone = float(dead_zone)
    # In Pong's minimal action set RIGHT moves the paddle up and LEFT down.
    self._noop = _action_index(env, 'NOOP', 0)
    self._up = _action_index(env, 'RIGHT', 2)
    self._down = _action_index(env, 'LEFT', 3)
    self.reset(0)

  def reset(self, seed: int) -> None:
    del seed  # Deterministic.
    self._prev_ball = None
    self._prev_paddle = None

  def _target(self, ram: np.ndarray) -> float:
    """Paddle y (RAM units) to aim for."""
    x, y = int(ram[_BALL_X]), int(ram[_BALL_Y])
    if y == 0:
      self._prev_ball = None
      return _PADDLE_REST
    prev, self._prev_ball = self._prev_ball, (x, y)
    if prev is None:
      return y - _BALL_TO_PADDLE
    vx, vy = x - prev[0], y - prev[1]
    if vx <= 0:
      # Ball going away: drift toward the middle, staying on the ball's side.
      return 0.5 * (y - _BALL_TO_PADDLE + _PADDLE_REST)
    y_hit = y + vy * max(_PADDLE_FACE_X - x, 0) / vx
    # Unfold the wall bounces: reflect into [min, max].
    span = _BALL_Y_MAX - _BALL_Y_MIN
    z = (y_hit - _BALL_Y_MIN) % (2 * span)
    y_hit = _BALL_Y_MIN + (z if z <= span else 2 * span - z)
    return y_hit - _BALL_TO_PADDLE

  def __call__(self, obs, info) -> int:
    ram = np.asarray(info['ram'])
    paddle = int(ram[_PADDLE_Y])
    velocity = 0 if self._prev_paddle is None else paddle - self._prev_paddle
    self._prev_paddle = paddle
    error = self._target(ram) - (paddle + self.lead * velocity)
    if error > self.dead_zone:
      return self._down
    if error < -self.dead_zone:
      return self._up
    return self._noop


class FreewayExpert:
  """Always walks the chicken up. Cars knock it back but never kill it, so this scores ~21 a
  game against ~0 for random play; it ignores traffic, so it is a weak expert."""

  def __init__(self, env):
    self._up = _action_index(env, 'UP', 1)

  def reset(self, seed: int) -> None:
    del seed

  def __call__(self, obs, info) -> int:
    return self._up


ATARI_EXPERTS = {'atari:pong': PongExpert, 'atari:freeway': FreewayExpert}
