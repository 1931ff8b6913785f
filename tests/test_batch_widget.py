"""BatchSizeWidget: per-shard/per-host sizes, inline refusal, multiple-of-8 warning, padding, apply."""

import pytest

import tpu_nb
from model_zoo import model_fn, predict_input_fn, train_input_fn
from tpu_nb.notebook.batch_widget import BatchSizeWidget
from tpu_nb.notebook.connection_widget import connect


def _row(widget, phase):
    return next(r for r in widget.rows if r["phase"] == phase)


def _sim_estimator(tmp_path, cores=8, hosts=2):
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(cores, hosts),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2))
    return tpu_nb.TPUEstimator(model_fn, config=config, params={"lr": 0.1}, train_batch_size=64,
                               eval_batch_size=64, predict_batch_size=64)


def test_per_shard_and_per_host_sizes_follow_the_topology(tmp_path):
    w = BatchSizeWidget(_sim_estimator(tmp_path))
    assert (w.num_shards, w.num_hosts, w.sharded) == (8, 2, True)
    assert _row(w, "train") == {"phase": "train", "global": 64, "per_shard": 8, "per_host": 32,
                                "input_fn_calls": 2, "input_fn_batch": 32}
    w.input_mode = "PER_HOST_V2"  # what the browser's select does
    assert _row(w, "train")["input_fn_batch"] == 8 and _row(w, "train")["per_host"] == 32
    w.input_mode = "BROADCAST"
    assert _row(w, "train")["per_shard"] == 64 and _row(w, "train")["input_fn_calls"] == 1


def test_indivisible_size_is_refused_inline_without_an_exception(tmp_path):
    w = BatchSizeWidget(_sim_estimator(tmp_path))
    w.train_batch_size = 100  # typed in the browser: no exception may escape
    assert not w.valid
    assert "not divisible by the 8 shards" in w.errors["train"] and "96 or 104" in w.errors["train"]
    assert "per_shard" not in _row(w, "train")
    assert "not divisible" in w._repr_mimebundle_()[0]["text/html"]
    w.apply_clicks += 1  # Apply is refused, also inline
    assert w.applied.startswith("Not applied: train:")
    w.train_batch_size = 96
    assert w.valid and w.errors == {}


def test_per_shard_batch_not_a_multiple_of_8_is_warned(tmp_path):
    w = BatchSizeWidget(_sim_estimator(tmp_path), eval_batch_size=48)
    assert len(w.warnings) == 1
    assert w.warnings[0].startswith("eval: the per-shard batch 6 is not a multiple of 8") and "64" in w.warnings[0]
    w.eval_batch_size = 128
    assert w.warnings == []


def test_padding_of_the_last_predict_batch(tmp_path):
    w = BatchSizeWidget(_sim_estimator(tmp_path), dataset_size=1003)
    assert w.padding["last_batch_real"] == 43 and w.padding["padding_rows"] == 21
    assert "43 real examples and 21 padding rows" in w.padding["text"] and "2.1%" in w.padding["text"]
    w.dataset_size = 1024
    assert w.padding["padding_rows"] == 0 and "no padding" in w.padding["text"]


def test_one_device_has_no_shard_arithmetic(tmp_path):
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path)), use_tpu=False,
                              train_batch_size=30)
    w = BatchSizeWidget(est, dataset_size=100, predict_batch_size=30)
    assert not w.sharded and w.valid and w.warnings == []
    assert _row(w, "train")["per_shard"] == 30
    assert "short" in w.padding["text"] and w.padding["padding_rows"] == 0


def test_apply_builds_a_new_estimator_with_the_same_model(tmp_path):
    est = _sim_estimator(tmp_path)
    w = BatchSizeWidget(est)
    w.train_batch_size, w.predict_batch_size, w.input_mode = 32, 16, "PER_HOST_V2"
    w.apply_clicks += 1  # the Apply button
    new = w.estimator
    assert new is not est and w.applied.startswith("Applied (train 32, eval 64, predict 16")
    assert (new.train_batch_size, new.eval_batch_size, new.predict_batch_size) == (32, 64, 16)
    assert new.model_fn is est.model_fn and new.params == est.params and new.model_dir == est.model_dir
    assert new.config.tpu_config.input_mode == tpu_nb.InputPipelineConfig.PER_HOST_V2
    assert est.train_batch_size == 64  # the old one is untouched


def test_connection_sets_the_topology_and_the_applied_estimator_runs(tmp_path):
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path)), use_tpu=False,
                              train_batch_size=16, predict_batch_size=16)
    w = BatchSizeWidget(est, connection=connect("simulated", cores=4, hosts=1))
    assert (w.num_shards, w.sharded) == (4, True)
    w.train_batch_size = 8
    assert w.warnings and "per-shard batch 2" in w.warnings[0]
    new = w.apply()
    assert new.use_tpu and new.config.cluster == tpu_nb.SimulatedTPU(4, 1)
    new.train(train_input_fn, steps=1)
    assert len(list(new.predict(predict_input_fn))) == 100


def test_apply_without_an_estimator_names_the_fix():
    w = BatchSizeWidget(num_shards=8, train_batch_size=64)
    with pytest.raises(ValueError, match=r"BatchSizeWidget\(est\) or apply\(est\)"):
        w.apply()


def test_follows_a_connection_widget_when_it_connects():
    from tpu_nb.notebook.connection_widget import ConnectionWidget

    conn = ConnectionWidget(backend="cpu")
    conn.connect()
    w = BatchSizeWidget(connection=conn, train_batch_size=12)
    assert not w.sharded and w.valid
    conn.backend, conn.cores, conn.hosts = "simulated", 8, 2
    conn.connect_clicks += 1  # Connect pressed again in the connection widget
    conn.wait(20)
    assert (w.num_shards, w.num_hosts, w.sharded) == (8, 2, True)
    assert "not divisible by the 8 shards" in w.errors["train"]


def test_apply_says_where_the_new_estimator_is_and_rebinds_the_notebook_variable(tmp_path):
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    user_ns = InteractiveShell.instance().user_ns
    est = _sim_estimator(tmp_path)
    w = BatchSizeWidget(est)
    user_ns.update(est=est, w=w)
    try:
        w.train_batch_size = 128
        w.apply_clicks += 1  # the Apply button
        assert "a new TPUEstimator in `w.estimator`" in w.applied
        assert "`est` still holds the old sizes" in w.applied
        assert w.rebind_names == ["est"] and user_ns["est"] is est

        w.rebind_clicks += 1  # the Rebind button the view then shows
        assert user_ns["est"] is w.estimator and user_ns["est"].train_batch_size == 128
        assert w.applied.startswith("`est` now holds the new sizes (train 128") and w.rebind_names == []

        w.eval_batch_size = 32  # a new edit clears the offer
        assert w.applied == "" and w.rebind_names == []
    finally:
        for name in ("est", "w"):
            user_ns.pop(name, None)
