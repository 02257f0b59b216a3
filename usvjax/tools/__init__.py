"""Single-video tools: segment_video and classify_video."""
