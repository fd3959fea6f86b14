"""halitool: train, inspect and evaluate hierarchical adversarially learned inference (HALI) models."""

__version__ = "0.1.0"
