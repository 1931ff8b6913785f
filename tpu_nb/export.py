"""``export_saved_model``: a SavedModel with the ``serve`` and ``serve,tpu`` metagraphs.

The CPU metagraph and the TPU metagraph are built in two separate graphs:
a single TPU op anywhere in a graph breaks every CPU session run of it.
Variables are restored from the checkpoint in the CPU graph and saved once;
both metagraphs reference them by name.
"""

from __future__ import annotations

import logging
import os

import tensorflow as tf
from tensorflow.python.saved_model.model_utils import export_output as _export_output
from tensorflow.python.saved_model.model_utils import export_utils as _export_utils

from .model_calls import call_model_fn
from .modes import ModeKeys
from .spec import ServingInputReceiver, TensorServingInputReceiver

_log = logging.getLogger("tpu_nb")

PredictOutput = _export_output.PredictOutput
ClassificationOutput = _export_output.ClassificationOutput
RegressionOutput = _export_output.RegressionOutput

SERVE = tf.saved_model.SERVING
TPU = tf.saved_model.TPU


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


def _export_outputs(spec):
    outputs = spec.export_outputs
    if outputs is None:
        predictions = spec.predictions
        if not isinstance(predictions, dict):
            predictions = {"output": predictions}
        return {tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: PredictOutput(predictions)}
    if not isinstance(outputs, dict):
        raise TypeError("export_outputs must be a dict of signature name -> PredictOutput/ClassificationOutput/...")
    return dict(outputs)


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


def run_export(est, export_dir_base, serving_input_receiver_fn, assets_extra=None, as_text=False,
               checkpoint_path=None):
    """Implements ``TPUEstimator.export_saved_model``; returns the export directory (bytes, as the original)."""
    from .evaluation import resolve_checkpoint

    if not est.export_to_cpu and not est.export_to_tpu:
        raise ValueError("export_to_cpu and export_to_tpu are both False, so there is nothing to export: "
                         "set at least one of them to True.")
    if not callable(serving_input_receiver_fn):
        raise TypeError("serving_input_receiver_fn must be a function returning a ServingInputReceiver.")
    if checkpoint_path is None and tf.train.latest_checkpoint(est.model_dir) is None:
        raise ValueError(f"Couldn't find a trained model in model_dir {est.model_dir!r}: call train() first, "
                         "or pass checkpoint_path.")
    ckpt = resolve_checkpoint(est, checkpoint_path, "export")
    export_dir_base = os.fspath(export_dir_base)
    export_dir = _export_utils.get_timestamped_export_dir(export_dir_base)
    temp_dir = _export_utils.get_temp_export_dir(export_dir)
    builder = tf.compat.v1.saved_model.Builder(temp_dir)

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

            flat = tf.compat.v1.tpu.rewrite(computation)
            outputs = captured["rebuild"](flat)
            signatures = _signatures(receiver, outputs)
            builder.add_meta_graph(
                [SERVE, TPU], signature_def_map=signatures, main_op=tf.compat.v1.tables_initializer(),
                strip_default_attrs=True, saver=tf.compat.v1.train.Saver(sharded=True))

    builder.save(as_text)
    if assets_extra:
        extra_dir = os.path.join(temp_dir, "assets.extra")
        for dest, src in assets_extra.items():
            target = os.path.join(extra_dir, dest)
            tf.io.gfile.makedirs(os.path.dirname(target))
            tf.io.gfile.copy(src, target)
    tf.io.gfile.rename(temp_dir, export_dir)
    _log.info("Exported SavedModel to %s (metagraphs: %s).", export_dir,
              ", ".join(t for t, on in (("serve", est.export_to_cpu), ("serve,tpu", est.export_to_tpu)) if on))
    return export_dir


def _save_variables_only(builder, sess, saver, export_dir):
    """Writes the variables for a SavedModel whose only metagraph is the TPU one."""
    variables_dir = os.path.join(export_dir, tf.saved_model.VARIABLES_DIRECTORY)
    tf.io.gfile.makedirs(variables_dir)
    saver.save(sess, os.path.join(variables_dir, tf.saved_model.VARIABLES_FILENAME),
               write_meta_graph=False, write_state=False)
    # The builder refuses add_meta_graph until variables are saved; they are, by the saver above.
    builder._has_saved_variables = True  # noqa: SLF001
