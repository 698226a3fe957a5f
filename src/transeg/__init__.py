"""transeg: transformer semantic segmentation (SegFormer, Segmenter, SegDeformer) in PyTorch."""

from transeg.api import create_model, load_model
from transeg.engine.loss_spec import build_loss
from transeg.errors import TransegError
from transeg.inference.backends import optimize_for_inference
from transeg.models.config import ModelConfig
from transeg.models.factory import build_model
from transeg.models.outputs import SegOutput
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import list_models
from transeg.version import __version__
from transeg.weights.native import save_model
from transeg.weights.segformer import save_hf_pretrained

__all__ = [
    "ModelConfig",
    "SegOutput",
    "Segmentor",
    "TransegError",
    "__version__",
    "build_loss",
    "build_model",
    "create_model",
    "list_models",
    "load_model",
    "optimize_for_inference",
    "save_hf_pretrained",
    "save_model",
]
