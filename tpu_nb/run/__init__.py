"""The run verbs: train, evaluate, predict and export, and the helpers of their loops.

``training``, ``evaluation``, ``prediction``, ``export``; ``schedule`` (loop sizes and step targets),
``interrupts`` (Ctrl-C and Stop at a loop boundary), ``model_dir_lock``, ``scaffolds``,
``summary_writers`` and ``memory_guard`` (refusing a graph that cannot fit before a session starts).

May import ``backends`` and everything below it; never ``estimator``, ``notebook`` or ``dropin``.
"""
