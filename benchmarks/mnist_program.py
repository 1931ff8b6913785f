"""One TPUEstimator program, runnable against the original or tpu_nb (only the imports differ).

Used by ``compare_with_original.py``: MNIST-shaped data (784 features, 10
classes, deterministic), an MLP from raw variables (identical on TF 2.15 and
2.21, no Keras), 300 training steps with iterations_per_loop=50, evaluate
with eval_metrics, predict 1003 examples at predict_batch_size=64, export.
Prints one JSON line with what it measured.
"""

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

IMPL = sys.argv[1] if len(sys.argv) > 1 else "tpu_nb"
if IMPL == "original":
    from tensorflow.compat.v1.estimator import ModeKeys
    from tensorflow.compat.v1.estimator.export import ServingInputReceiver
    from tensorflow.compat.v1.estimator.tpu import RunConfig, TPUConfig, TPUEstimator, TPUEstimatorSpec
else:
    from tpu_nb import ModeKeys, RunConfig, ServingInputReceiver, TPUConfig, TPUEstimator, TPUEstimatorSpec

tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)


def make_data(n, seed):
    rng = np.random.RandomState(seed)
    centers = np.random.RandomState(42).randn(10, 784).astype(np.float32)
    y = rng.randint(0, 10, n).astype(np.int32)
    x = (0.1 * centers[y] + rng.randn(n, 784)).astype(np.float32)
    return x, y


X_TRAIN, Y_TRAIN = make_data(4000, 0)
X_EVAL, Y_EVAL = make_data(1003, 1)


def dense(x, units, name):
    with tf.compat.v1.variable_scope(name):
        w = tf.compat.v1.get_variable("kernel", [x.shape[-1], units],
                                      initializer=tf.compat.v1.glorot_uniform_initializer(seed=7))
        b = tf.compat.v1.get_variable("bias", [units], initializer=tf.compat.v1.zeros_initializer())
    return tf.matmul(x, w) + b


def metric_fn(labels, logits):
    return {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}


def model_fn(features, labels, mode, params):
    x = features["x"]
    logits = dense(tf.nn.relu(dense(x, 128, "hidden")), 10, "logits")
    if mode == ModeKeys.PREDICT:
        return TPUEstimatorSpec(mode, predictions={"class_ids": tf.argmax(logits, 1), "index": tf.identity(features["index"])})
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    train_op = tf.compat.v1.train.AdamOptimizer(1e-3).minimize(loss, global_step=tf.compat.v1.train.get_global_step())
    return TPUEstimatorSpec(mode, loss=loss, train_op=train_op, eval_metrics=(metric_fn, [labels, logits]))


def train_input_fn(params):
    ds = tf.data.Dataset.from_tensor_slices(({"x": X_TRAIN, "index": np.arange(len(X_TRAIN))}, Y_TRAIN))
    return ds.repeat().batch(params["batch_size"], drop_remainder=True)


def eval_input_fn(params):
    ds = tf.data.Dataset.from_tensor_slices(({"x": X_EVAL, "index": np.arange(len(X_EVAL))}, Y_EVAL))
    return ds.batch(params["batch_size"])


def predict_input_fn(params):
    ds = tf.data.Dataset.from_tensor_slices({"x": X_EVAL, "index": np.arange(len(X_EVAL))})
    return ds.batch(params["batch_size"])


def serving_input_receiver_fn():
    x = tf.compat.v1.placeholder(tf.float32, [None, 784], name="x")
    index = tf.compat.v1.placeholder(tf.int64, [None], name="index")
    return ServingInputReceiver({"x": x, "index": index}, {"x": x, "index": index})


def main():
    model_dir = tempfile.mkdtemp()
    est = TPUEstimator(model_fn=model_fn, use_tpu=False, train_batch_size=64, eval_batch_size=64,
                       predict_batch_size=64,
                       config=RunConfig(model_dir=model_dir, tf_random_seed=1,
                                        tpu_config=TPUConfig(iterations_per_loop=50)))
    out = {"impl": IMPL, "tf": tf.__version__}
    t = time.perf_counter()
    est.train(train_input_fn, steps=300)
    out["train_s"] = round(time.perf_counter() - t, 3)
    metrics = est.evaluate(eval_input_fn)
    out.update(accuracy=float(metrics["accuracy"]), loss=float(metrics["loss"]), global_step=int(metrics["global_step"]))
    preds = list(est.predict(predict_input_fn))
    out["predictions"] = len(preds)
    out["in_order"] = [int(p["index"]) for p in preds] == list(range(len(X_EVAL)))
    out["predict_accuracy"] = float(np.mean(np.array([p["class_ids"] for p in preds]) == Y_EVAL))
    path = est.export_saved_model(os.path.join(model_dir, "export"), serving_input_receiver_fn)
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path.decode() if isinstance(path, bytes) else path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    out["export_tags"] = sorted(",".join(sorted(m.meta_info_def.tags)) for m in saved.meta_graphs)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
