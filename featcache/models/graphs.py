"""CUDA graphs for the image forward (ViT + Q-Former queries + projection): one launch per batch.

At ~800 images/s a batch of 32 takes ~40 ms, and its ~2,000 kernel launches (39 ViT layers, 12 Q-Former layers,
their norms and activations) cost the feeding thread CPU time it also needs for decoded batches and copies. A
graph captured once for the run's batch shape replays them all in one call. The input is a static uint8 buffer
(a smaller last batch is padded, as the compiled path does); the outputs are cloned out of the graph's static
buffers before the next replay reuses them. Where capture fails (another device, an operation graphs cannot
hold), extraction runs eagerly and says why: `cuda_graphs` in the cache records which one ran.
"""

from __future__ import annotations

import torch


class GraphedImages:
    """The image forward of `backbone` captured for batches of `batch_size` (keep_vision as asked)."""

    def __init__(self, backbone, batch_size: int, keep_vision: bool, warmup: int = 3) -> None:
        self.backbone, self.batch_size, self.keep_vision = backbone, batch_size, keep_vision
        height, width = backbone.preprocessor.size
        dev = backbone.device
        self.static_in = torch.zeros((batch_size, 3, height, width), dtype=torch.uint8, device=dev)
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), torch.inference_mode():  # warm-up: allocations and autotuning, off the graph
            for _ in range(warmup):
                backbone.image_forward(self.static_in, keep_vision=True)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.static_out = backbone.image_forward(self.static_in, keep_vision=True)

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor, names: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """uint8 pixels (n <= batch_size) -> (copies of the outputs `names` for those n, float32 on the device;
        the ViT states in the graph's own buffer, valid until the next call)."""
        n = pixels.shape[0]
        self.static_in[:n].copy_(pixels, non_blocking=True)
        if n < self.batch_size:
            self.static_in[n:].zero_()
        self.graph.replay()
        return {k: self.static_out[k][:n].clone() for k in names if k in self.static_out}, self.static_out["vision"][:n]


def capture(backbone, batch_size: int, keep_vision: bool) -> tuple[GraphedImages | None, str]:
    """(the graphed forward, "on") or (None, "off: why"): never an error, extraction then runs eagerly."""
    if backbone.device.type != "cuda":
        return None, f"off: {backbone.device.type} is not a CUDA device"
    try:
        return GraphedImages(backbone, batch_size, keep_vision), "on"
    except Exception as exc:  # noqa: BLE001 - any capture failure means: run eagerly, and say so
        torch.cuda.synchronize(backbone.device)
        return None, f"off: capture failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
