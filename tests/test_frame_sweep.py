"""frame_sweep: one exact evaluation per frame count, each seeing at most that many frames."""
import csv

import helpers
from usvjax import frame_sweep
from usvjax import runners


def test_each_count_evaluates_the_videos_with_at_most_that_many_frames(data_dir, tmp_path):
  config = helpers.load_config('cnn_aver', data_dir)  # Up to 8 frames per video.
  workdir = str(tmp_path / 'run')
  runners.train(config, workdir)
  rows = frame_sweep.run(config, workdir, [12, 2], which='latest')
  assert [r['frames'] for r in rows] == [2, 12]
  assert len({r['num_videos'] for r in rows}) == 1  # Every video, every time.
  for count in (2, 12):
    with open(tmp_path / 'run' / 'frame_sweep' / f'frames_{count}' / 'per_video.csv') as f:
      seen = [int(row['num_frames']) for row in csv.DictReader(f)]
    assert max(seen) == min(count, 8) and all(n <= count for n in seen)
  assert (tmp_path / 'run' / 'frame_sweep' / 'frame_sweep.png').exists()
