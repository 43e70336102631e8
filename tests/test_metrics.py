"""MetricWriter: rows past the resume step are dropped, so a resumed run does not log them twice."""
import json

from viper_jax import metrics


def test_resume_drops_rows_after_the_restored_step_and_a_cut_last_line(tmp_path):
  writer = metrics.MetricWriter(tmp_path, tensorboard=False)
  for step in (10, 20, 30):
    writer.write(step, {'loss': step})
  with (tmp_path / 'metrics.jsonl').open('a') as f:
    f.write('{"step": 40, "lo')  # killed mid-line
  metrics.MetricWriter(tmp_path, tensorboard=False, resume_step=20).write(30, {'loss': -1})
  rows = metrics.read_metrics(tmp_path)
  assert [(r['step'], r['loss']) for r in rows] == [(10, 10), (20, 20), (30, -1)]
  # A writer that is not resuming leaves the file alone.
  metrics.MetricWriter(tmp_path, tensorboard=False)
  assert [json.loads(line)['step'] for line in
          (tmp_path / 'metrics.jsonl').read_text().splitlines()] == [10, 20, 30]
