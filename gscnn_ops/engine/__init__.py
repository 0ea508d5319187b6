"""Training, evaluation and inference over the model layer (what the `gscnn` command runs)."""

from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .evaluate import ConfusionMatrix, evaluate, format_report, report_to_json
from .inference import infer
from .predict import predict_images
from .train import TrainConfig, train

__all__ = ["CheckpointError", "ConfusionMatrix", "TrainConfig", "evaluate", "format_report",
           "infer", "load_checkpoint", "load_model", "predict_images", "report_to_json",
           "save_checkpoint", "train"]
