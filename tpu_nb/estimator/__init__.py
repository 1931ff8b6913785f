"""The public estimator layer: the classes and functions a TPUEstimator program calls.

``tpu_estimator`` (TPUEstimator and the plain Estimator), ``train_eval`` (train_and_evaluate,
TrainSpec, EvalSpec), ``exporters`` (Latest/Best/FinalExporter) and ``frames`` (predictions as
DataFrames, padding removed). ``tpu_nb/__init__.py`` re-exports the public names.

May import every engine layer (``run`` and below); the notebook, drop-in and self-check layers sit
above it.
"""
