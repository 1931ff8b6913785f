"""tpu_nb's TPU train/eval/predict graphs against the ones the original TPUEstimator builds for the same program.

Both build under the same fake TPU topologies (8 cores on 1 host, 32 cores on 4 hosts) and nothing runs;
``tests/tpu_graph_summary.py`` holds the program and reduces each graph to what can be compared across
TF 2.15 and 2.21 (replicas, feed shapes and placements, variables, the TPU ops per step). Needs an
interpreter with tensorflow-cpu 2.15 + tensorflow-estimator 2.15 named by TPU_NB_ORIGINAL_PYTHON
(.ci/run builds one), as tests/test_matches_original.py; skipped without it.

What must agree, and agrees: one replicated computation with num_replicas = cores; each core's
infeed dequeue (train: exactly the same tuple); one infeed enqueue per core on its host with the same
(host, ordinal) placement; the same variables; one CrossReplicaSum per trainable variable per step;
one outfeed enqueue per step; one outfeed dequeue per replica, created (and so concatenated) in the
same replica order with the same host and ordinal, carrying the same host_call / eval_metrics /
prediction tensors; one host-side loop per host with the same number of get_next calls (1 per host
in PER_HOST_V1, one per core in PER_HOST_V2).

Deliberate differences, asserted as such so a change on either side is noticed:

* TPUReplicatedInput 1 vs 0: the original feeds each replica its replica id (a constant per replica)
  for its ``_TPUEstimatorReplicaContext``; tpu_nb's computation takes no inputs. Around it the
  original's computation has a few more ops of its own (the id's Reshape, loop-setup Consts and
  Identities: 5 in training, under TF2 and TF1 alike); the model's own ops are the same.
* Evaluation: tpu_nb pads each host's short last batch and sends a bool mask of real rows [per_shard]
  in the infeed, and the per-replica loss [1] and the mask through the outfeed ahead of the
  eval_metrics tensors, so metric_fn sees only real rows and ``steps=None`` ends on the input's end.
  The original feeds no mask in evaluation (a short batch was not supported) and takes the loss from
  the device loop (TPUReplicatedOutput, outputs_from_all_shards=False): replica 0's loss only, averaged
  over the loop's steps, where tpu_nb averages every replica's, weighted by real rows. The
  eval_metrics tensors themselves are the same.
* Prediction: both pad and send a stopping signal; the original encodes it as an int32 padding mask
  [per_shard] (1 = padding) and a bool stop signal [per_shard, 1], tpu_nb as a bool mask of real rows
  and a bool stop signal, both [per_shard], placed ahead of the predictions in the outfeed (the
  original puts them after). The original runs a device loop until the stopping signal (one launch,
  the host dequeues a batch per session run); tpu_nb runs one predict step per session run, so it
  has one loop fewer (the infeed's only). The original predicts on one host only; tpu_nb's 32x4
  predict graph is checked in tests/test_tpu_predict_graph.py.
* Iterations per loop: the original reads a ``tpu_estimator/iterations_per_loop`` local variable in
  its loops; the builders take the count (the TPU backend passes its own variable).
* Not compared: the graph's exact op multiset. TF 2.15's SparseSoftmaxCrossEntropyWithLogits gradient
  adds a (zero) second-order term inside a control-flow-v2 TPU loop (Softmax, BatchMatMulV2, Squeeze)
  that TF 2.21 leaves out; a TF version difference, not the program's.
"""

import json
import os
import subprocess
import sys

import pytest

ORIGINAL = os.environ.get("TPU_NB_ORIGINAL_PYTHON")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tpu_graph_summary.py")
PER_SHARD = 8  # tpu_graph_summary.PER_SHARD
SAME_COUNTS = ("CrossReplicaSum", "InfeedDequeueTuple", "OutfeedEnqueueTuple", "InfeedEnqueueTuple",
               "OutfeedDequeueTuple", "TPUReplicateMetadata", "TPUReplicatedOutput", "TPUCompilationResult",
               "IteratorGetNext", "IteratorV2", "MakeIterator")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not ORIGINAL, reason="set TPU_NB_ORIGINAL_PYTHON to a python with TF 2.15 + tensorflow-estimator")]


def _start(python, impl, behavior):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    if impl == "original":
        env.pop("TF_USE_LEGACY_KERAS", None)  # its venv has no tf_keras, whatever this shell chose
    return subprocess.Popen([python, SCRIPT, impl, behavior], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _result(proc, impl):
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} graph summary failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


# Both sides build under the behaviour this session tests (CI's TF1 pass sets TPU_NB_TEST_BEHAVIOR=tf1):
# TF1 graphs use control flow v1, TF2 graphs v2 (loop bodies in the function library).
BEHAVIOR = "tf1" if os.environ.get("TPU_NB_TEST_BEHAVIOR") == "tf1" else "tf2"


@pytest.fixture(scope="module")
def both():
    """(original, tpu_nb) summaries, each from a fresh interpreter, under the same TF behaviour."""
    # Fresh processes on both sides: the original needs its own interpreter, and tpu_nb's graph must be
    # built under the same behaviour as the original's, not under whatever this process has set up.
    original = _start(ORIGINAL, "original", BEHAVIOR)
    ours = _start(sys.executable, "tpu_nb", BEHAVIOR)
    original, ours = _result(original, "original"), _result(ours, "tpu_nb")
    assert original["tf"].startswith("2.15") and not ours["tf"].startswith("2.15")
    assert set(original) == set(ours)
    return original, ours


def _cases(both, mode):
    original, ours = both
    keys = sorted(k for k in original if k.startswith(mode + "/"))
    assert keys
    return [(k, original[k], ours[k]) for k in keys]


def _placements(entries):
    return [(e["device"], e["device_ordinal"]) for e in entries]


def _tuple(entry):
    return list(zip(entry["shapes"], entry["dtypes"]))


def _check_common(case, original, ours, loops_fewer=0):
    cores = int(case.split("/")[2].split("x")[0])
    assert ours["num_replicas"] == original["num_replicas"] == [cores], case
    for op in SAME_COUNTS:
        assert ours["counts"][op] == original["counts"][op], (case, op)
    assert ours["counts"]["InfeedEnqueueTuple"] == ours["counts"]["OutfeedDequeueTuple"] == cores, case
    assert ours["counts"]["InfeedDequeueTuple"] == ours["counts"]["OutfeedEnqueueTuple"] == 1, case
    # Deliberate: the original feeds every replica its replica id.
    assert (original["counts"]["TPUReplicatedInput"], ours["counts"]["TPUReplicatedInput"]) == (1, 0), case
    loops = lambda s: s["counts"]["While"] + s["counts"]["LoopCond"]  # noqa: E731 - v2 or v1 control flow
    assert loops(ours) == loops(original) - loops_fewer, case
    assert ours["trainable_variables"] == original["trainable_variables"], case
    assert ours["global_variables"] == original["global_variables"], case
    assert ours["global_step"] == original["global_step"] == ["global_step"], case
    # Every core's infeed is filled on its own host at its own ordinal, as the original places it.
    assert _placements(ours["infeed_enqueue"]) == _placements(original["infeed_enqueue"]), case
    # Replica order: the host dequeues replica r's outfeed r-th, from the same host and ordinal.
    assert _placements(ours["outfeed_dequeue"]) == _placements(original["outfeed_dequeue"]), case
    hosts = sorted({d for d, _ in _placements(ours["outfeed_dequeue"])})
    assert len(hosts) == int(case.split("x")[-1]), case


def test_training_graphs_match_the_original(both):
    for case, original, ours in _cases(both, "train"):
        _check_common(case, original, ours)
        assert ours["counts"]["CrossReplicaSum"] == len(ours["trainable_variables"]) == 4, case
        # Exactly the original's per-core infeed and host_call outfeed.
        assert ours["infeed_dequeue"] == original["infeed_dequeue"] == [
            {"shapes": [[PER_SHARD, 8], [PER_SHARD]], "dtypes": ["float32", "int32"]}], case
        assert [_tuple(e) for e in ours["infeed_enqueue"]] == [_tuple(e) for e in original["infeed_enqueue"]], case
        assert ours["outfeed_enqueue"] == original["outfeed_enqueue"], case
        assert [_tuple(e) for e in ours["outfeed_dequeue"]] == [_tuple(e) for e in original["outfeed_dequeue"]]
        assert _tuple(ours["outfeed_dequeue"][0]) == [([1], "int64"), ([1], "float32")], case  # step, loss


def test_evaluation_graphs_match_the_original_but_for_the_mask_and_the_loss(both):
    mask = ([PER_SHARD], "bool")
    for case, original, ours in _cases(both, "eval"):
        _check_common(case, original, ours)
        assert ours["counts"]["CrossReplicaSum"] == 0, case
        # tpu_nb's infeed: the original's (features, labels) plus the mask of real rows.
        (dequeue,) = ours["infeed_dequeue"]
        assert _tuple(dequeue) == _tuple(original["infeed_dequeue"][0]) + [mask], case
        for theirs, mine in zip(original["infeed_enqueue"], ours["infeed_enqueue"], strict=True):
            assert _tuple(mine) == _tuple(theirs) + [mask], case
        # tpu_nb's outfeed: the replica's loss and mask, then the original's eval_metrics tensors.
        for theirs, mine in zip(original["outfeed_dequeue"], ours["outfeed_dequeue"], strict=True):
            assert _tuple(mine) == [([1], "float32"), mask] + _tuple(theirs), case
        assert _tuple(original["outfeed_dequeue"][0]) == [([PER_SHARD], "int32"), ([PER_SHARD, 3], "float32")]
        assert ours["outfeed_enqueue"][0]["dtypes"] == ["float32", "bool"] + original["outfeed_enqueue"][0]["dtypes"]


def test_prediction_graphs_match_the_original_but_for_the_signal_encoding(both):
    for case, original, ours in _cases(both, "predict"):
        # One loop fewer: no device loop until the stopping signal, one predict step per session run.
        _check_common(case, original, ours, loops_fewer=1)
        (theirs,), (mine,) = original["infeed_dequeue"], ours["infeed_dequeue"]
        features = ([PER_SHARD, 8], "float32")
        assert _tuple(theirs) == [features, ([PER_SHARD], "int32"), ([PER_SHARD, 1], "bool")], case
        assert _tuple(mine) == [features, ([PER_SHARD], "bool"), ([PER_SHARD], "bool")], case
        predictions = [([PER_SHARD], "int64"), ([PER_SHARD, 3], "float32")]  # class_ids, logits
        for theirs, mine in zip(original["outfeed_dequeue"], ours["outfeed_dequeue"], strict=True):
            assert _tuple(theirs) == predictions + [([PER_SHARD, 1], "bool"), ([PER_SHARD], "int32")], case
            assert _tuple(mine) == [([PER_SHARD], "bool"), ([PER_SHARD], "bool")] + predictions, case
