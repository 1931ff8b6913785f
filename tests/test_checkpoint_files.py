"""What train() leaves in model_dir beside the variables: graph.pbtxt, the .meta files and the events file's graph."""

import glob
import os

import pytest
import tensorflow as tf
from google.protobuf import text_format

import tpu_nb
from model_zoo import estimator, model_fn, train_input_fn


def _last_graph_in_events(model_dir):
    """The last graph the events file holds (TensorFlow writes one before the session finishes the graph)."""
    graph_def = None
    for path in sorted(glob.glob(os.path.join(model_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            if event.graph_def:
                graph_def = tf.compat.v1.GraphDef()
                graph_def.ParseFromString(event.graph_def)
    return graph_def


@pytest.mark.parametrize("shards", [None, 2], ids=["one-device", "2-shards"])
def test_graph_pbtxt_holds_the_graph_the_checkpoints_meta_holds(tmp_path, shards):
    if shards:
        config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(num_cores=shards),
                                  tpu_config=tpu_nb.TPUConfig(iterations_per_loop=4))
        est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16)
    else:
        est = estimator(tmp_path)
    est.train(train_input_fn, max_steps=4)

    text = tf.compat.v1.GraphDef()
    text_format.Parse((tmp_path / "graph.pbtxt").read_text(), text)
    meta = tf.compat.v1.MetaGraphDef()
    meta.ParseFromString((tmp_path / "model.ckpt-0.meta").read_bytes())
    assert len(text.node) > 50
    # TensorFlow's saver wrote the .meta from the same finished graph: the same nodes, byte for byte.
    assert sorted(n.SerializeToString(deterministic=True) for n in text.node) == \
        sorted(n.SerializeToString(deterministic=True) for n in meta.graph_def.node)
    events = _last_graph_in_events(tmp_path)
    assert events is not None and {n.name for n in events.node} == {n.name for n in text.node}
    # The run's last checkpoint has the same graph, and a later run over the same model_dir resumes from it.
    assert (tmp_path / "model.ckpt-4.meta").read_bytes() == (tmp_path / "model.ckpt-0.meta").read_bytes()
    est.train(train_input_fn, max_steps=8)
    assert tf.train.load_variable(tf.train.latest_checkpoint(str(tmp_path)), "global_step") == 8


@pytest.mark.parametrize("shards", [None, 2], ids=["one-device", "2-shards"])
def test_every_checkpoint_has_a_meta_graph_that_restores_it(tmp_path, shards):
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), save_checkpoints_steps=2, keep_checkpoint_max=10,
                              cluster=tpu_nb.SimulatedTPU(num_cores=shards) if shards else None,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2))
    est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16, use_tpu=bool(shards))
    est.train(train_input_fn, max_steps=6)
    saved = sorted(int(p.name.split("-")[1].split(".")[0]) for p in tmp_path.glob("model.ckpt-*.index"))
    assert saved == [0, 2, 4, 6]
    for step in saved:
        # The graph places its ops on the shards' devices, so the session needs them, as a TPU's would.
        two_cpus = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
        with tf.Graph().as_default(), tf.compat.v1.Session(config=two_cpus) as session:
            saver = tf.compat.v1.train.import_meta_graph(str(tmp_path / f"model.ckpt-{step}.meta"))
            saver.restore(session, str(tmp_path / f"model.ckpt-{step}"))
            assert session.run(tf.compat.v1.train.get_global_step()) == step
    # One graph in the events file per run: the finished one, not a copy of the graph half-built.
    graphs = [e for path in tmp_path.glob("events.out.tfevents.*")
              for e in tf.compat.v1.train.summary_iterator(str(path)) if e.graph_def]
    assert len(graphs) == 1


def test_checkpoint_save_graph_def_false_writes_neither_graph_pbtxt_nor_meta(tmp_path):
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(num_cores=2),
                              checkpoint_save_graph_def=False, tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2))
    est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16)
    est.train(train_input_fn, max_steps=4)
    assert not (tmp_path / "graph.pbtxt").exists()
    assert not list(tmp_path.glob("*.meta"))
    assert tf.train.load_variable(tf.train.latest_checkpoint(str(tmp_path)), "global_step") == 4
