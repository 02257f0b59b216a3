"""usvjax: breast-ultrasound video segmentation and classification in JAX/Flax."""
