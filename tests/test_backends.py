"""Which backend a program runs on, and the layout each backend describes, for the same RunConfig a user writes."""

import json

import pytest
import tensorflow as tf

import tpu_nb
from model_zoo import model_fn
from tpu_nb.backends import select_backend


@pytest.fixture(autouse=True)
def _no_cluster_in_env(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NB_SIMULATE", raising=False)


def _estimator(tmp_path, cluster=None, **kwargs):
    kwargs.setdefault("train_batch_size", 16)
    kwargs.setdefault("eval_batch_size", 16)
    return tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=cluster), **kwargs)


def test_use_tpu_false_runs_on_one_device(tmp_path):
    est = _estimator(tmp_path, use_tpu=False)
    for what in ("train", "evaluate", "predict"):
        backend = select_backend(est, what)
        assert backend.description in ("CPU", "GPU")
        assert backend.topology.num_replicas == 1


def test_simulated_shards_describe_their_layout(tmp_path):
    est = _estimator(tmp_path, tpu_nb.SimulatedTPU(num_cores=4, num_hosts=2, use_gpus=False))
    backend = select_backend(est, "train")
    assert backend.description == "simulated TPU 4x2 (4 shards on CPU, 2 hosts)"
    topo = backend.topology
    assert topo.local_hosts == (0, 1)
    # Each host's input pipeline runs on the first device of its group, in the form input_fns saw.
    assert topo.host_device(1) == "/replica:0/task:0/device:CPU:2"
    assert topo.replica_host(3) == ("/task:0/device:CPU:2", 1)
    assert topo.session_config().device_count["CPU"] == 4


def test_shards_on_cpus_trim_grappler_unless_the_user_chose(tmp_path):
    topo = select_backend(_estimator(tmp_path, tpu_nb.SimulatedTPU(num_cores=2, use_gpus=False)), "train").topology
    rewrite = topo.session_config().graph_options.rewrite_options
    assert (rewrite.layout_optimizer, rewrite.memory_optimization) == (rewrite.OFF, rewrite.NO_MEM_OPT)
    assert rewrite.meta_optimizer_iterations == rewrite.ONE
    chosen = tf.compat.v1.ConfigProto()
    chosen.graph_options.rewrite_options.layout_optimizer = rewrite.ON
    chosen.graph_options.rewrite_options.memory_optimization = rewrite.RECOMPUTATION_HEURISTICS
    chosen.graph_options.rewrite_options.meta_optimizer_iterations = rewrite.TWO
    rewrite = topo.session_config(chosen).graph_options.rewrite_options
    assert (rewrite.layout_optimizer, rewrite.memory_optimization) == (rewrite.ON, rewrite.RECOMPUTATION_HEURISTICS)
    assert rewrite.meta_optimizer_iterations == rewrite.TWO
    # One device keeps TensorFlow's defaults.
    one = select_backend(_estimator(tmp_path, use_tpu=False), "train").topology.session_config()
    assert one.graph_options.rewrite_options.layout_optimizer == rewrite.DEFAULT
    assert one.graph_options.rewrite_options.meta_optimizer_iterations == rewrite.DEFAULT_NUM_ITERS


def test_the_environment_variable_simulates_without_code_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("TPU_NB_SIMULATE", "2")
    backend = select_backend(_estimator(tmp_path), "predict")
    assert backend.topology.num_replicas == 2 and "simulated TPU" in backend.description


def test_eval_on_tpu_false_evaluates_on_one_device(tmp_path):
    est = _estimator(tmp_path, tpu_nb.SimulatedTPU(num_cores=2), eval_on_tpu=False)
    assert select_backend(est, "evaluate").topology.num_replicas == 1
    assert select_backend(est, "train").topology.num_replicas == 2


def test_workers_train_together_and_evaluate_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1", "c:1"]},
                                                "task": {"type": "worker", "index": 1}}))
    est = _estimator(tmp_path, tpu_nb.MultiWorker(operation_timeout_secs=30))
    backend = select_backend(est, "train")
    assert backend.description == "3 workers (this is worker 1)"
    topo = backend.topology
    assert not topo.is_chief and topo.local_hosts == (1,)
    assert topo.host_device(2) == "/job:worker/replica:0/task:2/device:CPU:0"
    assert select_backend(est, "evaluate").topology.num_replicas == 1


def test_num_shards_that_disagrees_with_the_simulation_is_refused(tmp_path):
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(num_cores=2),
                              tpu_config=tpu_nb.TPUConfig(num_shards=8))
    est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16)
    with pytest.raises(ValueError, match="num_shards=8 does not match the 2 shards"):
        select_backend(est, "train")


def test_a_tpu_address_is_resolved_into_the_tpu_backend(tmp_path, monkeypatch):
    from tpu_nb.backends.tpu_connection import TPUTopology

    found = TPUTopology(master="grpc://10.0.0.2:8470", num_hosts=2, num_cores=16, num_cores_per_host=8,
                        device_kinds=("CPU", "TPU", "TPU_SYSTEM"), tf_version="2.21.0", job_name="worker")
    monkeypatch.setattr("tpu_nb.backends.tpu_connection.resolve_tpu", lambda address, timeout_secs: found)
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), master="grpc://10.0.0.2:8470")
    est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16)
    for what in ("train", "evaluate", "predict"):
        backend = select_backend(est, what)
        assert backend.description == "TPU 16x2 (16 cores, 2 hosts) at grpc://10.0.0.2:8470"
        assert backend.topology.host_device(1) == "/job:worker/replica:0/task:1/device:CPU:0"
        setup = backend.session(None)
        assert setup.target == "grpc://10.0.0.2:8470" and setup.config.isolate_session_state
