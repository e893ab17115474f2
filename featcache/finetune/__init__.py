"""Fine-tuning mode: LoRA on the Q-Former (optionally the ViT) plus the paper's classifier, trained on
live images or on the ViT states of a --store-vision cache.

    qformer.py       the network, the training loop, evaluation, loading and prediction
    data.py          what it trains on: live images or cached ViT states, image-disjoint validation
    checkpoints.py   best/ and last/ as JSON + safetensors folders (resume after an interruption)
"""

from .data import CachedSource, LiveSource
from .qformer import FinetuneConfig, FinetuneNet, FinetuneReport, finetune, load_finetuned, predict_finetuned

__all__ = ["CachedSource", "FinetuneConfig", "FinetuneNet", "FinetuneReport", "LiveSource", "finetune",
           "load_finetuned", "predict_finetuned"]
