"""featcache: run BLIP-2's frozen ViT + Q-Former once, keep the features in HDF5, classify on CPU.

This module imports nothing heavy: reading a cache needs only h5py and numpy, so the CPU heads
never pull in transformers. The rooms of the package are described in docs/ARCHITECTURE.md.
"""

from .cache import FeatureCache, open_cache
from .version import __version__

__all__ = ["FeatureCache", "open_cache", "__version__"]
