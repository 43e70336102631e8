"""Where Atari games draw their score, lives and timers, so observations can hide them.

A video model trained on expert play would otherwise learn that "the score goes up" is likely,
and reward the agent for frames whose digits look like an expert's, not for expert behaviour.

Rectangles are (top, left, bottom, right) as fractions of the frame's height / width, so one table
serves the native 210x160 ALE screen and any resized observation. They were placed by rendering
random-play frames of each game at 210x160 and measuring, row by row, which pixels ever differ
from the row's background (see `_px` for the native coordinates). Gauges that the player must
read to play (Seaquest oxygen, Assault heat, Zaxxon fuel, radar/scanners) are left visible.
"""
from __future__ import annotations

import functools

import numpy as np

# Native ALE screen size (rows, columns); every game in ale-py renders at this size.
_NATIVE_H, _NATIVE_W = 210, 160

Rect = tuple[float, float, float, float]


def _px(top: int, left: int, bottom: int, right: int) -> Rect:
  """A rectangle given in native pixels (bottom / right exclusive) as frame fractions."""
  return (top / _NATIVE_H, left / _NATIVE_W, bottom / _NATIVE_H, right / _NATIVE_W)


# Native-pixel extents measured from frames (rows / columns inclusive) are in the comments; the
# boxes stop short of the play area so that, rounded outward at 64x64, they still miss it.
SCORE_REGIONS: dict[str, tuple[Rect, ...]] = {
    # Both scores, rows 1-20 (two-digit scores widen them); the top wall starts at row 24.
    'pong': (_px(0, 0, 21, 160),),
    # Score, lives and player number, rows 5-14; grey wall from row 17.
    'breakout': (_px(0, 0, 15, 160),),
    # Both chickens' scores, rows 5-12, in the grey band above the black line at row 14.
    'freeway': (_px(0, 0, 13, 160),),
    # Scores rows 5-11 and the round clock rows 17-23; ring corner posts begin at row 25.
    'boxing': (_px(0, 0, 24, 160),),
    # Everything below the maze (ends row 171): lives 173-182, level fruit, score 187-193.
    'ms_pacman': (_px(172, 0, 210, 160),),
    # Score rows 9-16 (right-aligned at x=104) and reserve subs rows 22-29, all in the sky band
    # above the surface stripes (row 33 on). Oxygen bar and rescued divers stay visible.
    'seaquest': (_px(0, 0, 30, 160),),
    # Two 4-digit scores, rows 10-19, x 4-63 and 84-143. Only the digits: the mothership flies
    # through the same rows (the game hides the score while it is on screen).
    'space_invaders': (_px(10, 0, 20, 64), _px(10, 80, 20, 148)),
    # Score and lives, rows 5-14; asteroids wrap around below row 17.
    'asteroids': (_px(0, 0, 15, 160),),
    # Score rows 2-9 (mothership below row 17); reserve cannons rows 192-199, x 15-54, below the
    # ground line. The heat gauge (x >= 96) stays: overheating is part of play.
    'assault': (_px(0, 0, 10, 160), _px(189, 0, 210, 92)),
    # Score (and the opening copyright line) rows 188-197 in the dark band below the city.
    'atlantis': (_px(187, 0, 210, 160),),
    # HUD below the city (ends row 172): score box rows 176-184, ships and smart bombs 187-191.
    # The scanner at the top is a map of the play area and stays.
    'defender': (_px(175, 0, 210, 160),),
    # Black band under the bottom floor: lives rows 183-189, bonus timer 191-195, score 183-189.
    'kangaroo': (_px(182, 0, 210, 160),),
    # Score rows 10-17, x 52-96; lives digit rows 195-206, x 52-57 (the fuel arrows right of it
    # stay). Narrow in x: enemy planes enter along the screen sides at these rows.
    'zaxxon': (_px(0, 48, 19, 104), _px(194, 48, 207, 58)),
}


def has_score_region(game: str) -> bool:
  """Whether `SCORE_REGIONS` knows where `game` ('pong' or 'atari:pong') draws its score."""
  return _game_key(game) in SCORE_REGIONS


def _game_key(game: str) -> str:
  return game.split(':', 1)[1] if game.startswith('atari:') else game


@functools.lru_cache(maxsize=None)
def _cached_mask(game: str, height: int, width: int) -> np.ndarray:
  mask = np.ones((height, width), dtype=bool)
  # The epsilon keeps exact boundaries (e.g. 21/210 * 210) from rounding out by a whole pixel.
  eps = 1e-6
  for top, left, bottom, right in SCORE_REGIONS.get(game, ()):
    # Round outward: any output pixel the rectangle touches is masked, so that an area-filtered
    # resize can't leak a blend of digit pixels into a kept pixel.
    r0 = int(np.floor(top * height + eps))
    r1 = int(np.ceil(bottom * height - eps))
    c0 = int(np.floor(left * width + eps))
    c1 = int(np.ceil(right * width - eps))
    mask[r0:r1, c0:c1] = False
  mask.flags.writeable = False
  return mask


def score_mask(game: str, size: tuple[int, int]) -> np.ndarray:
  """Pixels to keep in frames of `game` at `size` = (height, width).

  Returns:
    bool [H, W]: True for kept pixels, False inside the score/lives/timer regions. All True for
    games without a known region (see `has_score_region`).
  """
  height, width = (int(s) for s in size)
  return _cached_mask(_game_key(game), height, width).copy()


def apply_score_mask(frames, game: str):
  """Zeroes the score regions of `game` in frames [..., H, W, C] (numpy or jax arrays).

  The mask is built with numpy and applied by multiplication, which numpy and jax arrays (jax
  tracers included) both understand, so jax is never imported here. Returns an array of the
  input's kind and dtype; frames of unknown games come back unchanged.
  """
  if not hasattr(frames, 'shape'):
    frames = np.asarray(frames)
  key = _game_key(game)
  if key not in SCORE_REGIONS:
    return frames
  if len(frames.shape) < 3:
    raise ValueError(f'Expected frames [..., H, W, C], got shape {tuple(frames.shape)}')
  height, width = frames.shape[-3], frames.shape[-2]
  keep = _cached_mask(key, height, width)[:, :, None].astype(frames.dtype)
  return frames * keep
