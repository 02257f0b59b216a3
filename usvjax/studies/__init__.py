"""Studies over many runs: comparisons, cross-validation, robustness, frame sweeps."""
