"""reward.load on a trained (tiny) experiment, `viper reward-stats`, and the README snippet."""
import json
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from viper_jax import reward
from viper_jax.data.store import EpisodeStore
from viper_jax.reward import expert_stats
from viper_jax.video import priors, token_cache, train_prior, train_tokenizer, transformer


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A workdir with a tiny tokenizer and prior trained for a few steps on synthetic episodes."""
  from conftest import synthetic_video_config
  root = tmp_path_factory.mktemp('trained')
  config = synthetic_video_config(root)
  store = EpisodeStore(config.data.root)
  train_tokenizer.run(config, root)
  train_prior.run(config, root)
  return config, root, store


def test_load_scores_with_the_trained_weights(trained):
  config, root, store = trained
  model = reward.load(root)
  assert model.task_names == ['dmc:synthetic'] and model.checkpoint == str(root)
  # The reward tokenizes exactly as the token cache did and scores with the prior's EMA params.
  _, _, _, fingerprint = train_tokenizer.load(root)
  codes = token_cache.load(store, ['dmc:synthetic'], 'test', fingerprint)[0].codes
  frames = store.load(store.paths('dmc:synthetic', 'test')[0])['image']
  lp = np.asarray(model.log_likelihood(frames[None]))[0]
  prior = priors.build_prior(config, 1)
  codes = jnp.asarray(codes.reshape(1, len(codes), -1))
  logits = prior.apply({'params': model.params['prior']}, codes, jnp.zeros((1,), jnp.int32))
  np.testing.assert_allclose(lp, transformer.log_likelihood_per_frame(logits, codes)[0],
                             rtol=1e-5, atol=1e-4)


def test_a_copied_tokenizer_reuses_the_token_cache(trained, tmp_path):
  import shutil
  _, root, store = trained
  shutil.copytree(root / 'tokenizer', tmp_path / 'tokenizer')
  _, _, _, original = train_tokenizer.load(root)
  _, _, _, copied = train_tokenizer.load(tmp_path)
  assert copied == original  # the same weights: the same cache, not a rebuild
  assert token_cache.load(store, ['dmc:synthetic'], 'test', copied)


def test_load_reads_the_same_params_as_a_full_train_state_restore(trained):
  """reward.load restores only params subtrees; they equal those of a whole-state restore."""
  import jax
  from viper_jax import checkpoint
  config, root, _ = trained
  model = reward.load(root)
  assert model.metadata['tasks'] == ['dmc:synthetic'] and model.metadata['prior_step'] == 6
  saved = checkpoint.Checkpointer(root / 'prior' / 'checkpoints')
  template = train_prior.init_state(priors.build_prior(config, 1), config.prior.train,
                                    jax.random.key(0), 3)
  state, _ = saved.restore(6, template)
  saved.close()
  for got, want in zip(jax.tree.leaves(model.params['prior']), jax.tree.leaves(state['ema_params'])):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  _, tok_params, tok_stats, _ = train_tokenizer.load(root)
  for got, want in zip(jax.tree.leaves(model.params['tokenizer']),
                       jax.tree.leaves({'params': tok_params, 'vq_stats': tok_stats})):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_reward_library_imports_no_training_code():
  """`import viper_jax.reward` pulls in neither optax, grain nor a train module (fresh process)."""
  import subprocess
  import sys
  code = ('import sys, viper_jax.reward; print(sorted(m for m in sys.modules if m.startswith('
          '("optax", "grain", "viper_jax.video.train", "viper_jax.agent"))))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       cwd=Path(__file__).parent.parent)
  assert out.stdout.strip() == '[]', out.stdout


def test_reward_stats_and_scaling(trained):
  config, root, _ = trained
  stats = expert_stats.run(config, root)
  saved = json.loads((root / 'reward' / 'expert_stats.json').read_text())
  assert saved == stats and stats['episodes'] == 3 and stats['count'] == 3 * 24
  assert stats['min'] <= stats['mean'] <= stats['max'] and stats['std'] > 0
  raw = reward.load(root)
  scaled_cfg = reward.default_config()
  scaled_cfg.scale = 'standardize'
  scaled = reward.load(root, reward_config=scaled_cfg)
  frames = np.stack([EpisodeStore(root / 'episodes').load(p)['image']
                     for p in EpisodeStore(root / 'episodes').paths('dmc:synthetic', 'train')])
  lp = np.asarray(raw.log_likelihood(frames))
  np.testing.assert_allclose(lp.mean(), stats['mean'], rtol=1e-4)
  # data.drop_first_frames: the statistics leave out the frames the video model never saw.
  later = expert_stats.compute(raw, EpisodeStore(root / 'episodes'), drop_first=5)
  assert later['count'] == 3 * 19
  np.testing.assert_allclose(later['mean'], lp[:, 5:].mean(), rtol=1e-4)
  z = np.asarray(scaled.log_likelihood(frames))
  np.testing.assert_allclose(z, (lp - stats['mean']) / stats['std'], rtol=1e-4, atol=1e-4)
  # reward.scale='floor': the expert's 20th percentile per step, recorded by reward-stats.
  assert stats['percentiles']['20'] == pytest.approx(np.percentile(lp, 20), rel=1e-4)
  scaled_cfg.scale, scaled_cfg.floor_percentile = 'floor', 20
  floored = np.asarray(reward.load(root, reward_config=scaled_cfg).log_likelihood(frames))
  np.testing.assert_allclose(floored, np.maximum(lp, stats['percentiles']['20']), rtol=1e-4)
  scaled_cfg.scale = 'floor_unit'
  unit = np.asarray(reward.load(root, reward_config=scaled_cfg).log_likelihood(frames))
  p20, p50 = stats['percentiles']['20'], stats['percentiles']['50']
  np.testing.assert_allclose(unit, (np.maximum(lp, p20) - p20) / (p50 - p20), rtol=1e-3, atol=1e-4)
  scaled_cfg.floor_percentile = 15
  with pytest.raises(ValueError, match='reward.floor_percentile'):
    reward.load(root, reward_config=scaled_cfg)


def test_frame_rate_is_recorded_and_a_mismatch_refused(trained):
  config, root, _ = trained
  model = reward.load(root)
  assert (model.action_repeat, model.frame_skip) == (2, 1)  # the synthetic videos' metadata
  from viper_jax import pipeline
  agent_config = config.copy_and_resolve_references()
  agent_config.agent.reward_source, agent_config.agent.reward_checkpoint = 'viper', str(root)
  agent_config.env.action_repeat = 2
  pipeline.check_frame_rate(model, agent_config)  # same frame rate: accepted
  agent_config.env.action_repeat = 8
  with pytest.raises(ValueError, match=r'action repeat 2 .*action repeat 8'):
    pipeline.viper_likelihood_fn(agent_config, str(root))  # what train-agent calls first


def test_store_action_repeat_of_the_videos(tmp_path):
  from conftest import synthetic_episode
  store = EpisodeStore(tmp_path)
  assert store.action_repeat(['dmc:synthetic']) is None  # nothing recorded
  store.save(synthetic_episode(0), 'train', 'a')
  assert store.action_repeat(['dmc:synthetic']) == 2
  store.save(dict(synthetic_episode(1), action_repeat=8), 'train', 'b')
  with pytest.raises(ValueError, match=r'mix action repeats \[2, 8\]'):
    store.action_repeat(['dmc:synthetic'])


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='train-prior'):
    reward.load(tmp_path)


def test_readme_snippet_runs(trained):
  _, root, _ = trained
  readme = (Path(__file__).parent.parent / 'README.md').read_text()
  section = readme[readme.index('## Use the VIPER reward in your own JAX project'):]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  namespace = {'WORKDIR': str(root)}
  exec(compile(code, 'README.md', 'exec'), namespace)
  lp, lp_again, lp_t = namespace['lp'], namespace['lp_again'], namespace['lp_t']
  assert lp.shape == (2, 50)
  np.testing.assert_allclose(np.asarray(lp_again), np.asarray(lp), atol=2e-4)
  np.testing.assert_allclose(np.asarray(lp_t), np.asarray(lp[:, 2]), atol=2e-4)
