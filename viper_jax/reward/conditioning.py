"""Does one task-conditioned model keep the tasks apart? The conditioning matrix.

`matrix[i, j]` is the mean reward per step of task i's held-out expert episodes scored under task
id j. A model that keeps each task's behaviour distinct scores a task's experts highest under its
own id (the diagonal is the row maximum); the two cartpole tasks share their visuals, so there
only the behaviour can tell them apart. `run` also scores every task's held-out episodes under its
own id (the per-task Spearman and AUROC of `viper reward-check`) and writes
`<workdir>/reward/conditioning.json` and `conditioning.png`.
"""
from __future__ import annotations


import numpy as np
from etils import epath

from viper_jax import atomic, metrics
from viper_jax.data.store import EpisodeStore
from viper_jax.reward import check, likelihood


def expert_matrix(model: likelihood.RewardModel, store: EpisodeStore, tasks: list[str],
                  split: str = 'test') -> np.ndarray:
  """float64 [len(tasks), len(tasks)]: row i = task i's expert episodes, column j = task id j."""
  ids = np.array([model.task_id(t) for t in tasks], np.int32)
  matrix = np.zeros((len(tasks), len(tasks)))
  for i, task in enumerate(tasks):
    means = []
    for path in store.paths(task, split):
      if check.episode_group(path.name, '') != 'expert':
        continue
      frames = store.load(path)['image']  # uint8 [T, H, W, 3], scored under every id at once
      lp = np.asarray(model.log_likelihood(np.repeat(frames[None], len(ids), 0), ids))
      means.append(lp.mean(axis=1))
    if not means:
      raise FileNotFoundError(f'no {split} expert episodes of {task} in {store.root}: run '
                              '`viper collect` for it')
    matrix[i] = np.mean(means, axis=0)
  return matrix


def plot(matrix: np.ndarray, tasks: list[str], path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  n = len(tasks)
  fig, ax = plt.subplots(figsize=(1.6 * n + 2.5, 1.3 * n + 1.5), dpi=100)
  image = ax.imshow(matrix, cmap='viridis')
  labels = [t.split(':', 1)[-1] for t in tasks]
  ax.set_xticks(range(n), labels, rotation=30, ha='right')
  ax.set_yticks(range(n), labels)
  ax.set_xlabel('scored under task id')
  ax.set_ylabel('held-out expert episodes of')
  for i in range(n):
    for j in range(n):
      best = j == int(np.argmax(matrix[i]))
      ax.text(j, i, f'{matrix[i, j]:.1f}', ha='center', va='center', fontsize=8,
              color='black' if best else 'white', fontweight='bold' if best else 'normal')
  fig.colorbar(image, ax=ax, label='mean reward per step (nats)')
  ax.set_title('conditioning matrix (bold: row maximum)')
  fig.tight_layout()
  metrics.save_figure(fig, path)


def run(model: likelihood.RewardModel, store: EpisodeStore, out_dir) -> dict:
  """Writes <out_dir>/conditioning.{json,png} (out_dir: the run's reward/); returns the JSON's dict:
  tasks, matrix (rows: episodes' task, columns: task id), diagonal_highest per task, per_task
  (reward-check summary of each task's test episodes under its own id)."""
  tasks = list(model.task_names)
  matrix = expert_matrix(model, store, tasks)
  per_task = {t: check.summarize(check.score_episodes(model, store, t)) for t in tasks}
  result = dict(tasks=tasks, matrix=matrix.tolist(),
                diagonal_highest=[bool(np.argmax(row) == i) for i, row in enumerate(matrix)],
                per_task=per_task)
  out = epath.Path(out_dir) / 'conditioning.json'
  atomic.write_json(out, result, indent=2)
  plot(matrix, tasks, out.parent / 'conditioning.png')
  return result
