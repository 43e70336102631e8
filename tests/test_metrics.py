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


def _tensorboard_events(path):
  """Event protos of one TFRecord event file (length, crc, payload, crc per record)."""
  import struct

  from tensorboardX.proto import event_pb2
  data, events, offset = path.read_bytes(), [], 0
  while offset < len(data):
    (length,) = struct.unpack('<Q', data[offset:offset + 8])
    events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
    offset += 12 + length + 4
  return events


def test_resumed_tensorboard_file_purges_the_killed_runs_later_steps(tmp_path):
  fresh = metrics.MetricWriter(tmp_path)
  fresh.write(10, {'loss': 1.0})
  fresh.close()
  resumed = metrics.MetricWriter(tmp_path, resume_step=20)
  resumed.write(30, {'loss': 2.0})
  resumed.close()
  # Both writers may share one file name (it holds the second); read every file, in time order.
  events = sorted((e for f in (tmp_path / 'tb').iterdir() for e in _tensorboard_events(f)),
                  key=lambda e: e.wall_time)
  # A SessionLog.START with a step makes TensorBoard drop older events from that step on.
  from tensorboardX.proto.event_pb2 import SessionLog
  purges = [i for i, e in enumerate(events)
            if e.HasField('session_log') and e.session_log.status == SessionLog.START]
  assert [events[i].step for i in purges] == [21]
  summaries = [i for i, e in enumerate(events) if e.HasField('summary') and e.step == 30]
  assert len(summaries) == 1 and summaries[0] > purges[0]
  # A fresh writer writes no purge marker.
  plain = tmp_path / 'plain'
  metrics.MetricWriter(plain).close()
  assert not any(e.HasField('session_log') for f in (plain / 'tb').iterdir()
                 for e in _tensorboard_events(f))
