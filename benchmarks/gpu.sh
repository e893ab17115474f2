#!/usr/bin/env bash
# The GPU figures in one command, on a machine with a CUDA GPU and this project installed with a CUDA
# build of torch (e.g. `make install TORCH=torch`, then run with PY=.venv/bin/python). Real-size
# random-init blip2-itm-vit-g config (ViT-g 1408 x 39 layers, 224 px): no hub needed.
# Writes benchmarks/results/*_cuda*.json (device name, torch/CUDA versions, images/s, ratio to the bare
# forward and to the ~1,500 images/s H100 bound, peak memory per batch size, per-stage timings).
#
#   bash benchmarks/gpu.sh                 # the extraction parts (about 20 minutes on an H100)
#   bash benchmarks/gpu.sh extract compile # only some parts: extract workers compile finetune parity decode
#   bash benchmarks/gpu.sh zeroshot genft captions heads   # the generative paths and the heads (issue 21)
#   bash benchmarks/gpu.sh extract graphs multimodal naive  # the whole-run figures of issue 20 (and 19's)
#   SIZE=tiny DEVICE=cpu EPOCHS=1 OUT=/tmp/gpu-trial bash benchmarks/gpu.sh zeroshot genft captions heads
#                                          # the same, tried end to end on CPU at tiny size
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
IMAGES=${IMAGES:-4096}
SIZE=${SIZE:-real}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/results}
EPOCHS=${EPOCHS:-2}
DAQUAR=${DAQUAR:-../shared/datasets/daquar}
PARTS=${*:-extract workers compile finetune parity decode}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: torch sees no CUDA GPU')"
  "$PY" -c "import torch; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'CUDA', torch.version.cuda)"
fi

for part in $PARTS; do
  echo "== gpu.sh: $part"
  case $part in
    # extraction: bare forward per batch size (images/s, peak memory), the forward split, stages, and the
    # whole pipeline over 4 copies of each image (so start-up and merge weigh as in a longer run)
    extract) "$PY" benchmarks/extract_speed.py --size "$SIZE" --device "$DEVICE" --images "$IMAGES" --batch-sizes 32,64,128,256,512 --aliases 4 --out "$OUT" ;;
    # the pipeline with 4, 8 and 15 decode workers
    workers) for w in 4 8 15; do
               "$PY" benchmarks/extract_speed.py --size real --device cuda --images "$IMAGES" --batch-sizes 512 --aliases 4 --workers $w
             done ;;
    # the same with torch.compile
    compile) "$PY" benchmarks/extract_speed.py --size real --device cuda --images "$IMAGES" --batch-sizes 512 --compile ;;
    # fine-tuning from cached ViT states vs live, bf16 autocast; batch 32 with a profile of where a step goes
    finetune)
      "$PY" benchmarks/finetune_speed.py --size real --device cuda --amp bfloat16 --steps 20 --batch-size 32 --profile
      "$PY" benchmarks/finetune_speed.py --size real --device cuda --amp bfloat16 --steps 10 --batch-size 256 ;;
    # fp16 / bf16 GPU features against fp32 CPU features of the same weights
    parity)
      "$PY" benchmarks/parity.py --size tiny --device cuda --dtype float16
      "$PY" benchmarks/parity.py --size real --device cuda --dtype float16 --images 32
      "$PY" benchmarks/parity.py --size real --device cuda --dtype bfloat16 --images 32 ;;
    # decode + resize per core on this machine's CPUs: how many cores the GPU needs
    decode) "$PY" benchmarks/decode_speed.py --feature-images 0 --daquar "$DAQUAR" --tag cuda_host ;;
    # zero-shot rank over 13 and 100 candidates, one generate, the naive forward; bf16; OPT-2.7b and Flan-T5-xl
    # dimensions; rank from the cache against an uncached forward, generate against model.generate
    zeroshot)
      "$PY" benchmarks/zeroshot_speed.py --size "$SIZE" --device "$DEVICE" --dtype bfloat16 --questions 32 --candidates 13,100 --out "$OUT"
      "$PY" benchmarks/zeroshot_speed.py --size "$SIZE" --lm t5 --device "$DEVICE" --dtype bfloat16 --questions 32 --candidates 13,100 --out "$OUT" ;;
    # LoRA steps from cached query states against the ViT + Q-Former in front, both recipes, bf16 autocast
    genft)
      "$PY" benchmarks/generative_finetune_speed.py --size "$SIZE" --device "$DEVICE" --amp bfloat16 --steps 10 --batch-size 16 --out "$OUT"
      "$PY" benchmarks/generative_finetune_speed.py --size "$SIZE" --device "$DEVICE" --amp bfloat16 --steps 10 --batch-size 16 --recipe paper-baseline --out "$OUT"
      "$PY" benchmarks/generative_finetune_speed.py --size "$SIZE" --lm t5 --device "$DEVICE" --amp bfloat16 --steps 10 --batch-size 16 --out "$OUT" ;;
    # captions, 5 beams and 30 tokens, from the cache against from the images
    captions) "$PY" benchmarks/caption_speed.py --size "$SIZE" --device "$DEVICE" --dtype bfloat16 --images 64 --batch-size 16 --out "$OUT" ;;
    # the paper's classifier and the compact MLP on the GPU (Easy-VQA's shapes, VQAv2's), logistic regression
    heads)
      "$PY" benchmarks/reference_mlp.py --epochs "$EPOCHS" --device "$DEVICE" --lr --out "$OUT"
      if [ "$SIZE" = real ]; then "$PY" benchmarks/vqav2_heads.py --device "$DEVICE" --configs lr:itc,mlp-paper:itc,mlp-compact:pooled --out "$OUT"; fi ;;
    # the image forward as CUDA graphs: bare forward and whole pipeline, the difference from eager (issue 20, item 2)
    graphs) "$PY" benchmarks/extract_speed.py --size "$SIZE" --device "$DEVICE" --images "$IMAGES" --batch-sizes 256,512 --aliases 4 --cuda-graphs --out "$OUT" ;;
    # question-conditioned extraction against the unimodal run, 5 questions per image (issue 19; issue 20, item 4)
    multimodal) "$PY" benchmarks/multimodal_speed.py --size "$SIZE" --device "$DEVICE" --images "$((IMAGES / 2))" --questions 5 --out "$OUT" ;;
    # featcache extract against the loop a user writes with transformers alone, same images (issue 20, item 5)
    naive) "$PY" benchmarks/extract_vs_naive.py --size "$SIZE" --device "$DEVICE" --images "$IMAGES" --out "$OUT" ;;
    *) echo "gpu.sh: unknown part '$part' (extract workers compile graphs multimodal finetune parity decode naive zeroshot genft captions heads)" >&2; exit 2 ;;
  esac
done
ls -l "$OUT"/*"${DEVICE}"*.json
