"""Choose global batch sizes and the input mode, and see what each shard and host gets.

The arithmetic is ``tpu_nb.inputs.batching`` (``plan_batches``, ``plan_padding``); this
module only lays it out per phase, turns its errors into inline messages and
builds the estimator the chosen sizes describe.

Example::

    w = BatchSizeWidget(est, connection=conn.connection, dataset_size=10_000); w
    est = w.apply()      # a new TPUEstimator: same model_fn, params and model_dir, new batch sizes
    # or press Apply, then Rebind: the variables that held the old estimator get the new one
"""

from __future__ import annotations

import html
import importlib.resources
from typing import Optional, Tuple

import anywidget
import traitlets

from ..inputs.batching import plan_batches, plan_padding
from ..contract.config import InputPipelineConfig
from ..contract.modes import ModeKeys

#: Input modes a training pipeline can use (SLICED is eval/predict only).
INPUT_MODES = ("PER_HOST_V1", "PER_HOST_V2", "PER_SHARD_V1", "BROADCAST")
_PHASES = (("train", ModeKeys.TRAIN), ("eval", ModeKeys.EVAL), ("predict", ModeKeys.PREDICT))
# TPU cores work on tiles of 8 rows along the batch; other sizes pad each step up to the next multiple.
_TPU_ROW_TILE = 8


def _shards_of(estimator, connection) -> Tuple[int, int, bool]:
    """(shards, hosts, sharded) from a Connection, else from the estimator's config (no TPU lookup)."""
    connection = getattr(connection, "connection", connection)  # a ConnectionWidget: its result, if any
    if connection is not None:
        return connection.num_cores, connection.num_hosts, connection.use_tpu
    if estimator is None or not estimator.use_tpu:
        return 1, 1, False
    from ..backends.topology import SimulatedTPU, simulated_from_env

    cluster = estimator.config.cluster
    sim = cluster if isinstance(cluster, SimulatedTPU) else simulated_from_env()
    if sim is not None:
        return sim.num_cores, sim.num_hosts, True
    shards = estimator.config.tpu_config.num_shards
    return (shards or 1), 1, True


def _mode_name(estimator) -> str:
    if estimator is None:
        return "PER_HOST_V1"
    mode = estimator.config.tpu_config.input_mode.name
    return mode if mode in INPUT_MODES else "PER_HOST_V1"


def _user_ns() -> dict:
    """The notebook's namespace (empty outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    shell = get_ipython()
    return shell.user_ns if shell is not None else {}


def _names_holding(value) -> list:
    """The notebook's public variables that hold ``value`` itself, in definition order."""
    if value is None:
        return []
    return [name for name, held in list(_user_ns().items()) if held is value and not name.startswith("_")]


def _esm_source() -> str:
    return importlib.resources.files(__package__).joinpath("batch_widget.js").read_text(encoding="utf-8")


class BatchSizeWidget(anywidget.AnyWidget):
    """Global train/eval/predict batch sizes and the input mode for a topology, checked as you type.

    Sizes the shard count does not divide show an error next to them (no exception) and block
    Apply; per-shard batches that are not a multiple of 8 get a warning; with ``dataset_size``
    the padding of the last predict batch is shown. ``apply()`` (or the Apply button) builds a
    new ``TPUEstimator`` with the same model_fn, params and model_dir, in ``.estimator``; the
    view says so and offers to rebind the notebook variables that held the old one (``rebind()``).

    Example::

        w = BatchSizeWidget(est, num_shards=8, num_hosts=2, dataset_size=1003)
        w.train_batch_size = 1024     # what typing in the browser does
        w.rows                        # per-shard / per-host sizes per phase
        est = w.apply()
    """

    _esm = _esm_source()
    train_batch_size = traitlets.Int(0).tag(sync=True)  # 0: not set
    eval_batch_size = traitlets.Int(0).tag(sync=True)
    predict_batch_size = traitlets.Int(0).tag(sync=True)
    input_mode = traitlets.Unicode("PER_HOST_V1").tag(sync=True)
    input_modes = traitlets.List(list(INPUT_MODES)).tag(sync=True)
    num_shards = traitlets.Int(1).tag(sync=True)
    num_hosts = traitlets.Int(1).tag(sync=True)
    sharded = traitlets.Bool(False).tag(sync=True)
    dataset_size = traitlets.Int(0).tag(sync=True)  # predict examples; 0: unknown
    rows = traitlets.List().tag(sync=True)
    errors = traitlets.Dict().tag(sync=True)  # phase -> message
    warnings = traitlets.List().tag(sync=True)
    padding = traitlets.Dict().tag(sync=True)
    valid = traitlets.Bool(True).tag(sync=True)
    apply_clicks = traitlets.Int(0).tag(sync=True)
    applied = traitlets.Unicode("").tag(sync=True)
    #: Notebook variables that still hold the estimator Apply replaced: the view offers to rebind them.
    rebind_names = traitlets.List().tag(sync=True)
    rebind_clicks = traitlets.Int(0).tag(sync=True)

    def __init__(self, estimator=None, connection=None, num_shards: Optional[int] = None,
                 num_hosts: Optional[int] = None, dataset_size: int = 0, **sizes):
        shards, hosts, sharded = _shards_of(estimator, connection)
        defaults = {}
        if estimator is not None:
            defaults = {"train_batch_size": estimator.train_batch_size or 0,
                        "eval_batch_size": estimator.eval_batch_size or 0,
                        "predict_batch_size": estimator.predict_batch_size or 0}
        defaults.update(sizes)
        super().__init__(num_shards=num_shards or shards, num_hosts=num_hosts or hosts,
                         sharded=sharded or bool(num_shards), input_mode=_mode_name(estimator),
                         dataset_size=dataset_size, **defaults)
        self.estimator = estimator
        self._connection_source = connection
        self._recompute()
        if hasattr(connection, "observe") and hasattr(connection, "connection"):
            # A ConnectionWidget: follow it, so connecting (again) updates the shard arithmetic.
            connection.observe(self._connection_changed, names="status")
        self.observe(self._changed, names=["train_batch_size", "eval_batch_size", "predict_batch_size",
                                           "input_mode", "num_shards", "num_hosts", "sharded", "dataset_size"])
        self.observe(self._apply_clicked, names="apply_clicks")
        self.observe(lambda change: self.rebind(), names="rebind_clicks")

    @property
    def connection(self):
        """The Connection in use (from a ConnectionWidget: its latest successful result), or None."""
        source = self._connection_source
        return getattr(source, "connection", source)

    def _connection_changed(self, change) -> None:
        if change["new"] == "connected":
            with self.hold_trait_notifications():  # one recompute, never a half-updated topology
                self.num_shards, self.num_hosts, self.sharded = _shards_of(self.estimator, self.connection)

    # -- the table ---------------------------------------------------------------------------------
    def _changed(self, change) -> None:
        self.applied, self.rebind_names = "", []
        self._recompute()

    def _recompute(self) -> None:
        rows, errors, warnings = [], {}, []
        mode = self._input_mode(errors)
        for phase, mode_key in _PHASES:
            size = getattr(self, f"{phase}_batch_size")
            if size == 0:
                rows.append({"phase": phase, "global": None})
                continue
            try:
                plan = plan_batches(size, self.num_shards, self.num_hosts, mode, mode_key) \
                    if self.sharded else plan_batches(size)
            except (ValueError, TypeError) as e:
                errors[phase] = str(e)
                rows.append({"phase": phase, "global": size})
                continue
            rows.append({"phase": phase, "global": size, "per_shard": plan.model_fn_batch,
                         "per_host": plan.per_host_batch, "input_fn_calls": plan.input_fn_calls,
                         "input_fn_batch": plan.input_fn_batch})
            if self.sharded and plan.model_fn_batch % _TPU_ROW_TILE:
                up = -(-plan.model_fn_batch // _TPU_ROW_TILE) * _TPU_ROW_TILE
                warnings.append(
                    f"{phase}: the per-shard batch {plan.model_fn_batch} is not a multiple of {_TPU_ROW_TILE}; "
                    f"a TPU pads it to {up} rows per step ({1 - plan.model_fn_batch / up:.0%} wasted). "
                    f"Use a global batch that is a multiple of {_TPU_ROW_TILE * self.num_shards}.")
        self.padding = self._padding(errors)
        self.rows, self.errors, self.warnings = rows, errors, warnings
        self.valid = not errors

    def _input_mode(self, errors) -> Optional[InputPipelineConfig]:
        if not self.sharded:
            return None
        if self.input_mode not in INPUT_MODES:
            errors["input_mode"] = f"input_mode must be one of {', '.join(INPUT_MODES)}, got {self.input_mode!r}."
            return None
        return InputPipelineConfig[self.input_mode]

    def _padding(self, errors) -> dict:
        size = self.predict_batch_size
        if not self.dataset_size or not size or "predict" in errors:
            return {}
        plan = plan_padding(self.dataset_size, size)
        out = {"num_batches": plan.num_batches, "last_batch_real": plan.last_batch_real,
               "padding_rows": plan.padding_rows if self.sharded else 0,
               "waste": plan.waste if self.sharded else 0.0}
        if not plan.padding_rows:
            out["text"] = f"{self.dataset_size} examples fill {plan.num_batches} predict batches exactly: no padding."
        elif self.sharded:
            out["text"] = (f"The last of {plan.num_batches} predict batches holds {plan.last_batch_real} real examples "
                           f"and {plan.padding_rows} padding rows: {plan.waste:.1%} of predict compute is padding "
                           "(removed from the results).")
        else:
            out["text"] = (f"The last of {plan.num_batches} predict batches is short ({plan.last_batch_real} "
                           "examples); one device runs it as is, with no padding.")
        return out

    # -- applying ----------------------------------------------------------------------------------
    def _apply_clicked(self, change) -> None:
        try:
            self.apply()
        except (ValueError, TypeError) as e:  # shown inline; the button must not raise in the kernel
            self.applied = f"Not applied: {e}"

    def apply(self, estimator=None):
        """A new TPUEstimator with these batch sizes and input mode (same model_fn, params, model_dir).

        Raises ValueError naming the problem when a size is refused (the widget shows the same text).
        """
        estimator = estimator if estimator is not None else self.estimator
        if estimator is None:
            raise ValueError("No estimator to apply the batch sizes to: pass one, BatchSizeWidget(est) or apply(est).")
        if not self.valid:
            raise ValueError(" ".join(f"{k}: {v}" for k, v in self.errors.items()))
        from ..estimator.tpu_estimator import TPUEstimator

        config = estimator.config
        if self.sharded and self.input_mode in INPUT_MODES:
            mode = InputPipelineConfig[self.input_mode]
            config = config.replace(tpu_config=config.tpu_config.replace(per_host_input_for_training=mode))
        if self.connection is not None:
            config = config.replace(cluster=self.connection.cluster, master=self.connection.master)
        use_tpu = self.connection.use_tpu if self.connection is not None else estimator.use_tpu
        new = TPUEstimator(estimator.model_fn, config=config, params=estimator.params, use_tpu=use_tpu,
                           train_batch_size=self.train_batch_size or None,
                           eval_batch_size=self.eval_batch_size or None,
                           predict_batch_size=self.predict_batch_size or None,
                           batch_axis=estimator._batch_axis, eval_on_tpu=estimator._eval_on_tpu,
                           export_to_tpu=estimator.export_to_tpu, export_to_cpu=estimator.export_to_cpu,
                           warm_start_from=estimator.warm_start_from)
        self.estimator = new
        self._replaced = estimator
        sizes = (f"train {new.train_batch_size}, eval {new.eval_batch_size}, predict {new.predict_batch_size}"
                 + (f", {self.input_mode}" if self.sharded else ""))
        holders, widget_names = _names_holding(estimator), _names_holding(self)
        where = f"{widget_names[0]}.estimator" if widget_names else "this widget's .estimator"
        if holders:
            old = " and ".join(f"`{name}`" for name in holders)
            still = f"{old} still {'holds' if len(holders) == 1 else 'hold'} the old sizes: Rebind to update it."
        else:
            still = "No notebook variable holds the old estimator."
        self.applied = f"Applied ({sizes}) to a new TPUEstimator in `{where}`. {still}"
        self.rebind_names = holders
        return new

    def rebind(self) -> list:
        """Points the notebook variables that held the replaced estimator at the applied one.

        What the view's Rebind button does; returns the names rebound (e.g. ``['est']``).
        """
        names = [name for name in self.rebind_names if _user_ns().get(name) is getattr(self, "_replaced", None)]
        for name in names:
            _user_ns()[name] = self.estimator
        if names:
            listed = " and ".join(f"`{name}`" for name in names)
            self.applied = (f"{listed} now {'holds' if len(names) == 1 else 'hold'} the new sizes (train "
                            f"{self.estimator.train_batch_size}, eval {self.estimator.eval_batch_size}, "
                            f"predict {self.estimator.predict_batch_size}).")
        self.rebind_names = []
        return names

    # -- static fallback ---------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        data, metadata = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = "tpu_nb batch sizes: " + "; ".join(
            f"{r['phase']} {r['global']}" + (f" ({r['per_shard']}/shard)" if r.get("per_shard") else "")
            for r in self.rows if r["global"])
        data["text/html"] = self._html()
        return data, metadata

    def _html(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("phase", "global", "per shard", "per host", "input_fn calls"))
        body = ""
        for r in self.rows:
            cells = [r["phase"], r["global"], r.get("per_shard"), r.get("per_host"), r.get("input_fn_calls")]
            body += "<tr>" + "".join(f"<td>{'—' if c is None else html.escape(str(c))}</td>" for c in cells) + "</tr>"
        notes = [f"<div style='color:#c62828'>{html.escape(m)}</div>" for m in self.errors.values()]
        notes += [f"<div style='color:#b35900'>{html.escape(m)}</div>" for m in self.warnings]
        if self.padding.get("text"):
            notes.append(f"<div>{html.escape(self.padding['text'])}</div>")
        where = f"{self.num_shards} shard(s) on {self.num_hosts} host(s), {self.input_mode}" if self.sharded else "one device"
        return (f"<div class='tpu-nb-batches'><b>tpu_nb batch sizes</b> ({html.escape(where)})"
                f"<table><tr>{head}</tr>{body}</table>{''.join(notes)}</div>")
