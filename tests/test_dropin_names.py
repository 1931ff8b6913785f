"""The drop-in estimator modules: every public name the original modules had resolves in tpu_nb.

``tpu_nb.dropin.original_names`` lists the names of tf.compat.v1.estimator, tf.estimator and the
tensorflow_estimator module paths programs import (measured on TF 2.15.1 + tensorflow-estimator 2.15).
A name resolves to tpu_nb's implementation, to TensorFlow's own class, or to a stand-in that refuses on
use with an error naming it and what to do instead; never to an AttributeError.
"""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import tpu_nb
from tpu_nb.dropin import EstimatorFeatureNotSupportedError, ORIGINAL_NAMES
from tpu_nb.dropin import names as dropin_names
from tpu_nb.dropin import v1 as tf_estimator
from tpu_nb.dropin import v2 as tf_estimator_v2
from tpu_nb.dropin.modules import stand_in_modules

ALL_NAMES = sorted((path, name) for path, names in ORIGINAL_NAMES.items() for name in names)


def _refuses(value) -> bool:
    return isinstance(value, type) and hasattr(value, "_tpu_nb_message") and "_tpu_nb_message" in vars(value)


def test_name_list_covers_the_modules_programs_import():
    expected = {"tensorflow.compat.v1.estimator", "tensorflow.compat.v1.estimator.tpu",
                "tensorflow.compat.v1.estimator.tpu.experimental", "tensorflow.compat.v1.estimator.export",
                "tensorflow.compat.v1.estimator.inputs", "tensorflow.compat.v1.estimator.experimental",
                "tensorflow.estimator", "tensorflow.estimator.export", "tensorflow.estimator.experimental"}
    expected |= {"tensorflow_estimator.python.estimator." + m for m in (
        "tpu.tpu_estimator", "tpu.tpu_config", "export.export", "export.export_output", "model_fn",
        "run_config", "estimator", "training", "exporter", "mode_keys", "inputs.numpy_io")}
    assert expected <= set(ORIGINAL_NAMES)
    assert len(ALL_NAMES) > 300


@pytest.mark.parametrize("path", sorted(ORIGINAL_NAMES))
def test_every_original_name_resolves_in_its_module(path):
    module = stand_in_modules()[path]
    assert module.__name__ == path
    for name in ORIGINAL_NAMES[path]:
        value = getattr(module, name)  # no AttributeError for a name the original had
        assert value is getattr(module, name), f"{path}.{name} must be the same object on every access"
        assert name in dir(module)


def test_refused_names_are_exactly_the_unsupported_features():
    refused = {name for path, name in ALL_NAMES if _refuses(getattr(stand_in_modules()[path], name))}
    # What programs use daily must be real, not refused.
    for name in ("TPUEstimator", "TPUEstimatorSpec", "RunConfig", "TPUConfig", "InputPipelineConfig",
                 "Estimator", "EstimatorSpec", "ModeKeys", "ServingInputReceiver", "PredictOutput",
                 "SessionRunHook", "LoggingTensorHook", "StopAtStepHook", "NanLossDuringTrainingError",
                 "VocabInfo", "WarmStartSettings", "numpy_input_fn", "pandas_input_fn",
                 "build_raw_serving_input_receiver_fn", "build_parsing_serving_input_receiver_fn"):
        assert name not in refused, name
    for name in ("DNNClassifier", "LinearRegressor", "BinaryClassHead", "EmbeddingConfigSpec", "AdamParameters"):
        assert name in refused, name


@pytest.mark.parametrize("path,name", [(p, n) for p, n in ALL_NAMES
                                       if n in dropin_names.REFUSED or n not in dropin_names.IMPLEMENTED])
def test_every_refused_name_says_what_it_was_and_what_to_do(path, name):
    value = getattr(stand_in_modules()[path], name)
    if not _refuses(value):
        return  # implemented after all (train_and_evaluate and its classes, when present)
    for use in (lambda: value(), lambda: value(1, key=2), lambda: value.some_field):
        with pytest.raises(EstimatorFeatureNotSupportedError) as caught:
            use()
        message = str(caught.value)
        assert f"{path}.{name}" in message and "Instead:" in message
    assert isinstance(EstimatorFeatureNotSupportedError("x"), NotImplementedError)
    assert not isinstance(object(), value)  # isinstance checks against it keep working


def test_names_resolve_to_tpu_nb_and_to_tensorflow_classes():
    assert tf_estimator.tpu.TPUEstimator is tpu_nb.TPUEstimator
    assert tf_estimator.tpu.RunConfig is tf_estimator.RunConfig is tpu_nb.RunConfig
    assert tf_estimator.tpu.InputPipelineConfig.PER_HOST_V2 == 3
    assert tf_estimator.ModeKeys.TRAIN == "train" and tf_estimator.ModeKeys.PREDICT == "infer"
    assert tf_estimator.Estimator is tf_estimator_v2.Estimator is tpu_nb.Estimator
    assert tf_estimator.export.ServingInputReceiver is tpu_nb.ServingInputReceiver
    assert tf_estimator.inputs.numpy_input_fn is tpu_nb.numpy_input_fn
    # The original re-exported TensorFlow's hooks: a hook subclassing either one is the same class.
    for name in ("SessionRunHook", "CheckpointSaverListener", "LoggingTensorHook", "NanLossDuringTrainingError",
                 "VocabInfo", "SecondOrStepTimer"):
        assert getattr(tf_estimator, name) is getattr(tf.compat.v1.train, name)
    modules = stand_in_modules()
    tpu_estimator = modules["tensorflow_estimator.python.estimator.tpu.tpu_estimator"]
    assert tpu_estimator.TPUEstimatorSpec is tpu_nb.TPUEstimatorSpec
    assert tpu_estimator.ExportSavedModelApiVersion is tpu_nb.ExportSavedModelApiVersion
    assert modules["tensorflow_estimator.python.estimator.export.export_output"].PredictOutput is tpu_nb.PredictOutput
    assert modules["tensorflow_estimator.python.estimator.model_fn"].EstimatorSpec is tpu_nb.EstimatorSpec
    assert modules["tensorflow_estimator.python.estimator.run_config"].TaskType.EVALUATOR == "evaluator"
    assert modules["tensorflow_estimator"].estimator is tf_estimator  # tensorflow_estimator.estimator: the v1 API


def test_submodules_import_from_the_one_line_replacement():
    from tpu_nb.dropin.v1 import tpu
    from tpu_nb.dropin.v1.tpu import TPUEstimator
    from tpu_nb.dropin.v2.export import PredictOutput

    assert tpu is tf_estimator.tpu and TPUEstimator is tpu_nb.TPUEstimator and PredictOutput is tpu_nb.PredictOutput


def test_a_name_the_original_did_not_have_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="tensorflow.compat.v1.estimator' has no attribute 'NoSuchEstimator'"):
        tf_estimator.NoSuchEstimator
    assert not hasattr(tf_estimator_v2, "tpu")  # tf.estimator (v2) had no tpu submodule either


def test_pandas_input_fn_feeds_columns_and_labels():
    frame = pd.DataFrame({"a": np.arange(6, dtype=np.float32), "b": np.arange(6, dtype=np.int64) * 10})
    input_fn = tf_estimator.inputs.pandas_input_fn(frame, pd.Series(np.arange(6) % 2), batch_size=4,
                                                   num_epochs=1, shuffle=False)
    with tf.Graph().as_default():
        features, labels = input_fn()
        with tf.compat.v1.Session() as session:
            first = session.run((features, labels))
    np.testing.assert_array_equal(first[0]["a"], [0, 1, 2, 3])
    np.testing.assert_array_equal(first[0]["b"], [0, 10, 20, 30])
    np.testing.assert_array_equal(first[1], [0, 1, 0, 1])
    with pytest.raises(TypeError, match="DataFrame.*numpy_input_fn"):
        tf_estimator.inputs.pandas_input_fn(np.zeros([3, 2]), shuffle=False)
    with pytest.raises(ValueError, match="shuffle"):
        tf_estimator.inputs.pandas_input_fn(frame)
