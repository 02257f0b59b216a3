"""The side-by-side benchmark's timing protocol and its PyTorch worker."""
import sys

import pytest

from experiments import benchmark_torch


def test_interleaved_alternates_the_sides_and_takes_each_sides_median():
  calls = []

  def side(name, seconds):
    times = iter(seconds)
    return benchmark_torch.Timed(lambda: calls.append(name) or next(times), 0.0)
  ours = side('usvjax', [9.0, 0.3, 0.1, 0.2, 0.5])   # First value: the warm-up call.
  theirs = side('torch', [9.0, 0.4, 0.6, 0.5, 7.0])
  assert benchmark_torch.interleaved(ours, theirs, warmup=1, repeats=4) == (0.25, 0.55)
  assert calls == ['usvjax', 'torch'] * 5


def test_the_worker_times_a_pytorch_call_and_reports_its_errors():
  pytest.importorskip('torchvision')
  worker = benchmark_torch.TorchSide(sys.executable, threads=1)
  try:
    request = dict(mode='training', size=32, batch=2, clip_length=3, threads=1, release='')
    timed = worker.build(build='resnet50', **request)
    seconds = [timed.call(), timed.call()]  # One train step each, timed by the worker.
    assert all(isinstance(s, float) and s > 0 for s in seconds)
    with pytest.raises(RuntimeError, match='PyTorch side: AttributeError: .*resnet_99'):
      worker.build(build='resnet_99', **request)
  finally:
    worker.close()
