"""TensorFlow's CheckpointSaverHook, turning the graph into a GraphDef once per run instead of five times."""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow.python.lib.io import file_io
from tensorflow.python.training import saver as saver_module
from tensorflow.python.summary.writer import writer_cache


class CheckpointSaverHook(tf.compat.v1.train.CheckpointSaverHook):
    """``tf.compat.v1.train.CheckpointSaverHook`` that turns the finished graph into a GraphDef once.

    TensorFlow's hook turns the whole graph into a GraphDef five times in a short run: for the events
    file when its writer is made (before the graph is finished), for graph.pbtxt, for the events file's
    graph, and for the ``.meta`` file of every checkpoint. Each grows with the graph, which N simulated
    shards multiply by N. Here the events file's writer starts without a graph (the finished one is added
    when the session starts, as TensorFlow's hook adds it too); one GraphDef serves graph.pbtxt, the
    events file and the meta graph; and the ``.meta`` bytes are made once and written with every
    checkpoint, since a finished graph can no longer change (no ops, no collections). graph.pbtxt comes
    from protobuf's native text encoder; it parses into the same GraphDef (map entries may be listed in
    another order, floats in their shortest exact form). Listeners, session logs and the checkpoints
    themselves are TensorFlow's.

    Example::

        hook = CheckpointSaverHook(model_dir, save_steps=100, scaffold=scaffold)
    """

    _meta_bytes = None

    def begin(self):
        _writer_without_graph(self._checkpoint_dir)
        super().begin()

    def after_create_session(self, session, coord):
        global_step = session.run(self._global_step_tensor)
        graph = tf.compat.v1.get_default_graph()
        graph_def = graph.as_graph_def(add_shapes=True)
        if self._save_graph_def:
            _write_text(graph_def, self._checkpoint_dir, "graph.pbtxt")
        saver = self._get_saver()
        # The meta graph a Saver exports, from the GraphDef already made; it also goes into every .meta.
        meta_graph_def = importable(saver_module.export_meta_graph(
            graph_def=graph_def, saver_def=saver.saver_def if saver else None))
        if self._save_graph_def and graph.finalized:
            self._meta_bytes = meta_graph_def.SerializeToString(deterministic=True)
        # What FileWriter.add_graph(graph) does, with the GraphDef already made.
        self._summary_writer._write_plugin_assets(graph)  # noqa: SLF001
        self._summary_writer._add_graph_def(graph_def)  # noqa: SLF001
        self._summary_writer.add_meta_graph(meta_graph_def)
        # The checkpoint saved here is the state at step "global_step", as TensorFlow's hook saves it.
        self._save(session, global_step)
        self._timer.update_last_triggered_step(global_step)

    def _save(self, session, step):
        """TensorFlow's ``_save``, writing the ``.meta`` file from the bytes made when the session started."""
        if self._meta_bytes is None:  # no .meta wanted, or a graph not finished
            return super()._save(session, step)
        for listener in self._listeners:
            listener.before_save(session, step)
        path = self._get_saver().save(session, self._save_path, global_step=step, write_meta_graph=False)
        if path is not None:
            file_io.atomic_write_string_to_file(path + ".meta", self._meta_bytes)
        self._summary_writer.add_session_log(
            tf.compat.v1.SessionLog(status=tf.compat.v1.SessionLog.CHECKPOINT, checkpoint_path=self._save_path),
            step)
        should_stop = False
        for listener in self._listeners:
            if listener.after_save(session, step):
                should_stop = True
        return should_stop


def importable(meta_graph_def):
    """``meta_graph_def`` without collection entries naming nodes its graph does not hold.

    A while_v2 loop's body shares the outer graph's collections, so ops made in the device loop (the
    train op an optimizer files under ``train_op``) are listed there though they live in the loop's
    function. ``import_meta_graph`` refused such a file; a TPU's loop, built in the graph itself, left
    none. Entries that are not node names (variables, savers, numbers) are kept.
    """
    nodes = {node.name for node in meta_graph_def.graph_def.node}
    for collection in meta_graph_def.collection_def.values():
        if collection.WhichOneof("kind") == "node_list":
            kept = [name for name in collection.node_list.value if name.lstrip("^").split(":")[0] in nodes]
            if len(kept) < len(collection.node_list.value):
                del collection.node_list.value[:]
                collection.node_list.value.extend(kept)
    return meta_graph_def


def _writer_without_graph(logdir):
    """The events writer TensorFlow's hooks share for ``logdir``, made without a graph if none exists yet.

    ``SummaryWriterCache.get`` makes it with the graph as it stands when the hook begins, which costs a
    serialisation of the whole unfinished graph; the hook adds the finished graph anyway.
    """
    cache = writer_cache.FileWriterCache
    with cache._lock:  # noqa: SLF001
        if logdir not in cache._cache:  # noqa: SLF001
            cache._cache[logdir] = tf.compat.v1.summary.FileWriter(logdir)  # noqa: SLF001


def _write_text(message, directory, name):
    """``message`` in protobuf text format at directory/name, written atomically (as tf.io.write_graph)."""
    if not directory.startswith("gs:") and not file_io.file_exists(directory):
        file_io.recursive_create_dir(directory)
    file_io.atomic_write_string_to_file(os.path.join(directory, name), str(message))
