"""Ready-made receiver functions for ``export_saved_model`` (the original's ``estimator.export`` helpers).

Each ``build_*`` call returns a function that ``export_saved_model`` calls inside the graph it
builds, so the placeholders land in that graph whatever the calling program's behaviour is
(TF2, or TF1 after ``tf.compat.v1.disable_v2_behavior()``). The placeholders have the same names,
shapes and receiver keys as the original's, so serving clients keep working.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

import tensorflow as tf

from ..contract.spec import ServingInputReceiver

# The original's default keys for a single tensor (TensorFlow's export_utils constants).
_FEATURE_KEY = "feature"
_LABEL_KEY = "label"
_RECEIVER_KEY = "input"


def _is_tensor(value) -> bool:
    return isinstance(value, (tf.Tensor, tf.SparseTensor, tf.RaggedTensor))


def _check_tensors(what: str, tensors, allow_int_keys: bool) -> Dict[Any, Any]:
    """``tensors`` as a dict, checked: string (or int) keys, Tensor values."""
    if tensors is None:
        raise ValueError(f"SupervisedInputReceiver.{what} must be given (a Tensor or a dict of Tensors).")
    if not isinstance(tensors, dict):
        tensors = {_LABEL_KEY if what == "labels" else _FEATURE_KEY: tensors}
    for key, value in tensors.items():
        key_ok = isinstance(key, str) or (allow_int_keys and isinstance(key, int) and not isinstance(key, bool))
        if not key_ok:
            raise ValueError(f"SupervisedInputReceiver.{what} keys must be strings"
                             f"{' or ints' if allow_int_keys else ''}, got {key!r}.")
        if not _is_tensor(value):
            raise ValueError(f"SupervisedInputReceiver.{what}[{key!r}] must be a Tensor, SparseTensor or "
                             f"RaggedTensor, got {type(value).__name__}.")
    return tensors


@dataclasses.dataclass(frozen=True)
class SupervisedInputReceiver:
    """What a receiver function returns for ``export_saved_model(experimental_mode=TRAIN or EVAL)``.

    ``features`` and ``labels`` are passed to ``model_fn`` as given (a Tensor or a dict);
    ``receiver_tensors`` (a single tensor becomes ``{'input': t}``) are the SavedModel's inputs.

    Example::

        def eval_receiver_fn():
            x = tf.compat.v1.placeholder(tf.float32, [None, 784], name='x')
            y = tf.compat.v1.placeholder(tf.int32, [None], name='y')
            return SupervisedInputReceiver(x, y, {'x': x, 'y': y})
    """

    features: Any
    labels: Any
    receiver_tensors: Any

    def __post_init__(self):
        _check_tensors("features", self.features, allow_int_keys=True)
        _check_tensors("labels", self.labels, allow_int_keys=True)
        receivers = self.receiver_tensors
        if not isinstance(receivers, dict):
            receivers = {_RECEIVER_KEY: receivers}
        _check_tensors("receiver_tensors", receivers, allow_int_keys=False)
        object.__setattr__(self, "receiver_tensors", receivers)


def _placeholder_like(value, default_batch_size: Optional[int]):
    """A placeholder with ``value``'s dtype and non-batch shape, named after its op when it has one.

    ``value`` may be a graph or eager Tensor, a ``tf.TensorSpec`` or a numpy array: only its dtype
    and shape are used, so tensors made outside the export graph are fine.
    """
    shape = tf.TensorShape([default_batch_size]).concatenate(tf.TensorShape(value.shape)[1:])
    try:
        name = value.op.name  # as the original: reuse the example tensor's op name
    except AttributeError:  # eager tensors, TensorSpecs and arrays have no op
        name = getattr(value, "name", None) if isinstance(value, tf.TensorSpec) else None
    return tf.compat.v1.placeholder(dtype=tf.as_dtype(value.dtype), shape=shape, name=name)


def _placeholders_like(values: dict, default_batch_size: Optional[int]) -> dict:
    return {key: _placeholder_like(value, default_batch_size) for key, value in values.items()}


def build_parsing_serving_input_receiver_fn(feature_spec, default_batch_size: Optional[int] = None):
    """A receiver function that takes serialized ``tf.Example`` protos and parses them with ``feature_spec``.

    The SavedModel's input is one string placeholder named ``input_example_tensor`` under the
    receiver key ``examples``, as in the original; leave ``default_batch_size`` unset for any batch.

    Example::

        spec = {'x': tf.io.FixedLenFeature([784], tf.float32)}
        est.export_saved_model('/tmp/export', build_parsing_serving_input_receiver_fn(spec))
    """
    if not isinstance(feature_spec, dict) or not feature_spec:
        raise TypeError("feature_spec must be a non-empty dict of name -> tf.io.FixedLenFeature / "
                        f"VarLenFeature, got {feature_spec!r}.")

    def serving_input_receiver_fn():
        serialized = tf.compat.v1.placeholder(dtype=tf.string, shape=[default_batch_size],
                                              name="input_example_tensor")
        features = tf.compat.v1.io.parse_example(serialized, feature_spec)
        return ServingInputReceiver(features, {"examples": serialized})

    return serving_input_receiver_fn


def build_raw_serving_input_receiver_fn(features, default_batch_size: Optional[int] = None):
    """A receiver function whose inputs are placeholders shaped like ``features``, fed to model_fn as they are.

    ``features`` is a dict of example tensors (or ``tf.TensorSpec`` s); only their dtypes and
    shapes after the batch dimension matter.

    Example::

        fn = build_raw_serving_input_receiver_fn({'x': tf.zeros([1, 784])})
        est.export_saved_model('/tmp/export', fn)   # signature input 'x': float32 [None, 784]
    """
    if not isinstance(features, dict) or not features:
        raise TypeError("features must be a non-empty dict of name -> example Tensor (or tf.TensorSpec), "
                        f"got {type(features).__name__}.")

    def serving_input_receiver_fn():
        placeholders = _placeholders_like(features, default_batch_size)
        return ServingInputReceiver(placeholders, placeholders)

    return serving_input_receiver_fn


def build_raw_supervised_input_receiver_fn(features, labels, default_batch_size: Optional[int] = None):
    """A receiver function for ``export_saved_model(experimental_mode=TRAIN or EVAL)`` with raw placeholders.

    ``features`` and ``labels`` are each an example Tensor or a dict of them; model_fn receives
    placeholders of the same structure. The SavedModel's inputs are the features (key ``input``
    for a single tensor) and the labels (key ``label`` for a single tensor), so their keys must
    not overlap.

    Example::

        fn = build_raw_supervised_input_receiver_fn({'x': tf.zeros([1, 784])}, tf.zeros([1], tf.int32))
        est.export_saved_model('/tmp/export', fn, experimental_mode=ModeKeys.EVAL)
    """
    feature_keys = set(features) if isinstance(features, dict) else {_RECEIVER_KEY}
    label_keys = set(labels) if isinstance(labels, dict) else {_LABEL_KEY}
    overlap = feature_keys & label_keys
    if overlap:
        raise ValueError(f"Features and labels must have distinct keys, but both have {sorted(overlap)}: "
                         "rename the features' or the labels' keys.")

    def supervised_input_receiver_fn():
        model_features, feature_inputs = _model_and_receiver_inputs(features, _RECEIVER_KEY, default_batch_size)
        model_labels, label_inputs = _model_and_receiver_inputs(labels, _LABEL_KEY, default_batch_size)
        return SupervisedInputReceiver(model_features, model_labels, {**feature_inputs, **label_inputs})

    return supervised_input_receiver_fn


def _model_and_receiver_inputs(example, key, default_batch_size):
    """Placeholders like ``example``: (what model_fn gets, the receiver's dict of them; a lone tensor under ``key``)."""
    if isinstance(example, dict):
        placeholders = _placeholders_like(example, default_batch_size)
        return placeholders, placeholders
    placeholder = _placeholder_like(example, default_batch_size)
    return placeholder, {key: placeholder}
