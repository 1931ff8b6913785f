"""predict_frame: one row per real example, in order; padding, masks, dtypes, shapes, chunks."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb
from model_zoo import CLASSES, make_data, train_input_fn
from tpu_nb.estimator.frames import batches_to_frame, iter_predict_frames, predict_frame


# ---------------------------------------------------------------- the conversion alone


class _FakeEstimator:
    """Hands out fixed batches and records how predict was called."""

    def __init__(self, batches):
        self.batches = batches
        self.calls = []
        self.consumed = 0

    def predict(self, input_fn, **kwargs):
        self.calls.append(kwargs)
        for batch in self.batches:
            self.consumed += 1
            yield batch


def _batches(sizes, start=0):
    out = []
    for n in sizes:
        ids = np.arange(start, start + n)
        out.append({"id": ids, "score": ids.astype(np.float32) / 10})
        start += n
    return out


def test_consumes_whole_batches_and_keeps_input_order():
    est = _FakeEstimator(_batches([4, 4, 3]))
    df = predict_frame(est, None)
    assert est.calls[0]["yield_single_examples"] is False
    assert df["id"].tolist() == list(range(11))
    assert df.index.equals(pd.RangeIndex(11))
    assert df["score"].dtype == np.float32


def test_is_padding_rows_are_dropped_with_the_column():
    batches = _batches([4, 4])
    batches[1]["is_padding"] = np.array([False, False, True, True])
    batches[0]["is_padding"] = np.zeros(4, bool)
    df = batches_to_frame(batches)
    assert df["id"].tolist() == [0, 1, 2, 3, 4, 5]
    assert "is_padding" not in df.columns
    assert df.index.equals(pd.RangeIndex(6))  # positions of the real rows, no gaps


def test_padding_key_option_names_the_mask_and_must_exist():
    batches = _batches([3])
    batches[0]["pad"] = np.array([0, 1, 0])
    df = batches_to_frame(batches, padding_key="pad")
    assert df["id"].tolist() == [0, 2] and "pad" not in df
    with pytest.raises(ValueError, match=r"padding_key='mask' is not a prediction key.*\['id', 'pad', 'score'\]"):
        batches_to_frame(batches, padding_key="mask")


def test_half_floats_become_float32_and_bytes_optionally_str():
    bf16 = tf.bfloat16.as_numpy_dtype
    batch = {"b": np.array([1.5, 2.5], bf16), "h": np.array([0.5, 1.0], np.float16),
             "s": np.array([b"cat", "naïve".encode()], dtype=object), "f": np.array([b"x", b"yz"])}
    df = batches_to_frame([batch])
    assert df["b"].dtype == np.float32 and df["h"].dtype == np.float32
    assert df["b"].tolist() == [1.5, 2.5]
    assert df["s"].tolist() == [b"cat", "naïve".encode()]
    decoded = batches_to_frame([batch], decode_bytes=True)
    assert decoded["s"].tolist() == ["cat", "naïve"] and decoded["f"].tolist() == ["x", "yz"]


def test_small_vectors_become_columns_or_one_array_column():
    probs = np.array([[0.1, 0.9], [0.7, 0.3]], np.float32)
    df = batches_to_frame([{"p": probs}])
    assert list(df.columns) == ["p_0", "p_1"]
    np.testing.assert_array_equal(df[["p_0", "p_1"]].to_numpy(), probs)
    arr = batches_to_frame([{"p": probs}], vectors="array")
    assert list(arr.columns) == ["p"]
    np.testing.assert_array_equal(arr["p"][1], probs[1])


def test_wide_higher_rank_and_ragged_outputs_are_array_cells():
    wide = np.arange(2 * 40).reshape(2, 40)
    images = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    df = batches_to_frame([{"wide": wide, "img": images}], max_vector_width=16)
    assert list(df.columns) == ["wide", "img"]
    assert df["img"][1].shape == (3, 3)
    np.testing.assert_array_equal(df["wide"][0], wide[0])
    # The trailing shape changes from batch to batch (sequences padded per batch): one array per row.
    ragged = batches_to_frame([{"seq": np.ones((2, 3))}, {"seq": np.ones((1, 5))}])
    assert [len(v) for v in ragged["seq"]] == [3, 3, 5]


def test_ragged_tensor_values_become_one_array_per_row():
    value = tf.compat.v1.ragged.RaggedTensorValue(np.array([1, 2, 3, 4, 5]), np.array([0, 2, 2, 5]))
    df = batches_to_frame([{"tokens": value, "n": np.array([2, 0, 3])}])
    assert [v.tolist() for v in df["tokens"]] == [[1, 2], [], [3, 4, 5]]


def test_single_tensor_predictions_and_index_column():
    df = batches_to_frame([np.array([3.0, 4.0])])
    assert list(df.columns) == ["predictions"]
    keyed = batches_to_frame(_batches([2, 2], start=100), index="id")
    assert keyed.index.name == "id" and keyed.index.tolist() == [100, 101, 102, 103]
    assert list(keyed.columns) == ["score"]
    with pytest.raises(ValueError, match="index='key' is not a prediction key"):
        batches_to_frame(_batches([2]), index="key")


def test_max_rows_stops_consuming_the_input():
    est = _FakeEstimator(_batches([10] * 100))
    df = predict_frame(est, None, max_rows=25)
    assert df["id"].tolist() == list(range(25))
    assert est.consumed == 3  # the other 97 batches were never predicted


def test_chunks_concatenate_to_the_whole_frame():
    batches = _batches([7, 7, 7, 4])
    batches[2]["is_padding"] = np.array([False] * 5 + [True] * 2)
    for b in batches[:2] + batches[3:]:
        b["is_padding"] = np.zeros(len(b["id"]), bool)
    chunks = list(iter_predict_frames(_FakeEstimator(batches), None, chunk_rows=6))
    assert [len(c) for c in chunks] == [6, 6, 6, 5]
    whole = pd.concat(chunks)
    pd.testing.assert_frame_equal(whole, batches_to_frame(batches))
    assert whole.index.equals(pd.RangeIndex(23))


def test_scalar_per_batch_and_mismatched_lengths_are_explained():
    with pytest.raises(ValueError, match="'total' has no batch dimension"):
        batches_to_frame([{"total": np.float32(3.0), "id": np.arange(2)}])
    with pytest.raises(ValueError, match="different batch sizes"):
        batches_to_frame([{"a": np.arange(2), "b": np.arange(3)}])


def test_empty_input_gives_an_empty_frame_with_the_columns():
    df = batches_to_frame([{"id": np.arange(2), "is_padding": np.ones(2, bool)}])
    assert len(df) == 0 and list(df.columns) == ["id"]
    assert len(batches_to_frame([])) == 0


# ---------------------------------------------------------------- with the engine


def _model_fn(features, labels, mode, params):
    logits = tf_keras.layers.Dense(CLASSES, name="logits",
                                   kernel_initializer=tf_keras.initializers.GlorotUniform(seed=1))(features["x"])
    if mode == tpu_nb.ModeKeys.PREDICT:
        predictions = {"index": tf.identity(features["index"]), "class_ids": tf.argmax(logits, 1),
                       "probabilities": tf.cast(tf.nn.softmax(logits), tf.bfloat16)}
        if "is_padding" in features:
            predictions["is_padding"] = features["is_padding"]
        return tpu_nb.TPUEstimatorSpec(mode, predictions=predictions)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step())
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def _input_fn(n, pad_to=None):
    x, _ = make_data(n, seed=3)

    def input_fn(params):
        features = {"x": x, "index": np.arange(n, dtype=np.int32)}
        if pad_to:  # the user's own padding, as TPU pipelines did before the engine padded
            extra = -n % pad_to
            features = {"x": np.concatenate([x, np.zeros((extra, x.shape[1]), np.float32)]),
                        "index": np.arange(n + extra, dtype=np.int32),
                        "is_padding": np.arange(n + extra) >= n}
        return tf.data.Dataset.from_tensor_slices(features).batch(params["batch_size"])

    return input_fn


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("frames_model")
    est = tpu_nb.TPUEstimator(_model_fn, config=tpu_nb.RunConfig(model_dir=str(model_dir)), use_tpu=False,
                              train_batch_size=16, predict_batch_size=16)
    est.train(lambda params: train_input_fn(params).map(lambda x, y: ({"x": x}, y)), steps=2)
    return str(model_dir)


def test_one_device_matches_per_example_predict(trained_dir):
    est = tpu_nb.TPUEstimator(_model_fn, config=tpu_nb.RunConfig(model_dir=trained_dir), use_tpu=False,
                              predict_batch_size=16)
    df = predict_frame(est, _input_fn(100))
    assert df["index"].tolist() == list(range(100))
    reference = list(est.predict(_input_fn(100)))
    np.testing.assert_array_equal(df["class_ids"].to_numpy(), [p["class_ids"] for p in reference])
    probs = df[[f"probabilities_{j}" for j in range(CLASSES)]]
    assert (probs.dtypes == np.float32).all()
    # atol: some probabilities are near zero, where two runs' float32 rounding alone fails an rtol.
    np.testing.assert_allclose(probs.to_numpy(), np.stack([p["probabilities"] for p in reference]).astype(np.float32),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("pad_to", [None, 16])
def test_shards_give_one_row_per_real_example(trained_dir, pad_to):
    # 100 examples on 4 shards at batch 16: the engine pads the last batch (and slices it off); with
    # pad_to the user's pipeline also pads to 112 rows and marks them with is_padding.
    config = tpu_nb.RunConfig(model_dir=trained_dir, cluster=tpu_nb.SimulatedTPU(4))
    est = tpu_nb.TPUEstimator(_model_fn, config=config, train_batch_size=16, predict_batch_size=16)
    df = predict_frame(est, _input_fn(100, pad_to=pad_to), index="index")
    assert df.index.tolist() == list(range(100))
    assert "is_padding" not in df.columns
    assert list(df.columns) == ["class_ids"] + [f"probabilities_{j}" for j in range(CLASSES)]


def test_frame_options_for_tpu_predict():
    from IPython.core.magic_arguments import magic_arguments, parse_argstring

    from tpu_nb.notebook.magics_extra import frame_arguments, predict_frame_from_args

    @magic_arguments()
    @frame_arguments
    def fake_tpu_predict(line):
        """What %tpu_predict gains."""

    args = parse_argstring(fake_tpu_predict, "--vectors array --index id --max-rows 3")
    df = predict_frame_from_args(_FakeEstimator(_batches([2, 2])), None, args)
    assert df.index.tolist() == [0, 1, 2] and list(df.columns) == ["score"]
