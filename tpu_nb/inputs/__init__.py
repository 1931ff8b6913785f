"""The input side: from an input_fn to batches on every shard, and serving inputs for export.

``batching`` (per-shard batch arithmetic and padding, no TensorFlow), ``input_pipeline`` and
``sharded_inputs`` (per-host and per-shard input_fn calls, InputContext), ``host_infeed`` (feeding
from Python), ``numpy_inputs`` (numpy_input_fn), ``serving_inputs`` (serving receivers) and
``const_lifting`` (large constants out of the GraphDef).

May import ``graph``, ``contract`` and ``reporting``.
"""
