"""Graph plumbing: building user code into a TF1 graph the way the original did.

``model_calls`` calls model_fn, input_fn and metric functions with what they expect;
``tf_tpu_ops`` makes TensorFlow's TPU ops and classes work off a TPU; ``control_edges``, ``scopes``
and ``walk`` rewrite and read graphs (shared control inputs, names as outside a loop, upstream ops).

May import ``contract`` and ``reporting`` only.
"""
