"""transeg: transformer semantic segmentation (SegFormer, Segmenter, SegDeformer) in PyTorch."""

from transeg.api import load_model
from transeg.engine.optimize import optimize_for_inference
from transeg.errors import TransegError
from transeg.models.config import ModelConfig, build_model
from transeg.models.outputs import SegOutput
from transeg.models.segmentor import Segmentor
from transeg.models.zoo import create_model, list_models
from transeg.weights.io import save_hf_pretrained, save_model

__version__ = "0.1.0"

__all__ = [
    "ModelConfig",
    "SegOutput",
    "Segmentor",
    "TransegError",
    "build_model",
    "create_model",
    "list_models",
    "load_model",
    "optimize_for_inference",
    "save_hf_pretrained",
    "save_model",
]
