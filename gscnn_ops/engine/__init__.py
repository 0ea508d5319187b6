"""Training, evaluation and inference over the model layer (what the `gscnn` command runs).

Modules: ``train`` (:func:`~.train.train`, :class:`~.train.TrainConfig`), ``evaluate``
(:func:`~.evaluate.evaluate`, :class:`~.evaluate.ConfusionMatrix`), ``inference``
(:func:`~.inference.infer`), ``predict``, ``checkpoint``, ``distributed``, ``demo``. The
functions ``train`` and ``evaluate`` are not re-exported here: they would hide their modules.
"""

from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .evaluate import ConfusionMatrix, format_report, report_to_json
from .inference import infer
from .predict import predict_images
from .train import TrainConfig

__all__ = [
    "CheckpointError",
    "ConfusionMatrix",
    "TrainConfig",
    "format_report",
    "infer",
    "load_checkpoint",
    "load_model",
    "predict_images",
    "report_to_json",
    "save_checkpoint",
]
