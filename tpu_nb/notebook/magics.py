"""``%load_ext tpu_nb``: line magics for training, evaluating, predicting and exporting.

Each magic looks its names up in the notebook's namespace, returns (or stores with
``-o VAR``) a :class:`~tpu_nb.notebook.handles.RunHandle`, and has a plain Python
twin in :mod:`tpu_nb.notebook.runs`. ``%tpu_train?`` shows the full help.

Example::

    %load_ext tpu_nb
    %tpu_train est train_input_fn --steps 2000
    %tpu_evaluate est eval_input_fn -o ev
    %tpu_predict est predict_input_fn -o preds
    %tpu_export est serving_input_receiver_fn /tmp/export
"""

from __future__ import annotations

import difflib
import inspect

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import magics_extra, runs, tracebacks
from .handles import TrainingInterrupted, stopped_message

_MISSING = object()


def _did_you_mean(name: str, candidates) -> str:
    """A " Did you mean 'estimator'?" suffix for a close name (a typo such as 'etimator'), or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return f" Did you mean {close[0]!r}?" if close else ""


def _safely(test, value) -> bool:
    try:
        return bool(test(value))
    except Exception:  # noqa: BLE001 - a user object whose isinstance/attributes misbehave fits nothing
        return False


@magics_class
class TpuMagics(Magics):
    """The tpu_nb magics; registered by ``%load_ext tpu_nb``."""

    # -- name lookup -------------------------------------------------------------------------------
    def _lookup(self, name: str, fits=None, kind: str = ""):
        """``name`` or ``name.attr.attr`` from the user's namespace; a one-line error if missing.

        ``fits(value)`` says which of the notebook's values could be meant: a typo is matched against
        those first, so ``etimator`` suggests the user's ``est`` rather than the imported class
        ``TPUEstimator``.
        """
        head, *rest = name.split(".")
        value = self.shell.user_ns.get(head, _MISSING)
        if value is _MISSING:
            visible = [n for n in self.shell.user_ns if not n.startswith("_")]
            if fits is not None:
                fitting = [n for n in visible if _safely(fits, self.shell.user_ns[n])]
                close = difflib.get_close_matches(head, fitting, n=1, cutoff=0.5)
                if close:
                    raise UsageError(f"name {head!r} is not defined in the notebook. Did you mean {close[0]!r}?")
                if len(fitting) == 1:  # one candidate, however far from the typo: name it
                    raise UsageError(f"name {head!r} is not defined in the notebook. "
                                     f"Did you mean {fitting[0]!r} (the notebook's only {kind})?")
                if fitting:  # several, none close: list them rather than suggest a name that does not fit
                    listed = ", ".join(repr(n) for n in fitting[:8])
                    raise UsageError(f"name {head!r} is not defined in the notebook. Its {kind}s: {listed}.")
            raise UsageError(f"name {head!r} is not defined in the notebook.{_did_you_mean(head, visible)}")
        for attr in rest:
            if not hasattr(value, attr):
                public = [a for a in dir(value) if not a.startswith("_")]
                raise UsageError(f"{name!r}: {type(value).__name__} has no attribute {attr!r}."
                                 f"{_did_you_mean(attr, public)}")
            value = getattr(value, attr)
        return value

    def _estimator(self, name: str):
        from ..estimator.tpu_estimator import TPUEstimator

        value = self._lookup(name, fits=lambda v: isinstance(v, TPUEstimator), kind="TPUEstimator")
        if not isinstance(value, TPUEstimator):
            raise UsageError(f"{name!r} is a {type(value).__name__}, not a tpu_nb.TPUEstimator.")
        return value

    def _function(self, name: str, what: str):
        # A function the notebook defined, not a class or an imported module's function.
        value = self._lookup(name, fits=lambda v: inspect.isfunction(v) and v.__module__ == "__main__",
                             kind="function")
        if not callable(value):
            raise UsageError(f"{name!r} is a {type(value).__name__}, not a function ({what} expected).")
        return value

    def _hooks(self, names):
        import tensorflow as tf

        hooks = []
        for name in names or []:
            value = self._lookup(name)
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            for hook in values:
                if not isinstance(hook, tf.compat.v1.train.SessionRunHook):
                    raise UsageError(f"{name!r} holds a {type(hook).__name__}, not a "
                                     "tf.compat.v1.train.SessionRunHook.")
            hooks += values
        return hooks

    def _deliver(self, handle, output):
        if output:
            self.shell.user_ns[output] = handle
            return None
        return handle

    # -- magics ------------------------------------------------------------------------------------
    @magic_arguments()
    @argument("estimator", help="name of a tpu_nb.TPUEstimator in the notebook")
    @argument("input_fn", help="name of the training input_fn(params)")
    @argument("--steps", type=int, default=None, help="train this many more steps")
    @argument("--max-steps", type=int, default=None, help="train until the global step reaches this")
    @argument("--hooks", nargs="+", default=None, metavar="NAME",
              help="names of SessionRunHooks (or lists of them) to run")
    @argument("--background", action="store_true",
              help="train in a thread: the kernel stays usable, the dashboard keeps updating, Stop works")
    @argument("--no-dashboard", action="store_true", help="no live dashboard")
    @argument("-o", "--output", metavar="VAR", help="store the run handle in VAR instead of returning it")
    @line_magic
    def tpu_train(self, line):
        """Train ESTIMATOR on INPUT_FN with a live dashboard (loss, eval metrics, host_call scalars,
        progress, ETA, Stop button).

        Stop (the button) or Ctrl-C / kernel interrupt end the run at the next loop boundary with a
        checkpoint ("stopped at step N"); in the foreground either ends the cell as an interrupt
        (cells queued after it do not run). Running the same command again resumes to the
        stopped run's target. Returns a RunHandle (.state, .history, .stop(), .wait(), .result).
        Python equivalent: tpu_nb.notebook.train(est, input_fn, steps=..., background=False).
        """
        args = parse_argstring(self.tpu_train, line)
        if (args.steps is None) == (args.max_steps is None):
            raise UsageError("give exactly one of --steps N or --max-steps N.")
        est = self._estimator(args.estimator)
        input_fn = self._function(args.input_fn, "an input_fn")
        hooks = self._hooks(args.hooks)
        try:
            handle = runs.train(est, input_fn, steps=args.steps, max_steps=args.max_steps, hooks=hooks,
                                background=args.background, dashboard=False if args.no_dashboard else None,
                                name=args.output)
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or Stop in the foreground (see runs.train)
            self._interrupted(runs.latest_train_handle(est), args.output, str(interrupt))
        return self._deliver(handle, args.output)

    def _interrupted(self, handle, output, fallback: str):
        """Raises the one-line TrainingInterrupted (after storing the handle in ``-o VAR``)."""
        if output and handle is not None:
            self.shell.user_ns[output] = handle
        step = handle.stopped_step if handle is not None else None
        message = stopped_message(step) if step is not None else fallback or "training interrupted"
        raise TrainingInterrupted(message, handle) from None

    @magic_arguments()
    @magics_extra.dashboard_arguments
    @argument("estimator", help="name of a tpu_nb.TPUEstimator in the notebook")
    @argument("input_fn", help="name of the evaluation input_fn(params)")
    @argument("--steps", type=int, default=None, help="evaluate this many batches (default: the whole input)")
    @argument("--checkpoint", default=None, metavar="PATH", help="checkpoint to evaluate (default: the latest)")
    @argument("-o", "--output", metavar="VAR", help="store the run handle in VAR instead of returning it")
    @line_magic
    def tpu_evaluate(self, line):
        """Evaluate ESTIMATOR on INPUT_FN; the handle's .result is the metrics dict, and the results
        are overlaid on the latest training dashboard of the same model_dir.
        Python equivalent: tpu_nb.notebook.evaluate(est, input_fn, steps=None, checkpoint_path=None).
        """
        args = parse_argstring(self.tpu_evaluate, line)
        est = self._estimator(args.estimator)
        input_fn = self._function(args.input_fn, "an input_fn")
        if args.dashboard:
            dashboard = magics_extra.evaluate_dashboard_from_args(est, input_fn, args)  # displayed already
            self._deliver(dashboard, args.output)
            return None  # returned, it would be displayed a second time as the cell's result
        return self._deliver(runs.evaluate(est, input_fn, steps=args.steps, checkpoint_path=args.checkpoint,
                                           run_name=args.output),
                             args.output)

    @magic_arguments()
    @magics_extra.frame_arguments
    @argument("estimator", help="name of a tpu_nb.TPUEstimator in the notebook")
    @argument("input_fn", help="name of the prediction input_fn(params)")
    @argument("-o", "--output", metavar="VAR", help="store the predictions DataFrame in VAR")
    @line_magic
    def tpu_predict(self, line):
        """Predict with ESTIMATOR on INPUT_FN into a DataFrame, one row per real example, in order
        (padding removed). Returns the run handle (.result is the DataFrame); ``-o df`` stores the
        DataFrame itself. Python equivalent: tpu_nb.predict_frame(est, input_fn).
        """
        args = parse_argstring(self.tpu_predict, line)
        est = self._estimator(args.estimator)
        input_fn = self._function(args.input_fn, "an input_fn")
        handle = runs.predict(est, input_fn, frame=lambda: magics_extra.predict_frame_from_args(est, input_fn, args),
                              name=args.output)
        if args.output:
            self.shell.user_ns[args.output] = handle.result
            return None
        return handle

    @magic_arguments()
    @argument("estimator", help="name of a tpu_nb.TPUEstimator in the notebook")
    @argument("serving_input_fn", help="name of the serving_input_receiver_fn()")
    @argument("dir", help="export_dir_base: the SavedModel goes in a timestamped folder under it")
    @argument("-o", "--output", metavar="VAR", help="store the run handle in VAR instead of returning it")
    @line_magic
    def tpu_export(self, line):
        """Export ESTIMATOR as a SavedModel (serve and serve,tpu metagraphs) under DIR; the handle's
        .result is the export path. Python equivalent: tpu_nb.notebook.export(est, fn, dir).
        """
        args = parse_argstring(self.tpu_export, line)
        est = self._estimator(args.estimator)
        fn = self._function(args.serving_input_fn, "a serving_input_receiver_fn")
        return self._deliver(runs.export(est, fn, args.dir, name=args.output), args.output)


def load_ipython_extension(ipython):
    """Registers the magics (``%load_ext tpu_nb``)."""
    ipython.register_magics(TpuMagics)
    ipython.register_magics(magics_extra.ExtraMagics)
    tracebacks.install(ipython)  # errors through tpu_nb show the user's frames, not tpu_nb's
    from . import lab_bridge

    lab_bridge.start(ipython)  # status bar / runs panel of the JupyterLab extension (no-op outside a kernel)


def unload_ipython_extension(ipython):
    """Removes the magics (``%unload_ext tpu_nb``)."""
    line_magics = ipython.magics_manager.magics["line"]
    for name in ("tpu_train", "tpu_evaluate", "tpu_predict", "tpu_export", "tpu_connect"):
        line_magics.pop(name, None)
    ipython.magics_manager.registry.pop("TpuMagics", None)
    ipython.magics_manager.registry.pop("ExtraMagics", None)
    tracebacks.uninstall(ipython)
    from . import lab_bridge

    lab_bridge.stop()
