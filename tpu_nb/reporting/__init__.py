"""What a run tells the user: the event stream and the log lines around it.

``events`` (run started, loop finished, host_call values, checkpoints, evaluations: the stream the
notebook layer draws from), ``native_output`` (TensorFlow's C++ lines kept out of cells),
``tf_logs`` (TensorFlow's Python log filtering) and ``cell_logging`` (tpu_nb's own log lines in a cell).

The bottom layer beside ``contract``: imports nothing else of tpu_nb's.
"""
