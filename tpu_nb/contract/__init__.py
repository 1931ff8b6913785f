"""The contract's data: what a TPUEstimator program hands the engine, and the checks on it.

``spec`` (TPUEstimatorSpec, EstimatorSpec, serving receivers), ``config`` (RunConfig, TPUConfig,
InputPipelineConfig), ``modes`` (ModeKeys), ``warm_start`` (WarmStartSettings) and ``signatures``
(what a model_fn or input_fn accepts, and the errors that say so).

The bottom layer: imports TensorFlow and nothing else of tpu_nb's.
"""
