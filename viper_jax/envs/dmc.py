"""DeepMind Control Suite tasks as Gymnasium environments with 64x64 pixel observations.

Observations are uint8 [H, W, 3] renders; actions are float32 in [-1, 1] (rescaled to the
task's action bounds). `info['state']` holds the task's proprioceptive observation dict, which
scripted experts read; the video model and the agent only ever see pixels.
"""
from __future__ import annotations

import os

# MuJoCo picks its GL backend when dm_control is first imported: headless EGL unless the user
# chose otherwise.
os.environ.setdefault('MUJOCO_GL', 'egl')

import gymnasium
import numpy as np

from viper_jax.envs.pixel_env import PixelEnv

# Standard DMC episodes are 1000 control steps; the agent sees 1000 / action_repeat of them.
DMC_EPISODE_CONTROL_STEPS = 1000
# Cameras as in DreamerV3's DMC setup: quadruped is only visible from its tracking camera.
_CAMERA_BY_DOMAIN = {'quadruped': 2}


def dmc_task_names() -> list[str]:
  """All 'dmc:<domain>-<task>' names of the dm_control suite."""
  from dm_control import suite
  return sorted(f'dmc:{domain}-{task}' for domain, task in suite.ALL_TASKS)


def random_joint_state(physics, random: np.random.RandomState, speed: float = 2.0) -> None:
  """Sets every hinge and slide joint to a random position and velocity, in place.

  Unlimited hinges: angle uniform over the circle; limited joints: uniform over the middle half of
  their range (away from the end stops); velocities normal with std `speed` (rad/s or m/s), so
  some starts carry more energy than the task's own. Other joint kinds (free, ball) keep the
  task's initial state.
  """
  import mujoco  # here, not at module level: dm_control picks the GL backend on first import
  model = physics.model
  moving = (int(mujoco.mjtJoint.mjJNT_SLIDE), int(mujoco.mjtJoint.mjJNT_HINGE))
  for joint in range(model.njnt):
    if model.jnt_type[joint] not in moving:
      continue
    qpos, dof = model.jnt_qposadr[joint], model.jnt_dofadr[joint]
    if model.jnt_limited[joint]:
      low, high = model.jnt_range[joint]
      middle, half = (low + high) / 2, (high - low) / 4
      physics.data.qpos[qpos] = random.uniform(middle - half, middle + half)
    else:
      physics.data.qpos[qpos] = random.uniform(-np.pi, np.pi)
    physics.data.qvel[dof] = speed * random.randn()
  physics.forward()


class DMCEnv(PixelEnv):
  """One dm_control suite task. See module docstring for the observation/action conventions."""

  metadata = {'render_modes': ['rgb_array'], 'render_fps': 50}

  def __init__(self, domain: str, task: str, *, size=(64, 64), action_repeat: int = 2,
               time_limit: int | None = None, seed: int | None = None,
               camera: int | None = None):
    from dm_control import suite
    self._init_pixels(size, action_repeat, seed)
    self.name = f'dmc:{domain}-{task}'
    self._camera = _CAMERA_BY_DOMAIN.get(domain, 0) if camera is None else camera
    self._env = suite.load(domain, task, task_kwargs={'random': 0})
    # Our wrapper owns the time limit (in agent steps); the suite's own would end episodes early
    # when a longer limit is asked for. Tasks pass time_limit themselves, so it is lifted here.
    self._env._step_limit = float('inf')
    if time_limit is None:
      time_limit = -(-DMC_EPISODE_CONTROL_STEPS // self._action_repeat)
    self.time_limit = int(time_limit)
    spec = self._env.action_spec()
    self._action_low = spec.minimum.astype(np.float64)
    self._action_high = spec.maximum.astype(np.float64)
    self.action_space = gymnasium.spaces.Box(-1.0, 1.0, spec.shape, np.float32)

  @property
  def physics(self):
    """The MuJoCo physics (for scripted experts and tests; not part of the observation)."""
    return self._env.physics

  def _render(self) -> np.ndarray:
    frame = self._env.physics.render(*self._size, camera_id=self._camera)
    self._frame = np.ascontiguousarray(frame, dtype=np.uint8)
    return self._frame

  def _info(self, time_step) -> dict:
    return {'state': {k: np.array(v, copy=True) for k, v in time_step.observation.items()},
            'discount': float(1.0 if time_step.discount is None else time_step.discount)}

  def reset(self, *, seed: int | None = None, options: dict | None = None):
    """options={'random_state': True}: start from `random_joint_state` instead of the task's own
    initial states (for expert videos that cover more than the task's start; never the agent's)."""
    simulator_seed = self._simulator_seed(seed)
    if simulator_seed is not None:  # the task's initial-state sampler
      self._env.task._random = np.random.RandomState(simulator_seed)
    time_step = self._env.reset()
    if (options or {}).get('random_state'):
      random_joint_state(self._env.physics, self._env.task.random)
      observation = self._env.task.get_observation(self._env.physics)
      time_step = time_step._replace(observation=observation)
    return self._render(), self._info(time_step)

  def step(self, action):
    action = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
    if not np.all(np.isfinite(action)):
      raise ValueError(f'{self.name}: action must be finite, got {action}')
    action = np.clip(action, -1.0, 1.0)
    scaled = self._action_low + (action + 1.0) * 0.5 * (self._action_high - self._action_low)
    reward = 0.0
    terminated = False
    for _ in range(self._action_repeat):
      time_step = self._env.step(scaled)
      reward += float(time_step.reward or 0.0)
      if time_step.last():
        terminated = time_step.discount == 0.0
        break
    self._steps += 1
    truncated = not terminated and (time_step.last() or self._steps >= self.time_limit)
    return self._render(), reward, bool(terminated), bool(truncated), self._info(time_step)
