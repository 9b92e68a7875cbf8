"""Active-learning ML backend for Label Studio: YOLO pre-annotations, scores, queue, retraining.

Importing this package loads no model and downloads nothing.
"""

__version__ = "0.1.0"
