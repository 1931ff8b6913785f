"""What each public name of the original estimator modules resolves to in tpu_nb's stand-in modules.

Three kinds of answers, decided here by name (the same name means the same thing in every module that
had it, e.g. ``Estimator`` in ``tf.compat.v1.estimator`` and in ``tensorflow_estimator.python.estimator.estimator``):

* tpu_nb's implementation (``TPUEstimator``, ``RunConfig``, ``export.ServingInputReceiver``...);
* TensorFlow's own object where the original re-exported one (the SessionRunHook family,
  ``NanLossDuringTrainingError``, ``VocabInfo``, the export output classes);
* a refusing stand-in (``unsupported.refusing_stand_in``) for canned estimators and heads, TPU embedding,
  and the original's internal helpers: using it raises an error naming the feature and what to do instead.
"""

import importlib
import importlib.util

from .unsupported import refusing_stand_in


def _attr(module: str, name: str):
    return lambda: getattr(importlib.import_module(module), name)


def _value(value):
    return lambda: value


_TPU_NB = "tpu_nb"
_TRAIN = "tensorflow.compat.v1.train"
_EXPORT_OUTPUT = "tensorflow.python.saved_model.model_utils.export_output"
_EXPORT_UTILS = "tensorflow.python.saved_model.model_utils.export_utils"

# name -> a function returning the object (imported on first use: a stand-in module costs nothing to build).
IMPLEMENTED = {}
for _name in ("Estimator", "TPUEstimator", "TPUEstimatorSpec", "EstimatorSpec", "RunConfig", "TPUConfig",
              "InputPipelineConfig", "ModeKeys", "WarmStartSettings", "ServingInputReceiver",
              "TensorServingInputReceiver", "SupervisedInputReceiver", "build_parsing_serving_input_receiver_fn",
              "build_raw_serving_input_receiver_fn", "build_raw_supervised_input_receiver_fn", "numpy_input_fn",
              "ClassificationOutput", "PredictOutput", "RegressionOutput", "ExportSavedModelApiVersion",
              "EXPORT_TAG_MAP"):
    IMPLEMENTED[_name] = _attr(_TPU_NB, _name)
IMPLEMENTED.update({
    # The original's names for the same classes.
    "EstimatorV2": _attr(_TPU_NB, "Estimator"),
    "UnsupervisedInputReceiver": _attr(_TPU_NB, "ServingInputReceiver"),
    "TPUContext": _attr("tpu_nb.inputs.sharded_inputs", "InputContext"),
    "pandas_input_fn": _attr("tpu_nb.dropin.pandas_inputs", "pandas_input_fn"),
    "export_estimator_savedmodel": _attr("tpu_nb.dropin.tpu_export", "export_estimator_savedmodel"),
    "parse_iterations_per_loop": _attr("tpu_nb.contract.config", "parse_iterations_per_loop"),
    "IterationsPerLoopCounter": _attr("tpu_nb.contract.config", "IterationsPerLoop"),
    "TaskType": _attr("tpu_nb.dropin.run_config_names", "TaskType"),
    "get_default_session_config": _attr("tpu_nb.dropin.run_config_names", "get_default_session_config"),
    # Export outputs and signature helpers the original re-exported from TensorFlow.
    "ExportOutput": _attr(_EXPORT_OUTPUT, "ExportOutput"),
    "EvalOutput": _attr(_EXPORT_OUTPUT, "EvalOutput"),
    "TrainOutput": _attr(_EXPORT_OUTPUT, "TrainOutput"),
    "SIGNATURE_KEY_MAP": _attr(_EXPORT_UTILS, "SIGNATURE_KEY_MAP"),
    "build_all_signature_defs": _attr(_EXPORT_UTILS, "build_all_signature_defs"),
    "export_outputs_for_mode": _attr(_EXPORT_UTILS, "export_outputs_for_mode"),
    "get_export_outputs": _attr(_EXPORT_UTILS, "get_export_outputs"),
    "get_temp_export_dir": _attr(_EXPORT_UTILS, "get_temp_export_dir"),
    "get_timestamped_export_dir": _attr(_EXPORT_UTILS, "get_timestamped_export_dir"),
    "fn_args": _attr("tensorflow.python.util.function_utils", "fn_args"),
    "Summary": _attr("tensorflow.core.framework.summary_pb2", "Summary"),
    "VocabInfo": _attr(_TRAIN, "VocabInfo"),
    # Keras 2 as the original's util module offered it to its tests.
    "tf_keras": lambda: importlib.import_module("tf_keras"),
    "tf_keras_v1": lambda: importlib.import_module("tf_keras.api._v1.keras"),
    "tf_keras_v2": lambda: importlib.import_module("tf_keras.api._v2.keras"),
    # Constants: the keys exported signatures and metrics use.
    "SINGLE_FEATURE_DEFAULT_NAME": _value("feature"),
    "SINGLE_LABEL_DEFAULT_NAME": _value("label"),
    "SINGLE_RECEIVER_DEFAULT_NAME": _value("input"),
    "LOSS_METRIC_KEY": _value("loss"),
    "AVERAGE_LOSS_METRIC_KEY": _value("average_loss"),
    "HAS_PANDAS": lambda: importlib.util.find_spec("pandas") is not None,
    "string_types": _value((str,)),
    "xrange": _value(range),
})
# The SessionRunHook family: TensorFlow's own classes, as the original re-exported them.
for _name in ("SessionRunHook", "SessionRunArgs", "SessionRunContext", "SessionRunValues", "CheckpointSaverHook",
              "CheckpointSaverListener", "FeedFnHook", "FinalOpsHook", "GlobalStepWaiterHook", "LoggingTensorHook",
              "NanLossDuringTrainingError", "NanTensorHook", "ProfilerHook", "SecondOrStepTimer", "StepCounterHook",
              "StopAtStepHook", "SummarySaverHook"):
    IMPLEMENTED[_name] = _attr(_TRAIN, _name)

# train_and_evaluate, its specs and the exporters.
for _name in ("train_and_evaluate", "TrainSpec", "EvalSpec"):
    IMPLEMENTED[_name] = _attr("tpu_nb.estimator.train_eval", _name)
for _name in ("Exporter", "LatestExporter", "BestExporter", "FinalExporter"):
    IMPLEMENTED[_name] = _attr("tpu_nb.estimator.exporters", _name)

_CANNED = ("canned estimators and heads",
           "write a model_fn (a few tf_keras layers, a loss, an optimizer) and use tpu_nb.Estimator or "
           "tpu_nb.TPUEstimator; see README 'Migrating a TPUEstimator script'.")
_EMBEDDING = ("TPU embedding",
              "keep embedding tables as ordinary variables in model_fn (tf.nn.embedding_lookup); they are "
              "replicated on every shard.")
_EARLY_STOPPING = ("early-stopping and evaluator hooks",
                   "train in chunks with estimator.train(steps=N), call estimator.evaluate() after each and stop "
                   "when its metrics stop improving.")
_KERAS = ("Keras model to Estimator conversion",
          "call the Keras 2 model inside a model_fn (logits = model(features, training=...)).")
_ADD_METRICS = ("add_metrics",
                "add the metrics in model_fn: EstimatorSpec(eval_metric_ops=...) or "
                "TPUEstimatorSpec(eval_metrics=...).")

REFUSED = {}
for _name in ("BaselineClassifier", "BaselineEstimator", "BaselineRegressor", "DNNClassifier", "DNNEstimator",
              "DNNLinearCombinedClassifier", "DNNLinearCombinedEstimator", "DNNLinearCombinedRegressor",
              "DNNRegressor", "LinearClassifier", "LinearEstimator", "LinearRegressor", "LinearSDCA", "KMeans",
              "KMeansClustering", "RNNClassifier", "RNNEstimator", "Head", "BinaryClassHead",
              "LogisticRegressionHead", "MultiClassHead", "MultiHead", "MultiLabelHead", "PoissonRegressionHead",
              "RegressionHead", "classifier_parse_example_spec", "regressor_parse_example_spec", "call_logit_fn",
              "dnn_logit_fn_builder", "linear_logit_fn_builder"):
    REFUSED[_name] = _CANNED
for _name in ("EmbeddingConfigSpec", "AdagradParameters", "AdamParameters", "StochasticGradientDescentParameters"):
    REFUSED[_name] = _EMBEDDING
for _name in ("make_early_stopping_hook", "stop_if_higher_hook", "stop_if_lower_hook", "stop_if_no_decrease_hook",
              "stop_if_no_increase_hook", "read_eval_metrics", "InMemoryEvaluatorHook",
              "make_stop_at_checkpoint_step_hook"):
    REFUSED[_name] = _EARLY_STOPPING
REFUSED["model_to_estimator"] = _KERAS
REFUSED["add_metrics"] = _ADD_METRICS

# Everything else the original's module files held was their own machinery (infeed hooks, enqueue-op
# generators, export helpers...), public by spelling only.
_INTERNAL = ("an internal helper of the original's implementation",
             "use the public estimator API (TPUEstimator, TPUEstimatorSpec, RunConfig, export_saved_model); "
             "tpu_nb does the same work its own way and has no equivalent of this helper.")


def resolve(module_path: str, name: str):
    """The object ``name`` of the stand-in for ``module_path`` (the original's dotted module name)."""
    if name in IMPLEMENTED:
        return IMPLEMENTED[name]()
    full_name = f"{module_path}.{name}"
    feature, instead = REFUSED.get(name, _INTERNAL)
    return refusing_stand_in(full_name, feature, instead)

# Module-level knobs of the original that its own test files read and restore (tpu_nb ignores them: its
# input pipeline always runs inside the device loop). Set as plain attributes of the stand-in module.
PRIVATE_KNOBS = {
    "tensorflow_estimator.python.estimator.tpu.tpu_estimator": {"_WRAP_INPUT_FN_INTO_WHILE_LOOP": False},
}

# Private functions of the original that published programs call (tensorflow/tpu's EfficientNet, MnasNet...
# resume their schedules with estimator._load_global_step_from_checkpoint_dir(model_dir)).
PRIVATE_FUNCTIONS = {
    "tensorflow_estimator.python.estimator.estimator": {
        "_load_global_step_from_checkpoint_dir": _attr("tpu_nb.run.training", "checkpointed_step"),
    },
}
