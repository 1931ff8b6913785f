"""tpu_nb: TPUEstimator's contract on TensorFlow >= 2.16, and a notebook toolkit on top.

Code written for ``tf.compat.v1.estimator.tpu`` needs only its imports changed::

    from tpu_nb import TPUEstimator, TPUEstimatorSpec, RunConfig, TPUConfig, ModeKeys
"""

# First, before any module imports TensorFlow: in a Jupyter kernel its load-time C++ lines go to a
# log file rather than into the cell (see native_output).
from .reporting import native_output

native_output.import_tensorflow()

from .reporting import cell_logging  # noqa: E402

cell_logging.install()

from .reporting import events  # noqa: E402
from .contract.config import InputPipelineConfig, RunConfig, TPUConfig
from .backends.cross_shard import CrossShardOptimizer
from .estimator.tpu_estimator import Estimator, TPUEstimator
from .run.export import (EXPORT_TAG_MAP, ClassificationOutput, ExportSavedModelApiVersion, PredictOutput,
                         RegressionOutput)
from .estimator.frames import batches_to_frame, iter_predict_frames, predict_frame
from .graph.model_calls import Keras3InModelFnError
from .run.model_dir_lock import ModelDirBusyError
from .contract.modes import ModeKeys
from .contract.spec import EstimatorSpec, ServingInputReceiver, TensorServingInputReceiver, TPUEstimatorSpec
from .backends.worker_runtime import WorkerLostError
from .inputs.numpy_inputs import numpy_input_fn
from .inputs.serving_inputs import (SupervisedInputReceiver, build_parsing_serving_input_receiver_fn,
                                    build_raw_serving_input_receiver_fn, build_raw_supervised_input_receiver_fn)
from .backends.topology import MultiWorker, SimulatedTPU
from .backends.tpu_connection import TPUConnectionError, TPUTopology, resolve_tpu
from .run.training import NanLossError
from .run.memory_guard import InsufficientMemoryError
from .backends.xla_check import CompatibilityReport
from .contract.warm_start import WarmStartSettings
from .estimator.exporters import BestExporter, Exporter, FinalExporter, LatestExporter
from .estimator.train_eval import EvalSpec, TrainSpec, train_and_evaluate

__version__ = "0.1.0"

__all__ = [
    "BatchSizeWidget",
    "ConnectionWidget",
    "EvalDashboard",
    "batches_to_frame",
    "iter_predict_frames",
    "predict_frame",
    "CompatibilityReport",
    "TPUConnectionError",
    "TPUTopology",
    "resolve_tpu",
    "ClassificationOutput",
    "CrossShardOptimizer",
    "EXPORT_TAG_MAP",
    "EstimatorSpec",
    "ExportSavedModelApiVersion",
    "InputPipelineConfig",
    "Keras3InModelFnError",
    "ModeKeys",
    "MultiWorker",
    "ModelDirBusyError",
    "NanLossError",
    "InsufficientMemoryError",
    "PredictOutput",
    "RegressionOutput",
    "RunConfig",
    "ServingInputReceiver",
    "SupervisedInputReceiver",
    "build_parsing_serving_input_receiver_fn",
    "build_raw_serving_input_receiver_fn",
    "build_raw_supervised_input_receiver_fn",
    "SimulatedTPU",
    "TPUConfig",
    "TensorServingInputReceiver",
    "TPUEstimator",
    "Estimator",
    "TPUEstimatorSpec",
    "WarmStartSettings",
    "WorkerLostError",
    "numpy_input_fn",
    "events",
    "install_estimator_modules",
    "train_and_evaluate",
    "TrainSpec",
    "EvalSpec",
    "Exporter",
    "LatestExporter",
    "BestExporter",
    "FinalExporter",
]


# Notebook widgets need the `notebooks` extras (anywidget...): imported on first use only, so the
# engine never imports notebook code.
_NOTEBOOK_NAMES = {"ConnectionWidget", "BatchSizeWidget", "EvalDashboard"}


def __getattr__(name):
    if name in _NOTEBOOK_NAMES:
        from . import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'tpu_nb' has no attribute {name!r}")


def install_estimator_modules(quiet: bool = False) -> str:
    """Makes ``tf.estimator``, ``tf.compat.v1.estimator`` and ``tensorflow_estimator`` resolve to tpu_nb.

    For the rest of the process (a notebook's later cells), code written for the original runs unchanged;
    see ``tpu_nb.dropin.install``. ``python -m tpu_nb run program.py`` does this for a whole program.
    """
    from .dropin.installing import install

    return install(quiet=quiet)


def load_ipython_extension(ipython):
    """``%load_ext tpu_nb``: registers the tpu_nb magics (the notebook layer is imported only here)."""
    from .notebook.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython):
    from .notebook.magics import unload_ipython_extension as _unload

    _unload(ipython)
