"""``export_saved_model``: a SavedModel with the ``serve`` and ``serve,tpu`` metagraphs.

The CPU metagraph and the TPU metagraph are built in two separate graphs:
a single TPU op anywhere in a graph breaks every CPU session run of it.
Variables are restored from the checkpoint in the CPU graph and saved once;
both metagraphs reference them by name. ``experimental_mode=TRAIN`` / ``EVAL``
write one CPU metagraph tagged ``train`` / ``eval`` instead, as the original did.
"""

from __future__ import annotations

import enum
import logging
import os

import tensorflow as tf
from tensorflow.python.saved_model.model_utils import export_output as _export_output
from tensorflow.python.saved_model.model_utils import export_utils as _export_utils

from ..graph.model_calls import call_model_fn
from ..contract.modes import ModeKeys
from ..contract.spec import EstimatorSpec, ServingInputReceiver, TensorServingInputReceiver, TPUEstimatorSpec

_log = logging.getLogger("tpu_nb")

PredictOutput = _export_output.PredictOutput
ClassificationOutput = _export_output.ClassificationOutput
RegressionOutput = _export_output.RegressionOutput

SERVE = tf.saved_model.SERVING
TPU = tf.saved_model.TPU

# ModeKeys -> the tags of that mode's metagraph (TensorFlow's own map, as the original's export_lib exported it).
EXPORT_TAG_MAP = _export_utils.EXPORT_TAG_MAP


class ExportSavedModelApiVersion(enum.Enum):
    """How ``export_saved_model`` builds the ``serve,tpu`` metagraph (``TPUEstimator(export_saved_model_api_version=)``).

    ``V1`` (default): TPUEstimator wraps the PREDICT model_fn in ``tpu.rewrite`` itself. ``V2``: model_fn is
    called as is (``params['use_tpu']`` True) and does its own TPU rewriting. The ints 1 and 2 are accepted too.

    Example::

        TPUEstimator(model_fn, config=config, train_batch_size=64,
                     export_saved_model_api_version=ExportSavedModelApiVersion.V2)
    """

    V1 = 1
    V2 = 2


def check_export_api_version(version) -> ExportSavedModelApiVersion:
    """``ExportSavedModelApiVersion`` (or 1 / 2; None means V1) as the enum; ValueError otherwise."""
    if version is None:
        return ExportSavedModelApiVersion.V1
    if isinstance(version, ExportSavedModelApiVersion):
        return version
    if not isinstance(version, bool) and version in (1, 2):
        return ExportSavedModelApiVersion(int(version))
    raise ValueError(f"export_saved_model_api_version should be 1 or 2; got {version!r}. Pass "
                     "ExportSavedModelApiVersion.V1 (the default) or ExportSavedModelApiVersion.V2.")


def _receiver(serving_input_receiver_fn):
    receiver = serving_input_receiver_fn()
    if isinstance(receiver, (ServingInputReceiver, TensorServingInputReceiver)):
        return receiver
    if hasattr(receiver, "features") and hasattr(receiver, "receiver_tensors"):
        return ServingInputReceiver(receiver.features, receiver.receiver_tensors,
                                    getattr(receiver, "receiver_tensors_alternatives", None))
    raise TypeError(
        "serving_input_receiver_fn must return a tpu_nb.ServingInputReceiver(features, receiver_tensors) "
        "or a tpu_nb.TensorServingInputReceiver, "
        f"got {type(receiver).__name__}."
    )


_DEFAULT_KEY = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


def _export_outputs(spec):
    """The spec's export outputs, with ``serving_default`` added when there is exactly one (as the original)."""
    outputs = spec.export_outputs
    if outputs is None:
        predictions = spec.predictions
        if not isinstance(predictions, dict):
            predictions = {"output": predictions}
        return {_DEFAULT_KEY: PredictOutput(predictions)}
    if not isinstance(outputs, dict):
        raise TypeError("export_outputs must be a dict of signature name -> PredictOutput/ClassificationOutput/...")
    outputs = dict(outputs)
    for key, out in outputs.items():
        if not isinstance(out, _export_output.ExportOutput):
            raise TypeError(f"export_outputs[{key!r}] must be a PredictOutput, ClassificationOutput or "
                            f"RegressionOutput, got {type(out).__name__}.")
    if len(outputs) == 1 and _DEFAULT_KEY not in outputs:
        # TF Serving clients that name no signature ask for serving_default.
        (only,) = outputs.values()
        outputs[_DEFAULT_KEY] = only
    elif len(outputs) > 1 and _DEFAULT_KEY not in outputs:
        raise ValueError(
            f"model_fn returned {len(outputs)} export_outputs {sorted(outputs)}, but none of them are specified as "
            f"the default: name one of them tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY ('{_DEFAULT_KEY}')."
        )
    return outputs


def _flatten_outputs(outputs):
    """ExportOutputs -> (flat tensors, a function rebuilding them from new tensors)."""
    layout, flat = [], []
    for key, out in outputs.items():
        if isinstance(out, PredictOutput):
            names = sorted(out.outputs)
            layout.append((key, "predict", names))
            flat.extend(out.outputs[n] for n in names)
        elif isinstance(out, ClassificationOutput):
            layout.append((key, "classify", (out.scores is not None, out.classes is not None)))
            flat.extend(t for t in (out.scores, out.classes) if t is not None)
        elif isinstance(out, RegressionOutput):
            layout.append((key, "regress", None))
            flat.append(out.value)
        else:
            raise TypeError(f"export_outputs[{key!r}] has unsupported type {type(out).__name__}.")

    def rebuild(tensors):
        tensors = list(tensors)
        result = {}
        for key, kind, extra in layout:
            if kind == "predict":
                result[key] = PredictOutput({n: tensors.pop(0) for n in extra})
            elif kind == "classify":
                scores = tensors.pop(0) if extra[0] else None
                classes = tensors.pop(0) if extra[1] else None
                result[key] = ClassificationOutput(scores=scores, classes=classes)
            else:
                result[key] = RegressionOutput(tensors.pop(0))
        return result

    return flat, rebuild


def _signatures(receiver, outputs):
    return _export_utils.build_all_signature_defs(
        receiver.receiver_tensors, outputs, receiver.receiver_tensors_alternatives, serving_only=True)


def _supervised_receiver(receiver_fn, mode):
    from ..inputs.serving_inputs import SupervisedInputReceiver

    receiver = receiver_fn()
    if isinstance(receiver, SupervisedInputReceiver):
        return receiver
    if all(hasattr(receiver, a) for a in ("features", "labels", "receiver_tensors")):
        return SupervisedInputReceiver(receiver.features, receiver.labels, receiver.receiver_tensors)
    raise TypeError(
        f"export_saved_model(experimental_mode={mode!r}) needs a receiver function returning "
        "tpu_nb.SupervisedInputReceiver(features, labels, receiver_tensors) (labels are needed to compute the "
        f"loss), got {type(receiver).__name__}. tpu_nb.build_raw_supervised_input_receiver_fn(features, labels) "
        "builds one."
    )


def _add_supervised_metagraph(est, builder, receiver_fn, mode, ckpt):
    """The CPU metagraph of a TRAIN or EVAL export: tags ``train`` / ``eval``, loss, metrics and the train op."""
    with tf.Graph().as_default():
        receiver = _supervised_receiver(receiver_fn, mode)
        tf.compat.v1.train.get_or_create_global_step()
        if est.config.tf_random_seed is not None:
            tf.compat.v1.set_random_seed(est.config.tf_random_seed)
        spec = call_model_fn(est.model_fn, receiver.features, receiver.labels, mode, est.config, est.params,
                             None, False)
        if isinstance(spec, TPUEstimatorSpec):
            spec = spec.as_estimator_spec()  # eval_metrics run on the CPU here, as in the original
        outputs = _export_utils.export_outputs_for_mode(
            mode, serving_export_outputs=spec.export_outputs, predictions=spec.predictions, loss=spec.loss,
            metrics=spec.eval_metric_ops)
        signatures = _export_utils.build_all_signature_defs(receiver.receiver_tensors, outputs, None,
                                                            serving_only=False)
        scaffold = spec.scaffold if isinstance(spec, EstimatorSpec) else None
        saver = (scaffold.saver if scaffold is not None and scaffold.saver is not None
                 else tf.compat.v1.train.Saver(sharded=True))
        local_init = (scaffold.local_init_op if scaffold is not None and scaffold.local_init_op is not None
                      else tf.compat.v1.train.Scaffold.default_local_init_op())
        with tf.compat.v1.Session(config=est.config.session_config) as sess:
            saver.restore(sess, ckpt)
            builder._add_train_op(spec.train_op)  # noqa: SLF001  (None in EVAL: a no-op, as the original)
            builder.add_meta_graph_and_variables(
                sess, list(_export_utils.EXPORT_TAG_MAP[mode]), signature_def_map=signatures, main_op=local_init,
                strip_default_attrs=True, saver=saver)


def run_export(est, export_dir_base, serving_input_receiver_fn, assets_extra=None, as_text=False,
               checkpoint_path=None, mode=ModeKeys.PREDICT):
    """Implements ``TPUEstimator.export_saved_model``; returns the export directory (bytes, as the original).

    ``mode`` ``ModeKeys.PREDICT`` writes ``serve`` (and ``serve,tpu``); ``TRAIN`` / ``EVAL`` write one CPU
    metagraph tagged ``train`` / ``eval`` from a receiver function returning a ``SupervisedInputReceiver``.
    """
    from .evaluation import resolve_checkpoint

    if not est.export_to_cpu and not est.export_to_tpu:
        raise ValueError("export_to_cpu and export_to_tpu are both False, so there is nothing to export: "
                         "set at least one of them to True.")
    if not callable(serving_input_receiver_fn):
        raise TypeError("serving_input_receiver_fn must be a function returning a ServingInputReceiver.")
    if mode not in ModeKeys.ALL:
        raise ValueError(f"experimental_mode must be ModeKeys.PREDICT, ModeKeys.EVAL or ModeKeys.TRAIN, got {mode!r}.")
    if mode != ModeKeys.PREDICT and not est.export_to_cpu:
        raise ValueError(f"export_saved_model(experimental_mode={mode!r}) writes a CPU metagraph only (the TPU "
                         "metagraph exists for PREDICT alone), but export_to_cpu=False: construct the TPUEstimator "
                         "with export_to_cpu=True.")
    if checkpoint_path is None and tf.train.latest_checkpoint(est.model_dir) is None:
        raise ValueError(f"Couldn't find a trained model in model_dir {est.model_dir!r}: call train() first, "
                         "or pass checkpoint_path.")
    ckpt = resolve_checkpoint(est, checkpoint_path, "export")
    export_dir_base = os.fspath(export_dir_base)
    export_dir = _export_utils.get_timestamped_export_dir(export_dir_base)
    temp_dir = _export_utils.get_temp_export_dir(export_dir)
    builder = tf.compat.v1.saved_model.Builder(temp_dir)
    if mode != ModeKeys.PREDICT:
        _add_supervised_metagraph(est, builder, serving_input_receiver_fn, mode, ckpt)
        return _finish(builder, temp_dir, export_dir, as_text, assets_extra, [mode])

    # CPU graph: restores the variables (always; the TPU graph cannot run) and holds the `serve` metagraph.
    cpu_graph = tf.Graph()
    with cpu_graph.as_default():
        receiver = _receiver(serving_input_receiver_fn)
        tf.compat.v1.train.get_or_create_global_step()
        spec = call_model_fn(est.model_fn, receiver.features, None, ModeKeys.PREDICT, est.config, est.params,
                             None, False)
        signatures = _signatures(receiver, _export_outputs(spec))
        saver = tf.compat.v1.train.Saver(sharded=True)
        with tf.compat.v1.Session(config=est.config.session_config) as sess:
            saver.restore(sess, ckpt)
            if est.export_to_cpu:
                builder.add_meta_graph_and_variables(
                    sess, [SERVE], signature_def_map=signatures,
                    main_op=tf.compat.v1.tables_initializer(), strip_default_attrs=True, saver=saver)
            else:
                _save_variables_only(builder, sess, saver, temp_dir)

    if est.export_to_tpu:
        tpu_graph = tf.Graph()
        with tpu_graph.as_default():
            receiver = _receiver(serving_input_receiver_fn)
            tf.compat.v1.train.get_or_create_global_step()
            captured = {}

            def computation():
                spec = call_model_fn(est.model_fn, receiver.features, None, ModeKeys.PREDICT, est.config,
                                     est.params, None, True)
                flat, rebuild = _flatten_outputs(_export_outputs(spec))
                captured["rebuild"] = rebuild
                return flat

            if getattr(est, "export_saved_model_api_version", None) == ExportSavedModelApiVersion.V2:
                flat = computation()  # V2: the model_fn does its own TPU rewriting, as the original
            else:
                flat = tf.compat.v1.tpu.rewrite(computation)
            outputs = captured["rebuild"](flat)
            signatures = _signatures(receiver, outputs)
            builder.add_meta_graph(
                [SERVE, TPU], signature_def_map=signatures, main_op=tf.compat.v1.tables_initializer(),
                strip_default_attrs=True, saver=tf.compat.v1.train.Saver(sharded=True))

    metagraphs = [t for t, on in (("serve", est.export_to_cpu), ("serve,tpu", est.export_to_tpu)) if on]
    return _finish(builder, temp_dir, export_dir, as_text, assets_extra, metagraphs)


def _finish(builder, temp_dir, export_dir, as_text, assets_extra, metagraphs):
    """Writes the SavedModel and extra assets, then moves it into place; returns ``export_dir``."""
    builder.save(as_text)
    if assets_extra:
        extra_dir = os.path.join(os.fsdecode(temp_dir), "assets.extra")
        for dest, src in assets_extra.items():
            target = os.path.join(extra_dir, dest)
            tf.io.gfile.makedirs(os.path.dirname(target))
            tf.io.gfile.copy(src, target)
    tf.io.gfile.rename(temp_dir, export_dir)
    # The path is bytes (the original's return type); log it as text.
    _log.info("Exported SavedModel to %s (metagraphs: %s).", os.fsdecode(export_dir), ", ".join(metagraphs))
    return export_dir


def _save_variables_only(builder, sess, saver, export_dir):
    """Writes the variables for a SavedModel whose only metagraph is the TPU one."""
    # export_dir is bytes when export_dir_base was: joining it with str names would fail.
    variables_dir = os.path.join(os.fsdecode(export_dir), tf.saved_model.VARIABLES_DIRECTORY)
    tf.io.gfile.makedirs(variables_dir)
    saver.save(sess, os.path.join(variables_dir, tf.saved_model.VARIABLES_FILENAME),
               write_meta_graph=False, write_state=False)
    # The builder refuses add_meta_graph until variables are saved; they are, by the saver above.
    builder._has_saved_variables = True  # noqa: SLF001
