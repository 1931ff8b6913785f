"""``tpu_estimator.export_estimator_savedmodel``: a TPU serving export of a model trained by any Estimator."""


def export_estimator_savedmodel(estimator, export_dir_base, serving_input_receiver_fn, assets_extra=None,
                                as_text=False, checkpoint_path=None):
    """Exports ``estimator``'s model (its ``model_fn``, ``params`` and checkpoints) with the TPU metagraph too.

    An ``Estimator`` exports the ``serve`` metagraph only; this writes ``serve`` and ``serve,tpu`` as a
    ``TPUEstimator`` of the same ``model_fn`` would. Returns the export directory (bytes)::

        est = tpu_nb.Estimator(model_fn, model_dir='/tmp/m')
        est.train(input_fn, steps=100)
        export_estimator_savedmodel(est, '/tmp/export', serving_input_receiver_fn)
    """
    from ..contract.config import RunConfig
    from ..estimator.tpu_estimator import TPUEstimator

    for needed in ("model_fn", "model_dir", "params"):
        if not hasattr(estimator, needed):
            raise TypeError(f"export_estimator_savedmodel needs a tpu_nb Estimator or TPUEstimator (with "
                            f"model_fn, model_dir and params), got {estimator!r}.")
    tpu_estimator = TPUEstimator(estimator.model_fn, config=RunConfig(model_dir=estimator.model_dir),
                                 params=estimator.params, use_tpu=True, train_batch_size=2048,
                                 eval_batch_size=2048)
    return tpu_estimator.export_saved_model(export_dir_base, serving_input_receiver_fn, assets_extra=assets_extra,
                                            as_text=as_text, checkpoint_path=checkpoint_path)
