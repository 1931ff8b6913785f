"""Public names of the original estimator modules (TF 2.15.1 + tensorflow-estimator 2.15.0).

Plain data, listed by running ``dir()`` over each module in a virtual environment with the original
installed (names without a leading underscore; for the ``tensorflow_estimator.python.estimator`` files,
the classes, functions and constants they held, not the modules they imported). Tests check that every
name resolves in tpu_nb's stand-in modules; ``names.py`` says what each resolves to.
"""

ORIGINAL_NAMES = {
    "tensorflow.compat.v1.estimator": (
        "BaselineClassifier", "BaselineEstimator", "BaselineRegressor", "BestExporter", "BinaryClassHead",
        "CheckpointSaverHook", "CheckpointSaverListener", "DNNClassifier", "DNNEstimator",
        "DNNLinearCombinedClassifier", "DNNLinearCombinedEstimator", "DNNLinearCombinedRegressor",
        "DNNRegressor", "Estimator", "EstimatorSpec", "EvalSpec", "Exporter", "FeedFnHook", "FinalExporter",
        "FinalOpsHook", "GlobalStepWaiterHook", "Head", "LatestExporter", "LinearClassifier",
        "LinearEstimator", "LinearRegressor", "LoggingTensorHook", "LogisticRegressionHead", "ModeKeys",
        "MultiClassHead", "MultiHead", "MultiLabelHead", "NanLossDuringTrainingError", "NanTensorHook",
        "PoissonRegressionHead", "ProfilerHook", "RegressionHead", "RunConfig", "SecondOrStepTimer",
        "SessionRunArgs", "SessionRunContext", "SessionRunHook", "SessionRunValues", "StepCounterHook",
        "StopAtStepHook", "SummarySaverHook", "TrainSpec", "VocabInfo", "WarmStartSettings", "add_metrics",
        "classifier_parse_example_spec", "regressor_parse_example_spec", "train_and_evaluate",
    ),
    "tensorflow.compat.v1.estimator.experimental": (
        "InMemoryEvaluatorHook", "KMeans", "LinearSDCA", "build_raw_supervised_input_receiver_fn",
        "call_logit_fn", "dnn_logit_fn_builder", "linear_logit_fn_builder", "make_early_stopping_hook",
        "make_stop_at_checkpoint_step_hook", "stop_if_higher_hook", "stop_if_lower_hook",
        "stop_if_no_decrease_hook", "stop_if_no_increase_hook",
    ),
    "tensorflow.compat.v1.estimator.export": (
        "ClassificationOutput", "EvalOutput", "ExportOutput", "PredictOutput", "RegressionOutput",
        "ServingInputReceiver", "TensorServingInputReceiver", "build_parsing_serving_input_receiver_fn",
        "build_raw_serving_input_receiver_fn",
    ),
    "tensorflow.compat.v1.estimator.inputs": (
        "numpy_input_fn", "pandas_input_fn",
    ),
    "tensorflow.compat.v1.estimator.tpu": (
        "InputPipelineConfig", "RunConfig", "TPUConfig", "TPUEstimator", "TPUEstimatorSpec",
    ),
    "tensorflow.compat.v1.estimator.tpu.experimental": (
        "EmbeddingConfigSpec",
    ),
    "tensorflow.estimator": (
        "BaselineClassifier", "BaselineEstimator", "BaselineRegressor", "BestExporter", "BinaryClassHead",
        "CheckpointSaverHook", "CheckpointSaverListener", "DNNClassifier", "DNNEstimator",
        "DNNLinearCombinedClassifier", "DNNLinearCombinedEstimator", "DNNLinearCombinedRegressor",
        "DNNRegressor", "Estimator", "EstimatorSpec", "EvalSpec", "Exporter", "FeedFnHook", "FinalExporter",
        "FinalOpsHook", "GlobalStepWaiterHook", "Head", "LatestExporter", "LinearClassifier",
        "LinearEstimator", "LinearRegressor", "LoggingTensorHook", "LogisticRegressionHead", "ModeKeys",
        "MultiClassHead", "MultiHead", "MultiLabelHead", "NanLossDuringTrainingError", "NanTensorHook",
        "PoissonRegressionHead", "ProfilerHook", "RegressionHead", "RunConfig", "SecondOrStepTimer",
        "SessionRunArgs", "SessionRunContext", "SessionRunHook", "SessionRunValues", "StepCounterHook",
        "StopAtStepHook", "SummarySaverHook", "TrainSpec", "VocabInfo", "WarmStartSettings", "add_metrics",
        "classifier_parse_example_spec", "regressor_parse_example_spec", "train_and_evaluate",
    ),
    "tensorflow.estimator.experimental": (
        "InMemoryEvaluatorHook", "LinearSDCA", "RNNClassifier", "RNNEstimator",
        "build_raw_supervised_input_receiver_fn", "call_logit_fn", "make_early_stopping_hook",
        "make_stop_at_checkpoint_step_hook", "stop_if_higher_hook", "stop_if_lower_hook",
        "stop_if_no_decrease_hook", "stop_if_no_increase_hook",
    ),
    "tensorflow.estimator.export": (
        "ClassificationOutput", "EvalOutput", "ExportOutput", "PredictOutput", "RegressionOutput",
        "ServingInputReceiver", "TensorServingInputReceiver", "build_parsing_serving_input_receiver_fn",
        "build_raw_serving_input_receiver_fn",
    ),
    "tensorflow_estimator.python.estimator.early_stopping": (
        "estimator_export", "make_early_stopping_hook", "read_eval_metrics", "stop_if_higher_hook",
        "stop_if_lower_hook", "stop_if_no_decrease_hook", "stop_if_no_increase_hook",
    ),
    "tensorflow_estimator.python.estimator.estimator": (
        "Estimator", "EstimatorV2", "ModeKeys", "VocabInfo", "WarmStartSettings",
        "create_per_replica_ready_for_local_init_op", "estimator_export",
        "maybe_overwrite_model_dir_and_session_config",
    ),
    "tensorflow_estimator.python.estimator.estimator_lib": (
        "BaselineClassifier", "BaselineEstimator", "BaselineRegressor", "BinaryClassHead", "DNNClassifier",
        "DNNEstimator", "DNNLinearCombinedClassifier", "DNNLinearCombinedEstimator",
        "DNNLinearCombinedRegressor", "DNNRegressor", "Estimator", "EstimatorSpec", "EvalSpec", "Exporter",
        "FinalExporter", "Head", "KMeansClustering", "LatestExporter", "LinearClassifier", "LinearEstimator",
        "LinearRegressor", "LogisticRegressionHead", "ModeKeys", "MultiClassHead", "MultiHead",
        "MultiLabelHead", "PoissonRegressionHead", "RNNClassifier", "RNNEstimator", "RegressionHead",
        "RunConfig", "TPUEstimator", "TrainSpec", "VocabInfo", "WarmStartSettings", "add_metrics",
        "call_logit_fn", "classifier_parse_example_spec", "dnn_logit_fn_builder", "estimator_export",
        "linear_logit_fn_builder", "make_early_stopping_hook", "model_to_estimator", "read_eval_metrics",
        "regressor_parse_example_spec", "stop_if_higher_hook", "stop_if_lower_hook",
        "stop_if_no_decrease_hook", "stop_if_no_increase_hook", "train_and_evaluate",
    ),
    "tensorflow_estimator.python.estimator.export.export": (
        "SINGLE_FEATURE_DEFAULT_NAME", "SINGLE_LABEL_DEFAULT_NAME", "SINGLE_RECEIVER_DEFAULT_NAME",
        "ServingInputReceiver", "SupervisedInputReceiver", "TensorServingInputReceiver",
        "UnsupervisedInputReceiver", "build_all_signature_defs", "build_parsing_serving_input_receiver_fn",
        "build_raw_serving_input_receiver_fn", "build_raw_supervised_input_receiver_fn",
        "build_supervised_input_receiver_fn_from_input_fn", "estimator_export", "get_temp_export_dir",
        "get_timestamped_export_dir", "wrap_and_check_input_tensors",
    ),
    "tensorflow_estimator.python.estimator.export.export_lib": (
        "ClassificationOutput", "EXPORT_TAG_MAP", "EvalOutput", "ExportOutput", "PredictOutput",
        "RegressionOutput", "SIGNATURE_KEY_MAP", "ServingInputReceiver", "SupervisedInputReceiver",
        "TensorServingInputReceiver", "TrainOutput", "UnsupervisedInputReceiver", "build_all_signature_defs",
        "build_parsing_serving_input_receiver_fn", "build_raw_serving_input_receiver_fn",
        "build_raw_supervised_input_receiver_fn", "build_supervised_input_receiver_fn_from_input_fn",
        "export_outputs_for_mode", "get_export_outputs", "get_temp_export_dir", "get_timestamped_export_dir",
        "wrap_and_check_input_tensors",
    ),
    "tensorflow_estimator.python.estimator.export.export_output": (
        "ClassificationOutput", "EvalOutput", "ExportOutput", "PredictOutput", "RegressionOutput",
        "TrainOutput", "estimator_export",
    ),
    "tensorflow_estimator.python.estimator.export.function": (
        "EstimatorSpecFunction", "ModeKeys", "ModelFunction",
    ),
    "tensorflow_estimator.python.estimator.exporter": (
        "BestExporter", "Exporter", "FinalExporter", "LatestExporter", "estimator_export",
    ),
    "tensorflow_estimator.python.estimator.extenders": (
        "ModeKeys", "add_metrics", "estimator_export",
    ),
    "tensorflow_estimator.python.estimator.gc": (
        "Path",
    ),
    "tensorflow_estimator.python.estimator.hooks.basic_session_run_hooks": (
        "CheckpointSaverHook", "CheckpointSaverListener", "FeedFnHook", "FinalOpsHook",
        "GlobalStepWaiterHook", "LoggingTensorHook", "NanLossDuringTrainingError", "NanTensorHook",
        "ProfilerHook", "SecondOrStepTimer", "StepCounterHook", "StopAtStepHook", "SummarySaverHook",
        "estimator_export",
    ),
    "tensorflow_estimator.python.estimator.hooks.fake_summary_writer": (
        "FakeSummaryWriter",
    ),
    "tensorflow_estimator.python.estimator.hooks.hooks": (
        "InMemoryEvaluatorHook", "estimator_export", "make_stop_at_checkpoint_step_hook",
    ),
    "tensorflow_estimator.python.estimator.hooks.session_run_hook": (
        "SessionRunArgs", "SessionRunContext", "SessionRunHook", "SessionRunValues", "estimator_export",
    ),
    "tensorflow_estimator.python.estimator.inputs.inputs": (
        "numpy_input_fn", "pandas_input_fn",
    ),
    "tensorflow_estimator.python.estimator.inputs.numpy_io": (
        "estimator_export", "numpy_input_fn", "string_types",
    ),
    "tensorflow_estimator.python.estimator.inputs.pandas_io": (
        "HAS_PANDAS", "estimator_export", "pandas_input_fn",
    ),
    "tensorflow_estimator.python.estimator.mode_keys": (
        "ModeKeys", "estimator_export",
    ),
    "tensorflow_estimator.python.estimator.model_fn": (
        "AVERAGE_LOSS_METRIC_KEY", "EstimatorSpec", "LOSS_METRIC_KEY", "ModeKeys", "call_logit_fn",
        "estimator_export", "verify_model_fn_args",
    ),
    "tensorflow_estimator.python.estimator.run_config": (
        "RunConfig", "TaskType", "estimator_export", "get_default_session_config", "path_to_str",
    ),
    "tensorflow_estimator.python.estimator.tpu.error_handling": (
        "ErrorRendezvous",
    ),
    "tensorflow_estimator.python.estimator.tpu.tpu_config": (
        "InputPipelineConfig", "RunConfig", "TPUConfig", "estimator_export",
    ),
    "tensorflow_estimator.python.estimator.tpu.tpu_context": (
        "TPUContext", "contextmanager",
    ),
    "tensorflow_estimator.python.estimator.tpu.tpu_estimator": (
        "AdagradParameters", "AdamParameters", "BatchConfig", "CatchInvalidHostcallFunctions",
        "EmbeddingConfigSpec", "ExamplesPerSecondHook", "ExportSavedModelApiVersion",
        "InstallSignalHandlerHook", "PeriodicLogger", "StochasticGradientDescentParameters", "Summary",
        "TPUEstimator", "TPUEstimatorSpec", "TPUInfeedOutfeedSessionHook",
        "TPUInfeedOutfeedSessionHookForPrediction", "TensorPacker", "call_computation", "estimator_export",
        "export_estimator_savedmodel", "generate_broadcast_enqueue_ops_fn",
        "generate_per_core_enqueue_ops_fn_for_host", "generate_per_host_enqueue_ops_fn_for_host",
        "generate_per_host_v2_enqueue_ops_fn_for_host", "inference_on_tpu", "model_fn_inference_on_tpu",
        "xrange",
    ),
    "tensorflow_estimator.python.estimator.tpu.util": (
        "IterationsPerLoopCounter", "MultiHostDatasetInitializerHook", "check_positive_integer",
        "parse_iterations_per_loop",
    ),
    "tensorflow_estimator.python.estimator.training": (
        "EvalSpec", "TrainSpec", "estimator_export", "train_and_evaluate",
    ),
    "tensorflow_estimator.python.estimator.util": (
        "DistributedIteratorInitializerHook", "MAX_DIRECTORY_CREATION_ATTEMPTS",
        "MultiHostDatasetInitializerHook", "fn_args", "parse_input_fn_result", "parse_iterator_result",
        "tf_keras", "tf_keras_v1", "tf_keras_v2",
    ),
}
