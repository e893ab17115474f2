"""`featcache caption`: BLIP-2 as a captioner, one caption per image, written to CSV or JSONL.

The images come either from a cache made with the same generative checkpoint (the ViT never runs: the
language model reads the cached query states through `language_projection`) or from a dataset (the
ViT and Q-Former run once per image, as `Blip2ForConditionalGeneration.generate` would). Generation
settings are LAVIS's captioning defaults (beam search, 5 beams, 30 new tokens at most, no prompt);
with `do_sample` the captions are drawn with a fixed seed, so a rerun gives the same file.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from heads.threads import on_idle_cores

from ..errors import FeatcacheError
from ..models.generative import GenerativeLM


@dataclass
class CaptionSettings:
    prompt: str = ""
    num_beams: int = 5
    max_new_tokens: int = 30
    min_new_tokens: int = 1
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    do_sample: bool = False
    top_p: float = 0.9
    temperature: float = 1.0
    seed: int = 0

    def generate_kwargs(self) -> dict:
        kw = dict(num_beams=self.num_beams, max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
                  length_penalty=self.length_penalty, repetition_penalty=self.repetition_penalty,
                  do_sample=self.do_sample)
        if self.do_sample:
            kw.update(top_p=self.top_p, temperature=self.temperature)
        return kw


@torch.inference_mode()
def caption_tokens(lm: GenerativeLM, image_tokens: torch.Tensor, settings: CaptionSettings) -> list[str]:
    """Captions of a batch of images given their language-model image tokens (B, 32, d_LLM)."""
    n = image_tokens.shape[0]
    ids = lm.tokenizer([settings.prompt] * n, return_tensors="pt").input_ids  # OPT: "</s>" (+ prompt); T5: "</s>"
    embeds = torch.cat([image_tokens.to(lm.dtype), lm.embed(ids)], dim=1)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=lm.device)
    out = lm.lm.generate(inputs_embeds=embeds, attention_mask=mask, **settings.generate_kwargs())
    # byte-level tokens that end mid-character decode to U+FFFD; they are no text to write (a random model's
    # captions were full of them)
    return [" ".join(t.replace("\ufffd", " ").split()) for t in lm.tokenizer.batch_decode(out, skip_special_tokens=True)]


@on_idle_cores
def caption(model: str, out, cache=None, dataset=None, settings: CaptionSettings | None = None, device: str = "auto",
            dtype: str | None = None, batch_size: int = 16, limit: int | None = None, progress: bool = True) -> Path:
    """Write `image,caption` rows for every image of `cache` (a path) or `dataset` (a VQADataset) to `out`
    (.csv or .jsonl); returns the file. Images that failed in the cache are skipped."""
    from tqdm.auto import tqdm

    from ..cache import open_cache

    settings = settings or CaptionSettings()
    out = Path(out)
    if out.suffix not in (".csv", ".jsonl"):
        raise FeatcacheError(f"--out {out} must end in .csv or .jsonl")
    if (cache is None) == (dataset is None):
        raise FeatcacheError("give a cache or a dataset to caption, not both")
    from ..outputs import check_output_file
    from .finetune import load_generative_or_finetuned

    check_output_file(out)  # before the model loads: a read-only folder or full disk is found now, not at the end

    lm = load_generative_or_finetuned(model, device=device, dtype=dtype)
    if lm.instruction_aware:
        raise FeatcacheError(f"{model} is an InstructBLIP, whose language model reads query states computed with an "
                             f"instruction: caption takes a BLIP-2 (OPT / Flan-T5) checkpoint; for InstructBLIP use "
                             f"zeroshot --method generate on a cache extracted with --features multimodal")
    from .rank import check_lengths

    try:
        check_lengths(lm, [settings.prompt], settings.max_new_tokens, "caption prompt (with --max-new-tokens)")
    except ValueError as exc:
        raise FeatcacheError(str(exc)) from None
    torch.manual_seed(settings.seed)
    if cache is not None:
        with open_cache(cache) as c:
            lm.check_cache(c.attrs, c.path)
            keys = c.strings("images", "key")
            rows = np.flatnonzero(c.strings("images", "error") == "")[:limit]
            captions = []
            for s in tqdm(range(0, len(rows), batch_size), disable=not progress, unit="batch", desc="caption"):
                captions += caption_tokens(lm, lm.image_tokens(c, rows[s:s + batch_size]), settings)
            keys = [str(k) for k in keys[rows]]
    else:
        from ..images import ImagePreprocessor
        from .finetune import base_model_of
        from ..models.names import resolve_model

        pre = ImagePreprocessor.from_pretrained(resolve_model(base_model_of(model)))
        keys = dataset.images()[:limit]
        captions = []
        for s in tqdm(range(0, len(keys), batch_size), disable=not progress, unit="batch", desc="caption"):
            pixels = np.stack([pre(dataset.open_image(k)) for k in keys[s:s + batch_size]])
            with torch.inference_mode():
                tokens = lm.model.get_image_features(
                    pixel_values=torch.as_tensor(pixels).to(lm.device, lm.dtype)).pooler_output
            captions += caption_tokens(lm, tokens, settings)
    write_captions(out, keys, captions, {"model": model, **asdict(settings)})
    return out


def write_captions(out: Path, keys: list[str], captions: list[str], settings: dict) -> None:
    """CSV (`image,caption`) or JSONL (`{"image", "caption"}`), plus OUT.settings.json saying what made it; when
    OUT cannot be written at the end, the captions go to the temporary folder and the message names it."""
    from ..outputs import write_or_rescue

    def write(target: Path) -> None:
        with target.open("w", newline="", encoding="utf-8") as fh:
            if out.suffix == ".csv":
                writer = csv.writer(fh)
                writer.writerow(["image", "caption"])
                writer.writerows(zip(keys, captions))
            else:
                fh.writelines(json.dumps({"image": k, "caption": c}) + "\n" for k, c in zip(keys, captions))

    out.parent.mkdir(parents=True, exist_ok=True)
    write_or_rescue(out, write, f"{len(captions)} captions")
    settings_file = out.with_name(out.name + ".settings.json")
    write_or_rescue(settings_file, lambda t: t.write_text(json.dumps(settings, indent=1) + "\n"), "the caption settings")


def read_captions(path) -> dict[str, list[str]]:
    """image -> captions from a CSV (`image,caption` header) or JSONL file; several rows may share an image
    (reference captions). Names the file and line of a bad row."""
    import stat

    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise FeatcacheError(f"captions file {path} is not a regular file (a folder or FIFO); give a CSV or JSONL")
    except OSError:
        raise FeatcacheError(f"captions file {path} does not exist") from None
    found: dict[str, list[str]] = {}
    try:
        with path.open(encoding="utf-8-sig") as fh:
            if path.suffix == ".jsonl":
                for i, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                            found.setdefault(str(row["image"]), []).append(str(row["caption"]))
                        except (ValueError, KeyError, TypeError):
                            raise FeatcacheError(f"{path}:{i}: expected a JSON object with \"image\" and "
                                                 f"\"caption\"") from None
            else:
                reader = csv.DictReader(fh)
                if not {"image", "caption"} <= set(reader.fieldnames or []):
                    raise FeatcacheError(f"{path}: the header must name the columns image and caption, got "
                                         f"{reader.fieldnames}")
                for row in reader:
                    if row.get(None):  # more fields than the header: a caption with an unquoted comma, cut
                        raise FeatcacheError(f"{path}:{reader.line_num}: more fields than the header names; quote "
                                             f"a caption that holds commas (\"a cat, asleep\")")
                    found.setdefault(row["image"], []).append(row["caption"] or "")
    except UnicodeDecodeError as exc:
        raise FeatcacheError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as "
                             f"UTF-8") from None
    return found
