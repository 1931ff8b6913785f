"""``%tpu_connect``, and the option sets behind ``%tpu_evaluate --dashboard`` and ``%tpu_predict -o df``.

``ExtraMagics`` holds ``%tpu_connect``; the ``*_arguments`` decorators and
``*_from_args`` functions let ``%tpu_evaluate`` and ``%tpu_predict`` grow the
dashboard and DataFrame options without duplicating them.

Example::

    %tpu_connect --backend simulated --cores 8 --hosts 2 -o conn
    est = tpu_nb.TPUEstimator(model_fn, **conn.estimator_kwargs(model_dir='/tmp/m'), train_batch_size=64)
    %tpu_evaluate est eval_fn --dashboard --watch
"""

from __future__ import annotations

from typing import Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .connection_widget import BACKENDS, Connection, ConnectionWidget

_current: Optional[Connection] = None


def current_connection() -> Optional[Connection]:
    """The connection the last successful ``%tpu_connect`` (or its widget's Connect button) made; None before one."""
    return _current


def _make_current(connection: Connection) -> None:
    """``connection`` is what current_connection() returns, and what the status bar names, from now on."""
    global _current
    from .lab_bridge import show_backend

    _current = connection
    # Without this the status bar kept naming the last run's backend after Connect chose another.
    show_backend(connection.description)


def _apply(func, *arguments):
    for arg in reversed(arguments):  # decorators apply bottom-up; keep the help in reading order
        func = arg(func)
    return func


def dashboard_arguments(func):
    """The ``--dashboard`` options of ``%tpu_evaluate``; place below ``@magic_arguments()``."""
    return _apply(
        func,
        argument("--dashboard", action="store_true",
                 help="show an evaluation dashboard: checkpoints of model_dir, results per checkpoint, charts"),
        argument("--which", choices=("all", "latest", "none"), default="all",
                 help="with --dashboard: checkpoints to evaluate now (default: all)"),
        argument("--watch", action="store_true",
                 help="with --dashboard: evaluate each new checkpoint as training writes it, in the background "
                      "(stop with the widget's button or DASHBOARD.stop())"),
        argument("--poll-secs", type=float, default=2.0, help="with --watch: how often to look for checkpoints"),
        argument("--stop-after-step", type=int, default=None,
                 help="with --watch: stop once a checkpoint at or past this step is evaluated"),
    )


def evaluate_dashboard_from_args(estimator, input_fn, args):
    """The EvalDashboard ``%tpu_evaluate ... --dashboard`` shows (``args`` from ``parse_argstring``)."""
    from .eval_dashboard import evaluate_dashboard

    return evaluate_dashboard(estimator, input_fn, steps=getattr(args, "steps", None), which=args.which,
                              watch=args.watch, poll_secs=args.poll_secs, stop_after_step=args.stop_after_step)


def frame_arguments(func):
    """The DataFrame options of ``%tpu_predict``; place below ``@magic_arguments()``."""
    return _apply(
        func,
        argument("--padding-key", default=None, metavar="KEY",
                 help="boolean prediction marking padded rows to drop (default: 'is_padding' when present)"),
        argument("--vectors", choices=("columns", "array"), default="columns",
                 help="small [n, k] outputs as columns name_0..name_k (default) or one array column"),
        argument("--decode-bytes", action="store_true", help="decode bytes outputs to str"),
        argument("--index", default=None, metavar="KEY", help="prediction key to use as the DataFrame index"),
        argument("--max-rows", type=int, default=None, help="predict at most this many rows"),
    )


def predict_frame_from_args(estimator, input_fn, args, **kwargs):
    """``tpu_nb.estimator.frames.predict_frame`` with the ``frame_arguments`` options (``kwargs`` go to it too)."""
    from ..estimator.frames import predict_frame

    return predict_frame(estimator, input_fn, padding_key=args.padding_key, vectors=args.vectors,
                         decode_bytes=args.decode_bytes, index=args.index, max_rows=args.max_rows, **kwargs)


@magics_class
class ExtraMagics(Magics):
    """``%tpu_connect``; register with ``ipython.register_magics(ExtraMagics)``."""

    @magic_arguments()
    @argument("--backend", choices=BACKENDS, default="auto",
              help="auto (TPU if named/attached, else TPU_NB_SIMULATE, else GPU, else CPU), tpu, simulated, gpu, cpu")
    @argument("--tpu", default=None, metavar="NAME", help="Cloud TPU name, 'local' or grpc://host:port")
    @argument("--zone", default=None, help="the TPU's zone")
    @argument("--project", default=None, help="the TPU's project")
    @argument("--cores", type=int, default=8, help="simulated: TPU cores (shards)")
    @argument("--hosts", type=int, default=1, help="simulated: hosts")
    @argument("--gpus", type=int, default=1, help="gpu: GPUs (more than 1: one TPU shard per GPU)")
    @argument("--timeout", type=float, default=30.0, help="seconds to find the TPU before giving up")
    @argument("--no-widget", action="store_true", help="no widget: connect, or fail with the error")
    @argument("-o", "--output", metavar="VAR", help="store the Connection in VAR")
    @line_magic
    def tpu_connect(self, line):
        """Connect to a backend and show hosts, cores, device kinds and the TensorFlow version.

        The Connection (stored with -o VAR, and again each time the form's Connect succeeds) gives
        TPUEstimator its config:
        TPUEstimator(model_fn, **VAR.estimator_kwargs(model_dir=...), ...), or VAR.run_config(...).
        Python equivalent: tpu_nb.ConnectionWidget(backend=..., ...).connect().
        """
        args = parse_argstring(self.tpu_connect, line)
        widget = ConnectionWidget(backend=args.backend, tpu=args.tpu or "", zone=args.zone or "",
                                  project=args.project or "", cores=args.cores, hosts=args.hosts, gpus=args.gpus,
                                  timeout_secs=args.timeout)
        connection = widget.connect()
        if connection is None and args.no_widget:
            raise UsageError(widget.error)
        if connection is not None:
            _make_current(connection)
        if args.output:
            self.shell.user_ns[args.output] = connection
        if args.no_widget:
            return None if args.output else connection
        # Connecting again from the form (another backend, more cores) updates -o VAR and
        # current_connection() too, so that the code below the cell uses what the widget shows.
        widget.observe(lambda change: self._connected(widget, args.output, change), names="status")
        return widget  # the cell's output: the form, with the topology or the error

    def _connected(self, widget, output, change) -> None:
        if change["new"] != "connected" or widget.connection is None:
            return
        _make_current(widget.connection)
        if output:
            self.shell.user_ns[output] = widget.connection


def load_ipython_extension(ipython):
    """Registers ``%tpu_connect``."""
    ipython.register_magics(ExtraMagics)
