"""Config validation in one place: every stage and `viper config --check` call `validate`.

Each check names the field, its value and the allowed range, and runs before any work. The
sections are declared once, in config_sections.py / presets.py / agent/configs.py; the allowed
values of their enumerated fields live here. Only ml_collections, etils and `viper_jax.envs`'s
name list are needed, so validating stays fast.

`validate(config, stages, workdir)` checks the sections the stages use (environment task names
for the stages that make environments); with a workdir it also checks the episode store the video
stages read (their tasks, and episodes long enough for the prior's window at its frame skip).
`agent.reward_checkpoint` must hold a trained prior.
"""
from __future__ import annotations

from typing import Iterable

from etils import epath

from viper_jax.configs import ConfigError

PRIOR_KINDS = ('ar', 'maskgit')
QUANTIZERS = ('ema', 'straight_through')
LR_DECAYS = ('constant', 'cosine')  # the video stages' train.decay
REDUCTIONS = ('sum', 'mean')
LIKELIHOODS = ('conditional', 'joint')
SCALINGS = ('none', 'standardize', 'minmax', 'floor', 'floor_unit')
FLOOR_PERCENTILES = (1, 5, 10, 20, 25, 50)  # the expert percentiles reward-stats records
REWARD_SOURCES = ('env', 'viper', 'viper+disag', 'amp')
REWARD_TERMS = ('env', 'density', 'disag', 'amp')
ENV_MODES = ('serial', 'process')
COLLECT_POLICIES = ("'expert'", "'random'", "'agent:<checkpoint dir>'")

STAGES = ('collect', 'train-tokenizer', 'train-prior', 'reward-stats', 'reward-check',
          'train-agent')


def _get(config, field: str):
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


def _fail(field: str, value, allowed: str):
  raise ConfigError(f'{field} = {value!r}: must be {allowed}')


def positive(config, *fields: str, low: int = 1) -> None:
  """Each field is an int >= low."""
  for field in fields:
    value = _get(config, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      _fail(field, value, f'an integer >= {low}')


def in_range(config, field: str, low: float, high: float, high_open: bool = False) -> None:
  value = _get(config, field)
  ok = isinstance(value, (int, float)) and low <= value and (value < high if high_open
                                                              else value <= high)
  if not ok:
    _fail(field, value, f'a number in [{low}, {high}{")" if high_open else "]"}')


def one_of(config, field: str, choices: tuple) -> None:
  value = _get(config, field)
  if value not in choices:
    _fail(field, value, f'one of {", ".join(map(repr, choices))}')


# ------------------------------------------------------------------------------ sections


def check_tasks(config) -> None:
  """Tasks the stage makes environments of (video stages read any task of the store)."""
  from viper_jax import envs
  names = set(envs.env_names())
  for field, tasks in (('task', [config.task]), ('data.tasks', list(config.data.tasks)),
                       ('agent.reward_task', [config.agent.reward_task] * bool(
                           config.agent.reward_task))):
    for task in tasks:
      if task not in names:
        raise ConfigError(f'{field}: unknown task {task!r}; expected dmc:<domain>-<task> or '
                          'atari:<game> (`viper envs` lists them)')


def check_env(config) -> None:
  size = tuple(config.env.size)
  if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                               for s in size):
    _fail('env.size', size, '(height, width), two integers >= 1')
  for field in ('env.action_repeat', 'env.time_limit'):
    if _get(config, field) is not None:  # None: the suite's default
      positive(config, field)


def check_collect(config) -> None:
  policy = str(config.collect.policy)
  # 'name:arg' policies come from loaders the caller passes to collect (e.g. 'agent:<dir>');
  # collect names the missing loader if there is none for `name`.
  if policy not in ('expert', 'random') and ':' not in policy:
    _fail('collect.policy', policy, ' or '.join(COLLECT_POLICIES))
  positive(config, 'collect.workers')
  positive(config, 'collect.train_episodes', 'collect.test_episodes',
           'collect.random_test_episodes', 'collect.train_random_steps',
           'collect.train_random_states', low=0)
  if config.collect.train_random_states and not config.task.startswith('dmc:'):
    _fail('collect.train_random_states', config.collect.train_random_states,
          "0 for a task that is not 'dmc:' (random joint states are a MuJoCo reset)")
  for field in ('collect.train_noise_levels', 'collect.test_noise_levels'):
    if not all(0 <= float(n) <= 1 for n in _get(config, field)):
      _fail(field, tuple(_get(config, field)), 'noise levels in [0, 1]')


def check_tokenizer(config) -> None:
  one_of(config, 'tokenizer.quantizer', QUANTIZERS)
  one_of(config, 'tokenizer.train.decay', LR_DECAYS)
  positive(config, 'tokenizer.channels', 'tokenizer.code_dim', 'tokenizer.num_res_blocks')
  positive(config, 'tokenizer.codebook_size', low=2)
  positive(config, *(f'tokenizer.train.{f}' for f in (
      'steps', 'batch_size', 'log_every', 'image_every', 'checkpoint_every', 'keep_checkpoints')))
  factor = 2 ** (len(config.tokenizer.channel_mult) - 1)
  if any(s % factor for s in config.env.size):
    raise ConfigError(f'env.size = {tuple(config.env.size)}: must be divisible by the tokenizer '
                      f'downsampling factor {factor} (tokenizer.channel_mult '
                      f'{tuple(config.tokenizer.channel_mult)})')
  in_range(config, 'data.max_noise', 0, 1)
  positive(config, 'data.drop_first_frames', low=0)


def check_prior(config) -> None:
  p = config.prior
  one_of(config, 'prior.kind', PRIOR_KINDS)
  one_of(config, 'prior.train.decay', LR_DECAYS)
  positive(config, 'prior.context', 'prior.frame_skip', 'prior.num_layers', 'prior.num_heads',
           'prior.width', 'prior.train.window')
  positive(config, *(f'prior.train.{f}' for f in (
      'steps', 'batch_size', 'log_every', 'eval_every', 'checkpoint_every', 'sample_every',
      'keep_checkpoints')))
  if p.width % p.num_heads:
    _fail('prior.width', p.width, f'divisible by prior.num_heads = {p.num_heads}')
  if p.context > p.train.window:
    _fail('prior.context', p.context, f'<= prior.train.window = {p.train.window} (a layer '
          'cannot attend to more frames than a training window holds)')
  in_range(config, 'prior.train.ema_decay', 0, 1, high_open=True)
  span = window_span(config)
  limit = config.env.time_limit
  if limit is not None and limit + 1 < span:
    raise ConfigError(
        f'prior.frame_skip = {p.frame_skip} with prior.train.window = {p.train.window} needs '
        f'episodes of at least {span} frames, but env.time_limit = {limit} gives {limit + 1}: '
        f'lower the frame skip or the window, or raise env.time_limit to >= {span - 1}')
  drop = config.data.drop_first_frames
  if limit is not None and drop and limit + 1 - drop < span:
    _fail('data.drop_first_frames', drop, f'<= {limit + 1 - span} (env.time_limit = {limit} gives '
          f'{limit + 1} frames and a prior window spans {span})')


def window_span(config) -> int:
  """Frames one training window of the prior covers: (window - 1) * frame_skip + 1."""
  return (config.prior.train.window - 1) * config.prior.frame_skip + 1


def check_reward(config) -> None:
  one_of(config, 'reward.reduce', REDUCTIONS)
  one_of(config, 'reward.likelihood', LIKELIHOODS)
  one_of(config, 'reward.scale', SCALINGS)
  one_of(config, 'reward.floor_percentile', FLOOR_PERCENTILES)
  positive(config, 'reward.chunk_frames', 'reward.encode_batch', 'reward.window_batch')


def check_agent(config) -> None:
  a = config.agent
  one_of(config, 'agent.reward_source', REWARD_SOURCES)
  one_of(config, 'agent.env_mode', ENV_MODES)
  unknown = sorted(set(a.reward_weights.keys()) - set(REWARD_TERMS))
  if unknown:
    _fail('agent.reward_weights', sorted(a.reward_weights.keys()), f'terms among {REWARD_TERMS}')
  positive(config, 'agent.env_steps', 'agent.num_envs', 'agent.batch_size', 'agent.keep_checkpoints',
           'agent.eval_episodes')
  positive(config, 'agent.batch_length', low=2)
  positive(config, 'agent.prefill', 'agent.train_ratio', 'agent.eval_every',
           'agent.checkpoint_every', 'agent.log_every', low=0)
  positive(config, 'agent.replay_capacity', low=a.num_envs)
  size = tuple(config.env.size)
  if size[0] % 16 or size[1] % 16:
    _fail('env.size', size, 'divisible by 16 for the agent (four stride-2 convolutions)')
  if a.prefill >= a.env_steps:
    _fail('agent.prefill', a.prefill, f'< agent.env_steps = {a.env_steps}')
  # updates = (env_steps - prefill) * train_ratio / (batch_size * batch_length), roughly.
  needed = a.batch_size * a.batch_length / (a.env_steps - a.prefill)
  if a.train_ratio < needed:
    _fail('agent.train_ratio', a.train_ratio,
          f'>= {needed:.3g} (batch_size x batch_length / (env_steps - prefill)): otherwise the '
          'run makes no update')
  if a.reward_source.startswith('viper'):
    limit = config.env.time_limit
    if limit is not None and a.replay_capacity // a.num_envs < limit:
      _fail('agent.replay_capacity', a.replay_capacity,
            f'>= num_envs x env.time_limit = {a.num_envs * limit}, so a whole episode can be '
            'scored when it ends')


SECTIONS = {
    'collect': (check_tasks, check_env, check_collect),
    'train-tokenizer': (check_env, check_tokenizer),
    'train-prior': (check_env, check_tokenizer, check_prior),
    'reward-stats': (check_env, check_tokenizer, check_prior, check_reward),
    'reward-check': (check_env, check_tokenizer, check_prior, check_reward),
    'train-agent': (check_tasks, check_env, check_agent),
}


# ------------------------------------------------------------------------------ with a workdir


def check_episodes(config, workdir, lengths: bool) -> None:
  """Every task of the video model has train episodes in the store (if it holds any yet) and,
  with `lengths`, one is long enough for a window of the prior at its frame skip."""
  from viper_jax.data import episodes as episodes_lib
  from viper_jax.data.store import EpisodeStore
  store = EpisodeStore(config.data.root or epath.Path(workdir) / 'episodes')
  held = store.tasks()
  if not held:
    return  # nothing collected yet: the stage itself says so
  span = window_span(config)
  for task in (list(config.data.tasks) or [config.task]):
    paths = store.paths(task, 'train')
    if not paths:
      field = 'data.tasks' if config.data.tasks else 'task'
      raise ConfigError(f'{field}: unknown task {task!r}: the episode store {store.root} has no '
                        f'train episodes of it; it holds {", ".join(held)}')
    if not lengths:
      continue
    longest = max(len(episodes_lib.load_episode(p, keys=('reward',))['reward']) for p in paths)
    if longest < span:
      raise ConfigError(
          f'prior.frame_skip = {config.prior.frame_skip} with prior.train.window = '
          f'{config.prior.train.window} needs episodes of at least {span} frames, but the '
          f'longest train episode of {task} in {store.root} has {longest}: lower the frame skip '
          'or the window')


def check_reward_checkpoint(config, workdir) -> None:
  """agent.reward_checkpoint (or the workdir itself) must hold a trained prior."""
  directory = config.agent.reward_checkpoint
  if not directory:
    return  # the pipeline's own prior (its stage comes first) or a clear error in train-agent
  prior = epath.Path(directory) / 'prior'
  checkpoints = prior / 'checkpoints'
  steps = [p for p in checkpoints.iterdir() if p.name.isdigit()] if checkpoints.exists() else []
  if not (prior / 'config.json').exists() or not steps:
    raise ConfigError(f'agent.reward_checkpoint = {directory!r}: must be a workdir holding a '
                      f'trained prior ({prior}/config.json and {checkpoints}/<step>); run '
                      '`viper train-tokenizer` and `viper train-prior` there first')


def validate(config, stages: Iterable[str] = STAGES, workdir=None) -> None:
  """Raises ConfigError naming the first bad field of the sections `stages` use.

  workdir: also check the data and checkpoints the stages will read (see module docstring).
  """
  stages = tuple(stages)
  unknown = [s for s in stages if s not in SECTIONS]
  if unknown:
    raise ConfigError(f'unknown stages {unknown}; expected some of {", ".join(STAGES)}')
  checks = []
  for stage in stages:
    checks += [c for c in SECTIONS[stage] if c not in checks]
  for check in checks:
    check(config)
  viper_agent = 'train-agent' in stages and config.agent.reward_source.startswith('viper')
  if viper_agent:
    check_reward(config)
    check_reward_checkpoint(config, workdir)
  video = [s for s in ('train-tokenizer', 'train-prior') if s in stages]
  if workdir is not None and video and 'collect' not in stages:  # else not collected yet
    check_episodes(config, workdir, lengths='train-prior' in stages)
