"""RunConfig's masters and TF_CONFIG, read the way the original RunConfig / TPUConfig read them."""

import json

import pytest

import tpu_nb
from model_zoo import model_fn


@pytest.fixture(autouse=True)
def _no_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NB_SIMULATE", raising=False)  # the tests below are about finding no simulation


def _tf_config(monkeypatch, **config):
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))


def test_masters_default_to_empty_string():
    config = tpu_nb.RunConfig()
    assert config.master == "" and config.evaluation_master == ""


def test_evaluation_master_defaults_to_master():
    config = tpu_nb.RunConfig(master="grpc://10.0.0.2:8470")
    assert config.evaluation_master == "grpc://10.0.0.2:8470"


def test_explicit_evaluation_master_is_kept_even_when_empty():
    assert tpu_nb.RunConfig(master="grpc://a:1", evaluation_master="grpc://b:1").evaluation_master == "grpc://b:1"
    assert tpu_nb.RunConfig(master="grpc://a:1", evaluation_master="").evaluation_master == ""


def test_replace_keeps_given_masters_and_rederives_defaults():
    config = tpu_nb.RunConfig(master="grpc://a:1")
    assert config.replace(model_dir="/tmp/x").master == "grpc://a:1"
    # evaluation_master was defaulted, so it follows a replaced master.
    moved = config.replace(master="grpc://b:1")
    assert (moved.master, moved.evaluation_master) == ("grpc://b:1", "grpc://b:1")
    pinned = tpu_nb.RunConfig(master="grpc://a:1", evaluation_master="grpc://e:1").replace(master="grpc://b:1")
    assert pinned.evaluation_master == "grpc://e:1"
    assert tpu_nb.RunConfig().replace(tf_random_seed=3) == tpu_nb.RunConfig(tf_random_seed=3)


def test_non_string_master_names_the_fix():
    with pytest.raises(TypeError, match="RunConfig.master must be an address string"):
        tpu_nb.RunConfig(master=8470)


def test_tf_config_session_masters(monkeypatch):
    _tf_config(monkeypatch, session_master="grpc://s:1", eval_session_master="grpc://e:1")
    config = tpu_nb.RunConfig()
    assert (config.master, config.evaluation_master) == ("grpc://s:1", "grpc://e:1")
    # Arguments win over TF_CONFIG.
    assert tpu_nb.RunConfig(master="grpc://m:1").master == "grpc://m:1"


def test_tf_config_session_master_alone_is_also_the_evaluation_master(monkeypatch):
    _tf_config(monkeypatch, session_master="grpc://s:1")
    assert tpu_nb.RunConfig().evaluation_master == "grpc://s:1"


def test_evaluator_task_gets_eval_session_master_and_a_local_master(monkeypatch):
    cluster = {"chief": ["h0:1"], "worker": ["h1:1"], "evaluator": ["h2:1"]}
    _tf_config(monkeypatch, cluster=cluster, task={"type": "evaluator", "index": 0},
               session_master="grpc://s:1", eval_session_master="grpc://e:1")
    config = tpu_nb.RunConfig()
    assert (config.master, config.evaluation_master) == ("", "grpc://e:1")


def test_evaluator_task_without_eval_session_master_evaluates_locally(monkeypatch):
    _tf_config(monkeypatch, cluster={"chief": ["h0:1"], "evaluator": ["h2:1"]},
               task={"type": "evaluator", "index": 0}, session_master="grpc://s:1")
    config = tpu_nb.RunConfig()
    assert (config.master, config.evaluation_master) == ("", "")


def test_cluster_worker_ignores_eval_session_master(monkeypatch):
    # As the original: in a cluster only an evaluator reads eval_session_master; others evaluate on master.
    _tf_config(monkeypatch, cluster={"chief": ["h0:1"], "worker": ["h1:1"]}, task={"type": "worker", "index": 0},
               session_master="grpc://s:1", eval_session_master="grpc://e:1")
    config = tpu_nb.RunConfig()
    assert (config.master, config.evaluation_master) == ("grpc://s:1", "grpc://s:1")


def test_tpu_job_name_from_tf_config(monkeypatch):
    _tf_config(monkeypatch, service={"tpu_worker_job_name": "tpu_worker"})
    assert tpu_nb.TPUConfig().tpu_job_name == "tpu_worker"
    assert tpu_nb.RunConfig().tpu_config.tpu_job_name == "tpu_worker"
    assert tpu_nb.TPUConfig(tpu_job_name="mine").tpu_job_name == "mine"


def test_tpu_job_name_unset_without_tf_config():
    assert tpu_nb.TPUConfig().tpu_job_name is None


def test_malformed_tf_config_names_the_variable(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG environment variable is not valid JSON"):
        tpu_nb.RunConfig()


def test_empty_master_means_no_tpu(tmp_path):
    # '' must not be taken for a TPU address: the error is the "no TPU named" one, not a connection attempt.
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path), master=""),
                              train_batch_size=16)
    with pytest.raises(RuntimeError, match="RunConfig names none"):
        est.train(lambda params: None, steps=1)


def test_evaluate_uses_evaluation_master(tmp_path, monkeypatch):
    asked = []

    def fake_resolve(target, timeout_secs):
        asked.append(target)
        raise RuntimeError("stop here")

    monkeypatch.setattr("tpu_nb.backends.tpu_connection.resolve_tpu", fake_resolve)
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), master="grpc://train:1", evaluation_master="grpc://eval:1")
    est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16, eval_batch_size=16)
    with pytest.raises(RuntimeError, match="stop here"):
        est.evaluate(lambda params: None, steps=1)
    with pytest.raises(RuntimeError, match="stop here"):
        est.train(lambda params: None, steps=1)
    assert asked == ["grpc://eval:1", "grpc://train:1"]


@pytest.mark.parametrize("shards", [0, 2])
def test_no_checkpoint_period_still_leaves_the_final_checkpoint(tmp_path, shards):
    # Both None crashed train() inside TensorFlow's saver hook; the original saved nothing, which left
    # evaluate() and resuming without a checkpoint. Only the first and final steps are saved.
    import tensorflow as tf

    from model_zoo import eval_input_fn, train_input_fn

    cluster = tpu_nb.SimulatedTPU(num_cores=shards) if shards else None
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=cluster, save_checkpoints_steps=None,
                              save_checkpoints_secs=None, tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2))
    est = tpu_nb.TPUEstimator(model_fn, config=config, use_tpu=bool(shards), train_batch_size=16,
                              eval_batch_size=16)
    est.train(train_input_fn, steps=6)
    steps = sorted(int(p.rsplit("-", 1)[1]) for p in tf.train.get_checkpoint_state(str(tmp_path)).all_model_checkpoint_paths)
    assert steps[-1] == 6 and 2 not in steps and 4 not in steps
    assert est.evaluate(eval_input_fn, steps=2)["global_step"] == 6
