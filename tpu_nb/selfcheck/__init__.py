"""``python -m tpu_nb.selfcheck``: the same tiny model on every backend of this machine, compared.

``cli`` (options, plan, report), ``worker`` (one process per device kind), ``model`` (the model and its
numpy reference) and ``compare`` (tolerances per backend). Uses tpu_nb through its public API only.
"""
