"""Models: image-text encoders (BioCLIP family over open_clip) and, later, multimodal LLMs."""

from taxonlens.models.encoders import Encoder, OpenCLIPEncoder, load_encoder

__all__ = ["Encoder", "OpenCLIPEncoder", "load_encoder"]
