#!/usr/bin/env bash
# The GPU figures in one command, on a machine with a CUDA GPU and this project installed with a CUDA
# build of torch (e.g. `make install TORCH=torch`, then run with PY=.venv/bin/python). Real-size
# random-init blip2-itm-vit-g config (ViT-g 1408 x 39 layers, 224 px): no hub needed.
# Writes benchmarks/results/*_cuda*.json (device name, torch/CUDA versions, images/s, ratio to the bare
# forward and to the ~1,500 images/s H100 bound, peak memory per batch size, per-stage timings).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
IMAGES=${IMAGES:-4096}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: torch sees no CUDA GPU')"
"$PY" -c "import torch; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'CUDA', torch.version.cuda)"

# extraction: bare forward per batch size (images/s, peak memory), stages, whole pipeline at the last size
"$PY" benchmarks/extract_speed.py --size real --device cuda --images "$IMAGES" --batch-sizes 32,64,128,256,512
# the same with torch.compile
"$PY" benchmarks/extract_speed.py --size real --device cuda --images "$IMAGES" --batch-sizes 256 --compile
# fine-tuning from cached ViT states vs live, bf16 autocast
"$PY" benchmarks/finetune_speed.py --size real --device cuda --amp bfloat16 --steps 20 --batch-size 32
# fp16 / bf16 GPU features against fp32 CPU features of the same weights
"$PY" benchmarks/parity.py --size tiny --device cuda --dtype float16
"$PY" benchmarks/parity.py --size real --device cuda --dtype float16 --images 64
"$PY" benchmarks/parity.py --size real --device cuda --dtype bfloat16 --images 64
# decode + resize per core on this machine's CPUs: how many cores the GPU needs
"$PY" benchmarks/decode_speed.py --feature-images 0
ls -l benchmarks/results/*cuda*.json
