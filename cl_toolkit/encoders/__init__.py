"""The encoder registry, heads, and the ``encoder/`` export format.

``create_encoder("convnet-small", in_channels=1, image_size=28)`` builds a registered backbone
(a string in, a module out, as timm's ``create_model``). Every image encoder is wrapped in
``ImageEncoder``, which owns its input normalisation, so an exported ``encoder/`` folder
(``model.safetensors`` + ``encoder.json``) is all that inference needs: images scaled to [0, 1]
at ``image_size`` go in, ``embedding_dim`` features come out.

Text encoders are Hugging Face models loaded through ``transformers`` (``AutoModel`` +
``AutoTokenizer``) with mean pooling and an optional linear head: ``create_text_encoder`` takes a
registered name (``minilm-l6``, installed with the project, never downloaded), a local model
folder, or a hub name. Their ``encoder/`` folder holds the model folder (``model/``), the
head (``head.safetensors``) and ``encoder.json`` with ``"modality": "text"``.
"""

from .image import ImageEncoder, create_encoder, default_encoder, mlp
from .registry import DEFAULT_TEXT_ENCODER, ENCODERS, TEXT_ARGS, encoder_args, is_text_encoder, register_encoder
from .store import (
    ENCODER_FORMAT,
    export_encoder,
    export_image_encoder,
    export_text_encoder,
    load_encoder,
    save_encoder,
    save_text_encoder,
)
from .text import TextEncoder, collate_cache, create_text_encoder

__all__ = [
    "DEFAULT_TEXT_ENCODER", "ENCODERS", "ENCODER_FORMAT", "ImageEncoder", "TEXT_ARGS", "TextEncoder",
    "collate_cache", "create_encoder", "create_text_encoder", "default_encoder", "encoder_args",
    "export_encoder", "export_image_encoder", "export_text_encoder", "is_text_encoder", "load_encoder", "mlp",
    "register_encoder", "save_encoder", "save_text_encoder",
]
