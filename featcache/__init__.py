"""featcache: run BLIP-2's frozen ViT + Q-Former once, keep the features in HDF5, classify on CPU.

This module imports nothing heavy: reading a cache needs only h5py and numpy, so the CPU heads
never pull in transformers.
"""

__version__ = "0.1.0"

from .cache import FeatureCache, open_cache  # noqa: E402

__all__ = ["FeatureCache", "open_cache", "__version__"]
