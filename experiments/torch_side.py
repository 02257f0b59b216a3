"""The PyTorch side of ``experiments/benchmark_torch.py``, a worker process.

It runs under any Python with torch (and timm / torchvision for the backbones, the released
FLA-Net's own requirements for ``flanet``), so it imports nothing of usvjax: the benchmark
starts it with ``--reference_python`` (default: its own interpreter) and talks to it over
stdin/stdout, one JSON object per line:

  {"build": CASE, "mode": "inference"|"training", "size": S, "batch": B, "clip_length": T,
   "threads": N, "release": DIR}  ->  {"built": true} or {"error": "..."}
  {"run": true}                   ->  {"seconds": wall time of one call}

CASE is a torchvision ResNet (``resnet50``) or a timm Res2Net (``res2net50_26w_4s``): the
trunk up to stride 32, eval mode for inference; a training call is forward in train mode,
the loss mean(features^2), backward and an SGD step (momentum 0.9). ``flanet`` is the
released FLA-Net built from the release folder DIR as its ``train_w_hm.py`` builds it,
on B clips of T frames; a training call is forward, BCE of the segmentation plus the MSE of
the heatmap against fixed targets, backward and an Adam step (the release's optimizer).
Weights and inputs are random (the speed does not depend on their values).
"""
import json
import sys
import time

import torch


def _backbone(arch: str) -> tuple[torch.nn.Module, object]:
  """(model, function from images to its stride-32 features)."""
  if arch.startswith('res2net'):
    import timm  # pylint: disable=g-import-not-at-top
    model = timm.create_model(arch, pretrained=False)
    return model, model.forward_features
  import torchvision  # pylint: disable=g-import-not-at-top
  model = getattr(torchvision.models, arch)(weights=None)
  trunk = torch.nn.Sequential(*list(model.children())[:-2])
  return trunk, trunk


def _released_flanet(release: str) -> torch.nn.Module:
  sys.path.insert(0, release)
  import segmentation_models_pytorch as smp  # pylint: disable=g-import-not-at-top
  return smp.create_model(arch='Unet', encoder_name='timm-res2net50_26w_4s',
                          encoder_weights=None, in_channels=3, classes=1)


def build(request: dict):
  """The function one timed call runs, for the request's case and mode."""
  torch.set_num_threads(request['threads'])
  torch.manual_seed(0)
  size, batch, training = request['size'], request['batch'], request['mode'] == 'training'
  if request['build'] == 'flanet':
    model = _released_flanet(request['release'])
    inputs = torch.rand(batch, request['clip_length'], 3, size, size)
    masks = (torch.rand(batch, 1, size, size) > 0.5).float()

    def loss_of(outputs):
      segmentation, (heatmap,) = outputs
      return (torch.nn.functional.binary_cross_entropy_with_logits(segmentation, masks) +
              torch.nn.functional.mse_loss(heatmap, masks))
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    forward = model
  else:
    model, forward = _backbone(request['build'])
    inputs = torch.rand(batch, 3, size, size)
    loss_of = lambda features: features.pow(2).mean()
    optimizer = torch.optim.SGD(model.parameters(), 1e-3, momentum=0.9)
  model.train(training)
  if not training:
    def infer():
      with torch.no_grad():
        forward(inputs)
    return infer

  def train_step():
    optimizer.zero_grad(set_to_none=True)
    loss_of(forward(inputs)).backward()
    optimizer.step()
  return train_step


def main() -> None:
  call = None
  for line in sys.stdin:
    request = json.loads(line)
    try:
      if 'build' in request:
        call = build(request)
        reply = {'built': True}
      else:
        start = time.perf_counter()
        call()
        reply = {'seconds': time.perf_counter() - start}
    except Exception as e:  # pylint: disable=broad-except  # Reported to the benchmark.
      reply = {'error': f'{type(e).__name__}: {e}'}
    print(json.dumps(reply), flush=True)


if __name__ == '__main__':
  main()
