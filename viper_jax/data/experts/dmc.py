"""Scripted experts for DeepMind Control Suite tasks (see `viper_jax.data.policies`).

Each expert reads only `info['state']` (the task's proprioceptive observation dict), never pixels.
Model constants (masses, link lengths, linearised dynamics) are taken from `env.physics` once, at
construction, on a scratch copy of the simulation state, so the live episode is never touched.
Gains that depend on time are derived from the agent's step length (control timestep times
`env.action_repeat`), so the same expert works at any action repeat.
"""
from __future__ import annotations

import mujoco
import numpy as np
import scipy.linalg


def _wrap(angle):
  return (angle + np.pi) % (2 * np.pi) - np.pi


def _physics_steps_per_action(env) -> int:
  """Physics steps per agent step: the suite's substeps times the wrapper's action repeat."""
  physics = env.physics
  substeps = 1
  suite_env = getattr(env, '_env', None)
  if suite_env is not None and hasattr(suite_env, 'control_timestep'):
    substeps = max(1, int(round(suite_env.control_timestep() / physics.timestep())))
  return substeps * int(env.action_repeat)


def _to_action(ctrl, physics) -> np.ndarray:
  """Actuator controls -> the wrapper's [-1, 1] actions, clipped."""
  low, high = physics.model.actuator_ctrlrange.T
  action = (np.asarray(ctrl, np.float64) - (low + high) / 2) / ((high - low) / 2)
  return np.clip(action, -1.0, 1.0).astype(np.float32)


def _linearize(physics, qpos, steps: int, eps: float = 1e-6):
  """Discrete (A, B) of one agent step (`steps` physics steps, control held) about (qpos, 0, 0).

  State is (qpos, qvel) (hinge and slide joints only); B is with respect to the [-1, 1] action.
  Central finite differences of mj_step on a scratch MjData (mjd_transitionFD rejects RK4).
  """
  model = physics.model.ptr
  data = mujoco.MjData(model)
  nq, nv, nu = model.nq, model.nv, model.nu
  low, high = physics.model.actuator_ctrlrange.T
  x0 = np.concatenate([qpos, np.zeros(nv)])
  u0 = (low + high) / 2

  def step(x, u):
    mujoco.mj_resetData(model, data)
    data.qpos[:], data.qvel[:], data.ctrl[:] = x[:nq], x[nq:], u
    for _ in range(steps):
      mujoco.mj_step(model, data)
    return np.concatenate([data.qpos, data.qvel])

  def column(f, n, dx):
    return np.stack([(f(dx * e) - f(-dx * e)) / (2 * dx) for e in np.eye(n)], axis=1)

  a = column(lambda d: step(x0 + d, u0), nq + nv, eps)
  b = column(lambda d: step(x0, u0 + d * (high - low) / 2), nu, eps)
  return a, b


def _dlqr(a, b, q, r):
  p = scipy.linalg.solve_discrete_are(a, b, q, r)
  return np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)


def _hinge_constants(physics, qpos_index: int, qpos_upright):
  """(inertia about the hinge, gravity torque amplitude m*g*l) of the hinge at `qpos_index`.

  Read from the simulator: the joint-space mass matrix, and the bias force with the pole
  horizontal (where gravity's torque is largest).
  """
  model = physics.model.ptr
  data = mujoco.MjData(model)
  data.qpos[:] = qpos_upright
  data.qpos[qpos_index] += np.pi / 2
  mujoco.mj_forward(model, data)
  mass_matrix = np.zeros((model.nv, model.nv))
  mujoco.mj_fullM(model, data, mass_matrix)
  dof = model.jnt_dofadr[np.flatnonzero(model.jnt_qposadr == qpos_index)[0]]
  return mass_matrix[dof, dof], abs(data.qfrc_bias[dof])


class CartpoleBalanceExpert:
  """LQR on the cart-pole linearised about upright at the agent's step length.

  The state is (cart x, pole angle, their velocities), the pole angle recovered from its
  (cos, sin). The control weight is high enough that the balancing force stays small, which the
  reward also pays for.
  """

  def __init__(self, env):
    self.physics = env.physics
    a, b = _linearize(self.physics, np.zeros(2), _physics_steps_per_action(env))
    self.gain = _dlqr(a, b, np.diag([1.0, 10.0, 0.1, 0.1]), np.eye(1) * 1.0)

  def reset(self, seed):
    pass

  def _lqr(self, state):
    x, cos, sin = state['position']
    s = np.array([x, np.arctan2(sin, cos), *state['velocity']])
    return -self.gain @ s

  def __call__(self, obs, info):
    return np.clip(self._lqr(info['state']), -1, 1).astype(np.float32)


class CartpoleSwingupExpert(CartpoleBalanceExpert):
  """Energy-pumping swing-up, then the balance LQR once the pole is near upright.

  Away from upright the cart is accelerated along (pole energy deficit) * omega * cos(angle),
  which raises the pole's energy towards that of resting upright; weak cart position/velocity
  terms keep the cart near the centre of the rail. Near upright the LQR takes over (with
  hysteresis so the two do not chatter).
  """

  def __init__(self, env):
    super().__init__(env)
    self.inertia, self.mgl = _hinge_constants(self.physics, 1, np.zeros(2))
    self.catching = False

  def reset(self, seed):
    self.catching = False

  def __call__(self, obs, info):
    state = info['state']
    x, cos, sin = state['position']
    v, omega = state['velocity']
    if cos > 0.85:
      self.catching = True
    elif cos < 0.6:
      self.catching = False
    if self.catching:
      return np.clip(self._lqr(state), -1, 1).astype(np.float32)
    energy = 0.5 * self.inertia * omega**2 + self.mgl * (cos - 1)
    # Cart acceleration to +x pushes the pole's angle negative, so E' ~ -accel * omega * cos.
    u = 20.0 * (energy / self.mgl) * omega * cos - 0.5 * x - 0.5 * v
    return np.clip(np.array([u]), -1, 1).astype(np.float32)


class PendulumSwingupExpert:
  """Energy pumping with the weak motor, then a saturated LQR catch at the top.

  The torque is pushed along omega while the energy is below that of resting upright (a kick
  when at rest), so each swing goes higher; near the top, with the energy close to upright's, an
  LQR about upright (linearised at the agent's step length) holds the pole.
  """

  def __init__(self, env):
    self.physics = env.physics
    self.inertia, self.mgl = _hinge_constants(self.physics, 0, np.zeros(1))
    a, b = _linearize(self.physics, np.zeros(1), _physics_steps_per_action(env))
    self.gain = _dlqr(a, b, np.diag([10.0, 0.1]), np.eye(1) * 0.1)
    self.damping = float(self.physics.model.dof_damping[0])
    self.catch_angle = 0.4

  def reset(self, seed):
    pass

  def __call__(self, obs, info):
    state = info['state']
    cos, sin = state['orientation']
    omega = float(state['velocity'][0])
    theta = np.arctan2(sin, cos)
    energy = 0.5 * self.inertia * omega**2 + self.mgl * (cos - 1)
    if cos > np.cos(self.catch_angle) and abs(energy) < 0.2 * self.mgl:
      u = -self.gain @ np.array([theta, omega])
    else:
      # Pushing along omega adds energy at rate u * omega; the joint damping is cancelled too.
      direction = np.sign(omega) if abs(omega) > 1e-3 else 1.0
      u = np.array([direction * 20.0 * (-energy / self.mgl) + self.damping * omega])
    return _to_action(u, self.physics)


class PointMassExpert:
  """LQR to the target on the (exactly linear, damped) point-mass dynamics.

  The target's position is a fixed model constant; the gain is from the discrete linear model
  at the agent's step length, so it brakes before the target and then idles (small control is
  rewarded).
  """

  def __init__(self, env):
    self.physics = env.physics
    self.target = np.array(self.physics.named.model.geom_pos['target'][:2])
    a, b = _linearize(self.physics, np.zeros(2), _physics_steps_per_action(env))
    self.gain = _dlqr(a, b, np.diag([1.0, 1.0, 0.0, 0.0]) * 1e3, np.eye(2) * 1.0)

  def reset(self, seed):
    pass

  def __call__(self, obs, info):
    state = info['state']
    s = np.concatenate([state['position'] - self.target, state['velocity']])
    return np.clip(-self.gain @ s, -1, 1).astype(np.float32)


class ReacherExpert:
  """Inverse kinematics of the two-link arm, then joint-space LQR to the IK solution.

  The target is finger + `to_target`, the finger from forward kinematics of the joint angles;
  of the two elbow solutions (within the wrist's range) the one nearer the current joint
  angles is chosen. The LQR is from the arm linearised at that goal posture.
  """

  def __init__(self, env):
    self.physics = env.physics
    self.steps = _physics_steps_per_action(env)
    pos = self.physics.named.model.body_pos
    self.l1 = float(np.linalg.norm(pos['hand'][:2]))
    self.l2 = float(np.linalg.norm(pos['finger'][:2]))
    self.wrist_limit = float(self.physics.named.model.jnt_range['wrist'][1])
    self._gains = {}

  def reset(self, seed):
    pass

  def _gain(self, q_goal):
    key = tuple(np.round(q_goal, 2))
    if key not in self._gains:
      a, b = _linearize(self.physics, q_goal, self.steps)
      self._gains[key] = _dlqr(a, b, np.diag([1.0, 1.0, 0.0, 0.0]) * 1e2, np.eye(2))
    return self._gains[key]

  def _fk(self, q):
    return np.array([self.l1 * np.cos(q[0]) + self.l2 * np.cos(q[0] + q[1]),
                     self.l1 * np.sin(q[0]) + self.l2 * np.sin(q[0] + q[1])])

  def _ik(self, target, q):
    r2 = float(target @ target)
    c2 = np.clip((r2 - self.l1**2 - self.l2**2) / (2 * self.l1 * self.l2), -1, 1)
    best = None
    for elbow in (np.arccos(c2), -np.arccos(c2)):
      elbow = np.clip(elbow, -self.wrist_limit, self.wrist_limit)
      shoulder = np.arctan2(target[1], target[0]) - np.arctan2(
          self.l2 * np.sin(elbow), self.l1 + self.l2 * np.cos(elbow))
      goal = np.array([q[0] + _wrap(shoulder - q[0]), elbow])
      cost = np.abs(goal - q).sum()
      if best is None or cost < best[0]:
        best = (cost, goal)
    return best[1]

  def __call__(self, obs, info):
    state = info['state']
    q, qdot = state['position'], state['velocity']
    target = self._fk(q) + state['to_target']
    q_goal = self._ik(target, q)
    s = np.concatenate([q - q_goal, qdot])
    return np.clip(-self._gain(q_goal) @ s, -1, 1).astype(np.float32)


DMC_EXPERTS = {
    'dmc:cartpole-balance': CartpoleBalanceExpert,
    'dmc:cartpole-swingup': CartpoleSwingupExpert,
    'dmc:pendulum-swingup': PendulumSwingupExpert,
    'dmc:point_mass-easy': PointMassExpert,
    'dmc:reacher-easy': ReacherExpert,
}
