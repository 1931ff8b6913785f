"""Turning what ``input_fn`` returned into per-step ``(features, labels)`` tensors."""

from __future__ import annotations

import tensorflow as tf

from .model_calls import split_features_labels


class InputPipeline:
    """Wraps a Dataset (iterated inside the device loop) or fixed tensors.

    Datasets can be read inside an on-device loop, one element per step.
    Tensors returned directly (old-style input_fns) are evaluated once per
    session run, so they only support one step per run.
    """

    def __init__(self, returned, what="input_fn"):
        self.dataset = None
        self.iterator = None
        self._tensors = None
        if isinstance(returned, tf.data.Dataset):
            self.dataset = returned
            self.iterator = tf.compat.v1.data.make_initializable_iterator(returned)
        elif returned is None:
            raise ValueError(f"{what} returned None: return a tf.data.Dataset or (features, labels).")
        else:
            self._tensors = split_features_labels(returned)

    @property
    def loopable(self) -> bool:
        return self.iterator is not None

    @property
    def initializer(self):
        return self.iterator.initializer if self.iterator is not None else None

    def next(self):
        if self.iterator is not None:
            return split_features_labels(self.iterator.get_next())
        return self._tensors
