"""Shared fixtures for the black-box contract tests of tpu_nb's unsharded path.

Everything here is written the way a user of the original
``tf.compat.v1.estimator.tpu.TPUEstimator`` would write it; only the import of the
estimator classes changes (``import tpu_nb``).
"""
import glob
import os
import re
import signal
import sys

# Make the package importable from a plain checkout (`pytest` run from anywhere).
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

# TPU_NB_TEST_BEHAVIOR=tf1 runs the suite the way most TPUEstimator programs start:
# tf.compat.v1.disable_v2_behavior() before anything else (RefVariables, control flow v1,
# TensorShape dims as Dimension objects). 'no_eager' disables eager execution alone.
_BEHAVIOR = os.environ.get("TPU_NB_TEST_BEHAVIOR", "tf2")
if _BEHAVIOR == "tf1":
    tf.compat.v1.disable_v2_behavior()
elif _BEHAVIOR == "no_eager":
    tf.compat.v1.disable_eager_execution()
elif _BEHAVIOR != "tf2":
    raise ValueError(f"TPU_NB_TEST_BEHAVIOR must be tf2, tf1 or no_eager, got {_BEHAVIOR!r}")

import tf_keras

NUM_FEATURES = 784
NUM_CLASSES = 10
NUM_TRAIN = 2000
NUM_EVAL = 1003
HIDDEN = 64


# --------------------------------------------------------------------------- data


class MnistLike:
    """A deterministic MNIST-shaped problem: 784 float32 features, 10 classes.

    Each class has its own gaussian mean; the means are far enough apart that the
    784-64-10 MLP reaches about 99% held-out accuracy after 300 Adam steps of 32.
    """

    def __init__(self, seed=20261125, scale=0.25):
        rng = np.random.RandomState(seed)
        means = rng.normal(0.0, 1.0, (NUM_CLASSES, NUM_FEATURES)).astype(np.float32)

        def sample(n):
            y = rng.randint(0, NUM_CLASSES, n).astype(np.int32)
            x = (scale * means[y] + rng.normal(0.0, 1.0, (n, NUM_FEATURES))).astype(np.float32)
            return x, y

        self.train_x, self.train_y = sample(NUM_TRAIN)
        self.eval_x, self.eval_y = sample(NUM_EVAL)


@pytest.fixture(scope="session")
def mnist_data():
    return MnistLike()


# --------------------------------------------------------------------------- model


def _accuracy_metric_fn(labels, logits):
    return {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}


def _accuracy_and_count_metric_fn(labels, logits):
    # 'examples' counts how many examples the evaluation consumed.
    ones = tf.ones_like(labels, dtype=tf.bool)
    return {
        "accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1)),
        "examples": tf.compat.v1.metrics.true_positives(labels=ones, predictions=ones),
    }


def make_model_fn(
    signature="full",
    metrics_form="list",
    count_examples=False,
    learning_rate=1e-3,
    cross_shard=False,
    host_call=None,
    scaffold_fn=None,
    calls=None,
):
    """Builds a 784-64-10 MLP model_fn returning a TPUEstimatorSpec.

    signature: 'full' -> (features, labels, mode, config, params),
               'params' -> (features, labels, mode, params),
               'minimal' -> (features, labels, mode).
    metrics_form: 'list' -> eval_metrics=(metric_fn, [labels, logits]),
                  'dict' -> eval_metrics=(metric_fn, {'labels':..., 'logits':...}),
                  None -> no eval_metrics.
    host_call: None, or a function (loss, global_step) -> (fn, tensors) used in TRAIN.
    scaffold_fn: passed through unchanged in every mode.
    calls: if a list, each model_fn call appends (mode, params-without-context).
    """
    import tpu_nb

    metric_fn = _accuracy_and_count_metric_fn if count_examples else _accuracy_metric_fn

    def body(features, labels, mode, params):
        if calls is not None:
            calls.append((mode, {k: v for k, v in (params or {}).items() if k != "context"}))
        x = features["x"]
        hidden = tf_keras.layers.Dense(
            HIDDEN,
            activation="relu",
            name="hidden",
            kernel_initializer=tf_keras.initializers.GlorotUniform(seed=1),
        )(x)
        logits = tf_keras.layers.Dense(
            NUM_CLASSES,
            name="logits",
            kernel_initializer=tf_keras.initializers.GlorotUniform(seed=2),
        )(hidden)

        if mode == tpu_nb.ModeKeys.PREDICT:
            predictions = {
                "class_ids": tf.argmax(logits, 1),
                "probabilities": tf.nn.softmax(logits),
            }
            if "index" in features:
                predictions["index"] = features["index"]
            return tpu_nb.TPUEstimatorSpec(mode=mode, predictions=predictions, scaffold_fn=scaffold_fn)

        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        )

        if mode == tpu_nb.ModeKeys.EVAL:
            if metrics_form == "list":
                eval_metrics = (metric_fn, [labels, logits])
            elif metrics_form == "dict":
                eval_metrics = (metric_fn, {"labels": labels, "logits": logits})
            else:
                eval_metrics = None
            return tpu_nb.TPUEstimatorSpec(
                mode=mode, loss=loss, eval_metrics=eval_metrics, scaffold_fn=scaffold_fn
            )

        optimizer = tf.compat.v1.train.AdamOptimizer(learning_rate)
        if cross_shard:
            optimizer = tpu_nb.CrossShardOptimizer(optimizer)
        global_step = tf.compat.v1.train.get_global_step()
        train_op = optimizer.minimize(loss, global_step=global_step)
        spec_host_call = host_call(loss, global_step) if host_call is not None else None
        return tpu_nb.TPUEstimatorSpec(
            mode=mode,
            loss=loss,
            train_op=train_op,
            host_call=spec_host_call,
            scaffold_fn=scaffold_fn,
        )

    if signature == "full":

        def model_fn(features, labels, mode, config, params):
            return body(features, labels, mode, params)

    elif signature == "params":

        def model_fn(features, labels, mode, params):
            return body(features, labels, mode, params)

    elif signature == "minimal":

        def model_fn(features, labels, mode):
            return body(features, labels, mode, None)

    else:
        raise ValueError(signature)
    return model_fn


# --------------------------------------------------------------------------- input_fns


def make_train_input_fn(x, y, shuffle=True, repeat=True, calls=None):
    def input_fn(params):
        batch_size = params["batch_size"]
        if calls is not None:
            calls.append(("train", batch_size))
        ds = tf.data.Dataset.from_tensor_slices(({"x": x}, y))
        if shuffle:
            ds = ds.shuffle(len(x), seed=7)
        if repeat:
            ds = ds.repeat()
        return ds.batch(batch_size, drop_remainder=True)

    return input_fn


def make_eval_input_fn(x, y, calls=None):
    """One pass over (x, y); the last batch may be short."""

    def input_fn(params):
        batch_size = params["batch_size"]
        if calls is not None:
            calls.append(("eval", batch_size))
        ds = tf.data.Dataset.from_tensor_slices(({"x": x}, y))
        return ds.batch(batch_size)

    return input_fn


def make_predict_input_fn(x, with_index=True, calls=None):
    """Features only; 'index' carries each example's position through the model."""

    def input_fn(params):
        batch_size = params["batch_size"]
        if calls is not None:
            calls.append(("predict", batch_size))
        features = {"x": x}
        if with_index:
            features["index"] = np.arange(len(x), dtype=np.int32)
        return tf.data.Dataset.from_tensor_slices(features).batch(batch_size)

    return input_fn


def serving_input_receiver_fn():
    import tpu_nb

    x = tf.compat.v1.placeholder(tf.float32, [None, NUM_FEATURES], name="x")
    return tpu_nb.ServingInputReceiver({"x": x}, {"x": x})


# --------------------------------------------------------------------------- helpers


def numpy_forward(est, x):
    """Softmax probabilities of the MLP computed in numpy from est's checkpoint."""
    w1 = est.get_variable_value(find_variable(est, "hidden/kernel"))
    b1 = est.get_variable_value(find_variable(est, "hidden/bias"))
    w2 = est.get_variable_value(find_variable(est, "logits/kernel"))
    b2 = est.get_variable_value(find_variable(est, "logits/bias"))
    h = np.maximum(x.astype(np.float64) @ w1 + b1, 0.0)
    logits = h @ w2 + b2
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def find_variable(est, suffix):
    """The checkpointed model variable whose name ends with `suffix` (not a slot)."""
    names = [
        n
        for n in est.get_variable_names()
        if (n == suffix or n.endswith("/" + suffix)) and "Adam" not in n
    ]
    assert len(names) == 1, (suffix, est.get_variable_names())
    return names[0]


def checkpoint_steps(model_dir):
    """Global steps of the checkpoints present on disk in model_dir."""
    steps = set()
    for path in glob.glob(os.path.join(model_dir, "model.ckpt-*.index")):
        m = re.search(r"model\.ckpt-(\d+)\.index$", path)
        if m:
            steps.add(int(m.group(1)))
    return steps


class StepRecorder(tf.compat.v1.train.SessionRunHook):
    """Records the global step after every session run the estimator makes."""

    def __init__(self):
        self.steps = []
        self.fetched = []

    def begin(self):
        self._global_step = tf.compat.v1.train.get_global_step()
        assert self._global_step is not None

    def before_run(self, run_context):
        return tf.compat.v1.train.SessionRunArgs(self._global_step)

    def after_run(self, run_context, run_values):
        self.fetched.append(int(run_values.results))
        self.steps.append(int(run_context.session.run(self._global_step)))


@pytest.fixture
def sigint_handler():
    """Sets SIGINT's handler for one test (call it with the handler) and restores the inherited one after.

    What a test process inherits depends on how the suite was started: Python's default_int_handler from an
    interactive shell, SIG_IGN from a background job of a shell without job control.
    """
    inherited = signal.getsignal(signal.SIGINT)
    yield lambda handler: signal.signal(signal.SIGINT, handler)
    # None: a handler installed outside Python, which cannot be put back; the default is the nearest.
    signal.signal(signal.SIGINT, inherited if inherited is not None else signal.SIG_DFL)


@pytest.fixture
def tmp_model_dir(tmp_path):
    d = tmp_path / "model_dir"
    d.mkdir()
    return str(d)


# The notebook layer's tests (widgets, magics, kernels, browsers): CI runs them under TF1 behaviour too,
# in a pass of their own (-m "notebook and not kernel").
_NOTEBOOK_TEST_FILES = ("test_notebook", "test_browser", "test_batch_widget", "test_connection_widget",
                        "test_eval_dashboard", "test_notebooks")
# Tests that start their own kernel (and browser). The kernel is a fresh process that this file's
# TPU_NB_TEST_BEHAVIOR switch never reaches: its behaviour is whatever the notebook sets, so running
# them again under another setting repeats the same run (test_notebook_tf1 sets TF1 in the notebook).
_KERNEL_TEST_FILES = ("test_browser", "test_notebook_kernel", "test_notebook_tf1", "test_notebooks")


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = os.path.basename(str(item.fspath))
        if name.startswith(_NOTEBOOK_TEST_FILES):
            item.add_marker(pytest.mark.notebook)
        if name.startswith(_KERNEL_TEST_FILES):
            item.add_marker(pytest.mark.kernel)

