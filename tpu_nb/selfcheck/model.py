"""The self-check's tiny problem: fixed data, fixed initial weights, a TPUEstimator program, and its float64 answer.

Every backend trains the same 8-16-4 tanh MLP with plain SGD on the same rows in the same order, so
their results must agree up to float rounding. The numpy function ``reference()`` computes the same
training, evaluation, prediction and serving in float64, which is what the one-device run is checked
against (and every other backend against the one-device run).

Nothing here is random at run time: data and initial weights come from fixed numpy seeds and are
embedded as constants, so no backend's seed handling can change them.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import numpy as np

FEATURES = 8
HIDDEN = 16
CLASSES = 4
GLOBAL_BATCH = 64  # divisible by 1, 2, 4, ..., 64 shards
TRAIN_ROWS = 512  # 8 batches per epoch; 16 steps see every row twice
EVAL_ROWS = 128  # 2 full batches: the reported eval loss (a mean over batches) is then comparable
PREDICT_ROWS = 100  # the last batch is short (36 rows): predict must pad it and return exactly 100 rows
SERVE_ROWS = 16  # rows fed to the exported SavedModel's serving signature
STEPS = 16
ITERATIONS_PER_LOOP = 4
LEARNING_RATE = 0.3
# The variables the check compares, as the model_fn names them.
VARIABLES = ("hidden/kernel", "hidden/bias", "logits/kernel", "logits/bias")


@dataclasses.dataclass(frozen=True)
class Problem:
    """The data and the initial weights (float32, as the TensorFlow program sees them)."""

    train_x: np.ndarray
    train_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray
    predict_x: np.ndarray
    initial: Dict[str, np.ndarray]


def problem() -> Problem:
    """The fixed data set: 4 gaussian classes in 8 dimensions, far enough apart that predictions have clear margins."""
    rng = np.random.RandomState(20261202)
    means = rng.normal(0.0, 1.5, (CLASSES, FEATURES))

    def sample(n):
        y = rng.randint(0, CLASSES, n).astype(np.int32)
        x = (means[y] + rng.normal(0.0, 1.0, (n, FEATURES))).astype(np.float32)
        return x, y

    train_x, train_y = sample(TRAIN_ROWS)
    eval_x, eval_y = sample(EVAL_ROWS)
    predict_x, _ = sample(PREDICT_ROWS)
    initial = {
        "hidden/kernel": rng.normal(0.0, 0.4, (FEATURES, HIDDEN)).astype(np.float32),
        "hidden/bias": np.zeros(HIDDEN, np.float32),
        "logits/kernel": rng.normal(0.0, 0.4, (HIDDEN, CLASSES)).astype(np.float32),
        "logits/bias": np.zeros(CLASSES, np.float32),
    }
    return Problem(train_x, train_y, eval_x, eval_y, predict_x, initial)


# --------------------------------------------------------------------------- the float64 answer


def _forward(weights, x):
    h = np.tanh(x @ weights["hidden/kernel"] + weights["hidden/bias"])
    logits = h @ weights["logits/kernel"] + weights["logits/bias"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    return h, p


def _xent(p, y):
    return -np.log(p[np.arange(len(y)), y])


def reference(prob: Problem = None) -> Dict[str, dict]:
    """What every backend should produce, computed in float64 with numpy; keyed by phase like a worker's results."""
    prob = prob or problem()
    w = {k: v.astype(np.float64) for k, v in prob.initial.items()}
    x_all, y_all = prob.train_x.astype(np.float64), prob.train_y
    batches_per_epoch = TRAIN_ROWS // GLOBAL_BATCH
    loss = None
    for step in range(STEPS):
        start = (step % batches_per_epoch) * GLOBAL_BATCH
        x, y = x_all[start:start + GLOBAL_BATCH], y_all[start:start + GLOBAL_BATCH]
        h, p = _forward(w, x)
        loss = float(_xent(p, y).mean())  # the loss of this step, before its update (what train() reports)
        dlogits = p.copy()
        dlogits[np.arange(len(y)), y] -= 1.0
        dlogits /= len(y)
        dz = (dlogits @ w["logits/kernel"].T) * (1.0 - h * h)
        grads = {"logits/kernel": h.T @ dlogits, "logits/bias": dlogits.sum(0),
                 "hidden/kernel": x.T @ dz, "hidden/bias": dz.sum(0)}
        w = {k: w[k] - LEARNING_RATE * grads[k] for k in w}

    _, p_eval = _forward(w, prob.eval_x.astype(np.float64))
    xent = _xent(p_eval, prob.eval_y)
    batch_losses = [xent[i:i + GLOBAL_BATCH].mean() for i in range(0, EVAL_ROWS, GLOBAL_BATCH)]
    _, p_pred = _forward(w, prob.predict_x.astype(np.float64))
    return {
        "train": {"loss": loss, "global_step": STEPS, "weights": {k: v.tolist() for k, v in w.items()}},
        "evaluate": {"loss": float(np.mean(batch_losses)), "accuracy": float((p_eval.argmax(1) == prob.eval_y).mean()),
                     "mean_xent": float(xent.mean()), "global_step": STEPS},
        "predict": {"index": list(range(PREDICT_ROWS)), "probabilities": p_pred.tolist(),
                    "class_ids": p_pred.argmax(1).tolist()},
        "export": {"probabilities": p_pred[:SERVE_ROWS].tolist(), "class_ids": p_pred[:SERVE_ROWS].argmax(1).tolist()},
    }


# --------------------------------------------------------------------------- the TensorFlow program


@dataclasses.dataclass(frozen=True)
class Program:
    """The TPUEstimator program over ``prob``: model_fn, the three input_fns and the serving input."""

    prob: Problem

    def model_fn(self, features, labels, mode, params):
        """An ordinary TPUEstimator model_fn: CrossShardOptimizer, eval_metrics, predictions (public API only)."""
        import tensorflow as tf

        import tpu_nb

        def variable(name):
            # Constant initial values: every backend starts from the same weights whatever its seeding.
            # A callable initializer, not a constant tensor: the variables are created inside the device loop.
            value = self.prob.initial[name]
            return tf.compat.v1.get_variable(name, value.shape, tf.float32,
                                             initializer=tf.compat.v1.constant_initializer(value))

        x = features["x"]
        hidden = tf.tanh(tf.matmul(x, variable("hidden/kernel")) + variable("hidden/bias"))
        logits = tf.matmul(hidden, variable("logits/kernel")) + variable("logits/bias")
        if mode == tpu_nb.ModeKeys.PREDICT:
            predictions = {"probabilities": tf.nn.softmax(logits), "class_ids": tf.argmax(logits, 1)}
            if "index" in features:  # absent when serving
                predictions["index"] = features["index"]
            return tpu_nb.TPUEstimatorSpec(mode, predictions=predictions)
        xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        loss = tf.reduce_mean(xent)
        if mode == tpu_nb.ModeKeys.EVAL:
            def metric_fn(labels, logits, xent):
                return {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1)),
                        "mean_xent": tf.compat.v1.metrics.mean(xent)}

            return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits, xent]))
        optimizer = tpu_nb.CrossShardOptimizer(tf.compat.v1.train.GradientDescentOptimizer(LEARNING_RATE))
        train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    def train_input_fn(self, params):
        return _global_batches({"x": self.prob.train_x}, self.prob.train_y, params, repeat=True)

    def eval_input_fn(self, params):
        return _global_batches({"x": self.prob.eval_x}, self.prob.eval_y, params, repeat=False)

    def predict_input_fn(self, params):
        features = {"x": self.prob.predict_x, "index": np.arange(PREDICT_ROWS, dtype=np.int32)}
        return _global_batches(features, None, params, repeat=False)

    @staticmethod
    def serving_input_receiver_fn():
        import tensorflow as tf

        import tpu_nb

        x = tf.compat.v1.placeholder(tf.float32, [None, FEATURES], name="x")
        return tpu_nb.ServingInputReceiver({"x": x}, {"x": x})


def _host_slice(params):
    """(this host's index, number of hosts) of an input_fn call; (0, 1) on one device."""
    context = params.get("context")
    if context is None:
        return 0, 1
    _, index, total, _ = context.current_input_fn_deployment()
    return int(index), int(total)


def _global_batches(features, labels, params, repeat):
    """Batches of GLOBAL_BATCH rows in file order, each host keeping its own slice of every global batch.

    This is how a multi-host TPU input_fn keeps the rows of a step the same whatever the host count:
    host h of H takes rows [h*b, (h+1)*b) of each global batch of H*b rows (b = params['batch_size']).
    """
    import tensorflow as tf

    host, hosts = _host_slice(params)
    per_host = params["batch_size"]
    ds = tf.data.Dataset.from_tensor_slices(features if labels is None else (features, labels))
    if repeat:
        ds = ds.repeat()
    # Training needs static batch shapes (drop_remainder); evaluate/predict keep the short last batch to be padded.
    ds = ds.batch(per_host * hosts, drop_remainder=repeat)
    lo, hi = host * per_host, (host + 1) * per_host
    if labels is None:
        return ds.map(lambda f: {k: v[lo:hi] for k, v in f.items()})
    return ds.map(lambda f, y: ({k: v[lo:hi] for k, v in f.items()}, y[lo:hi]))
