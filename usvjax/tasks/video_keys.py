"""A video's id as the batches carry it (``video_key``: its first ``spec.VIDEO_KEY_BYTES``
bytes, zero-padded uint8), back as text: how host-side evaluations name the videos."""
from __future__ import annotations

import numpy as np

from input_pipeline import spec


def key_text(raw: bytes) -> str:
  """A video id (bytes) as the batches carry it: its first ``spec.VIDEO_KEY_BYTES`` bytes,
  trailing NULs dropped, decoded as UTF-8 (invalid bytes replaced)."""
  return raw[:spec.VIDEO_KEY_BYTES].rstrip(b'\0').decode('utf-8', 'replace')


def decode_key(key: np.ndarray) -> str:
  """A video id from its zero-padded uint8 encoding (see input_pipeline.pipeline)."""
  return key_text(bytes(np.asarray(key, np.uint8)))
