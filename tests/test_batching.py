"""SPEC's batch table as pure arithmetic: every row, the errors, and predict padding."""

import pytest

from tpu_nb.inputs.batching import plan_batches, plan_padding
from tpu_nb.contract.config import InputPipelineConfig as IPC

TRAIN, EVAL, PREDICT = "train", "eval", "infer"


@pytest.mark.parametrize("hosts", [1, 2])
@pytest.mark.parametrize(
    "mode,phase,calls,input_batch,model_batch",
    [
        # G=64, R=8: (calls, input_fn batch, model_fn batch) with H substituted below.
        (IPC.PER_SHARD_V1, TRAIN, "R", 8, 8),
        (IPC.PER_SHARD_V1, EVAL, "H", "G/H", 8),
        (IPC.PER_SHARD_V1, PREDICT, "H", "G/H", 8),
        (IPC.PER_HOST_V1, TRAIN, "H", "G/H", 8),
        (IPC.PER_HOST_V1, EVAL, "H", "G/H", 8),
        (IPC.PER_HOST_V2, TRAIN, "H", 8, 8),
        (IPC.PER_HOST_V2, PREDICT, "H", 8, 8),
        (IPC.BROADCAST, TRAIN, 1, 64, 64),
        (IPC.BROADCAST, EVAL, 1, 64, 64),
        (IPC.SLICED, EVAL, 1, 64, 8),
        (IPC.SLICED, PREDICT, 1, 64, 8),
    ],
)
def test_batch_table(mode, phase, calls, input_batch, model_batch, hosts):
    plan = plan_batches(64, num_replicas=8, num_hosts=hosts, input_mode=mode, phase=phase)
    subst = {"R": 8, "H": hosts, "G/H": 64 // hosts}
    assert plan.input_fn_calls == subst.get(calls, calls)
    assert plan.input_fn_batch == subst.get(input_batch, input_batch)
    assert plan.model_fn_batch == model_batch


def test_unsharded_passes_the_global_batch():
    plan = plan_batches(100)
    assert (plan.input_fn_calls, plan.input_fn_batch, plan.model_fn_batch) == (1, 100, 100)


def test_indivisible_batch_names_mode_batch_and_shards():
    with pytest.raises(ValueError, match=r"PER_HOST_V1: the train batch size 100 is not divisible by the 8 shards.*96 or 104"):
        plan_batches(100, num_replicas=8, input_mode=IPC.PER_HOST_V1)


def test_sliced_training_is_refused():
    with pytest.raises(ValueError, match="only for evaluation and prediction"):
        plan_batches(64, num_replicas=8, input_mode=IPC.SLICED, phase=TRAIN)


@pytest.mark.parametrize("bad", [0, -8, 1.5, True])
def test_bad_global_batch(bad):
    with pytest.raises((TypeError, ValueError), match="global batch size"):
        plan_batches(bad, num_replicas=8, input_mode=IPC.PER_HOST_V1)


@pytest.mark.parametrize(
    "n,batch,batches,last,padding",
    [(1003, 64, 16, 43, 21), (1024, 64, 16, 64, 0), (1, 64, 1, 1, 63), (0, 64, 0, 0, 0)],
)
def test_predict_padding(n, batch, batches, last, padding):
    plan = plan_padding(n, batch)
    assert (plan.num_batches, plan.last_batch_real, plan.padding_rows) == (batches, last, padding)
    assert 0.0 <= plan.waste < 1.0


def test_docstring_examples_hold():
    import doctest

    import tpu_nb.inputs.batching
    import tpu_nb.contract.config
    import tpu_nb.run.schedule

    for module in (tpu_nb.inputs.batching, tpu_nb.contract.config, tpu_nb.run.schedule):
        failed, _ = doctest.testmod(module)
        assert failed == 0, module.__name__
