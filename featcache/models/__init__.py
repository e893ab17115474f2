"""Models: everything that loads BLIP-2 weights, and the names featcache knows.

    backbone.py         the frozen ViT + Q-Former (+ text path) that extraction runs: Backbone, load_backbone
    generative.py       a generative BLIP-2's language side, fed from cached query states: GenerativeLM
    loading.py          device and dtype defaults, weights fingerprints, hub messages (shared by the loaders)
    names.py            tiny-random, tiny-random-opt|t5 -> a locally built checkpoint folder
    tiny.py, tiny_generative.py   the tiny RANDOM checkpoints' builders (saved like real ones)
    random_init.py      real-size random-weight backbones for benchmarks

A new backbone (another checkpoint family) goes here, beside backbone.py.
"""
