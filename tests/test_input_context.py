"""params['context'] as the original's TPUContext: which members answer where, and device names in its form."""

import pytest
import tpu_nb
from model_zoo import model_fn, train_input_fn

IPC = tpu_nb.InputPipelineConfig
_FROM_MODEL_FN = "This TPUContext instance must not be called from model_fn"
_FROM_INPUT_FN = "This TPUContext instance must not be called from input_fn"


def _sharded(tmp_path, fn, cores=4, hosts=1, mode=IPC.PER_HOST_V1, params=None):
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(cores, hosts),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2, per_host_input_for_training=mode))
    return tpu_nb.TPUEstimator(fn, config=config, params=params, train_batch_size=16)


def _context_probe(seen):
    """input_fn/model_fn recording what params['context'] answers (or raises) on each side."""

    def probe(ctx, side):
        out = {}
        for name, read in (("host", lambda: ctx.current_host), ("deployment", ctx.current_input_fn_deployment),
                           ("assignment", lambda: ctx.device_assignment),
                           ("replicas", lambda: [ctx.device_for_replica(i) for i in range(ctx.num_replicas)])):
            try:
                out[name] = read()
            except RuntimeError as e:
                out[name] = e
        seen.setdefault(side, []).append(out)

    def input_fn(params):
        probe(params["context"], "input")
        return train_input_fn(params)

    def probing_model_fn(features, labels, mode, params):
        probe(params["context"], "model")
        return model_fn(features, labels, mode, params)

    return input_fn, probing_model_fn


@pytest.mark.parametrize("hosts,mode,hosts_seen", [
    (1, IPC.PER_HOST_V1, [0]),
    (2, IPC.PER_HOST_V2, [0, 1]),
    (2, IPC.PER_SHARD_V1, [0, 0, 1, 1]),  # one call per shard, two shards per host
    (1, IPC.BROADCAST, [0]),
])
def test_context_in_input_fn(tmp_path, hosts, mode, hosts_seen):
    seen = {}
    input_fn, fn = _context_probe(seen)
    _sharded(tmp_path, fn, hosts=hosts, mode=mode).train(input_fn, steps=2)
    calls = seen["input"]
    assert [c["host"] for c in calls] == hosts_seen
    # The host device in the original's full form; the pipeline of host h sits on its first core.
    per_host = 4 // hosts
    assert [c["deployment"][0] for c in calls] == [f"/replica:0/task:0/device:CPU:{h * per_host}" for h in hosts_seen]
    # device_assignment is model_fn's; device_for_replica works everywhere, in the original's form.
    assert all(isinstance(c["assignment"], RuntimeError) and _FROM_INPUT_FN in str(c["assignment"]) for c in calls)
    assert calls[0]["replicas"] == [(f"/task:0/device:CPU:{(r // per_host) * per_host}", r % per_host)
                                    for r in range(4)]


def test_context_in_model_fn(tmp_path):
    seen = {}
    input_fn, fn = _context_probe(seen)
    _sharded(tmp_path, fn).train(input_fn, steps=2)
    (first, *_) = seen["model"]
    for name in ("host", "deployment"):
        assert isinstance(first[name], RuntimeError) and _FROM_MODEL_FN in str(first[name])
    assert first["assignment"] is None  # data parallel: the original gave None too
    assert first["replicas"] == [("/task:0/device:CPU:0", r) for r in range(4)]


def test_device_for_replica_out_of_range(tmp_path):
    errors = []

    def input_fn(params):
        with pytest.raises(ValueError, match=r"replica_id must be an int in \[0, 4\)"):
            params["context"].device_for_replica(4)
        errors.append(True)
        return train_input_fn(params)

    _sharded(tmp_path, model_fn).train(input_fn, steps=2)
    assert errors == [True]
