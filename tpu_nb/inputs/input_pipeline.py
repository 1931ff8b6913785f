"""Turning what ``input_fn`` returned into per-step ``(features, labels)`` tensors."""

from __future__ import annotations

import tensorflow as tf

from ..graph.model_calls import split_features_labels


class InputPipeline:
    """Wraps a Dataset (iterated inside the device loop) or fixed tensors.

    Datasets can be read inside an on-device loop, one element per step.
    Tensors returned directly (old-style input_fns) are evaluated once per
    session run; with ``feed_tensors`` a host thread feeds them to the loop
    once per step instead (``host_infeed``).
    """

    def __init__(self, returned, what="input_fn", feed_tensors=False):
        self.dataset = None
        self.iterator = None
        self.infeed = None
        self._tensors = None
        if isinstance(returned, tf.data.Dataset):
            self.dataset = returned
            self.iterator = tf.compat.v1.data.make_initializable_iterator(returned)
        elif returned is None:
            raise ValueError(f"{what} returned None: return a tf.data.Dataset or (features, labels).")
        elif feed_tensors:
            from .host_infeed import HostInfeed

            # Loop-invariant tensors would give every step of a loop the same batch: feed them per step.
            self.infeed = HostInfeed()
            self.infeed.add(returned)
        else:
            self._tensors = split_features_labels(returned)

    @property
    def loopable(self) -> bool:
        return self.iterator is not None or self.infeed is not None

    @property
    def initializer(self):
        return self.iterator.initializer if self.iterator is not None else None

    def next(self):
        if self.iterator is not None:
            return split_features_labels(self.iterator.get_next())
        if self.infeed is not None:
            return split_features_labels(self.infeed.dequeue(0))
        return self._tensors
