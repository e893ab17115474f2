"""`zeroshot --method itm`: the retrieval checkpoint's image-text matching head as a classifier."""

import numpy as np
import torch

from featcache.models.backbone import load_backbone
from featcache.extract import Compute, Storage, extract
from featcache.generative.itm import itm_scores
from featcache.generative.zeroshot import zeroshot


def test_itm_scores_equal_the_transformers_itm_forward(tiny_itm, small_dataset):
    from transformers import Blip2ForImageTextRetrieval

    bb = load_backbone(str(tiny_itm), device="cpu")
    model = Blip2ForImageTextRetrieval.from_pretrained(tiny_itm).eval()
    image = small_dataset.open_image(small_dataset.images()[0])
    pixels = torch.as_tensor(bb.preprocessor(image))[None]
    texts = ["Question: what color is it? Answer: red", "Question: what color is it? Answer: blue and white", "no"]
    ours = itm_scores(bb, bb.vision_states(pixels), texts)
    direct = []
    for t in texts:  # one uncached forward per pair, as the transformers docs show it
        tok = bb.tokenizer([t], return_tensors="pt")
        with torch.no_grad():
            out = model(pixel_values=pixels, input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                        use_image_text_matching_head=True)
        direct.append(float(torch.log_softmax(out.logits_per_image.double(), -1)[0, 1]))
    np.testing.assert_allclose(ours, direct, atol=1e-6)


def test_itm_from_stored_vision_states_equals_itm_from_the_images(tiny_itm, small_dataset, tmp_path):
    extract(small_dataset, tmp_path / "v.h5", model=str(tiny_itm), progress=False,
            compute=Compute(device="cpu", workers=0), storage=Storage(store_vision=True, store_dtype="float32"))
    extract(small_dataset, tmp_path / "p.h5", model=str(tiny_itm), progress=False,
            compute=Compute(device="cpu", workers=0), storage=Storage(store_dtype="float32"))
    stored = zeroshot(tmp_path / "v.h5", str(tiny_itm), "itm", split=None)
    again = zeroshot(tmp_path / "p.h5", str(tiny_itm), "itm", split=None, dataset=small_dataset)
    assert stored.settings["vision_states"] == "cache" and again.settings["vision_states"] == "recomputed"
    assert list(stored.pred) == list(again.pred) and len(stored.pred) == len(small_dataset.questions)
    assert stored.settings["template"] == "Question: {question} Answer: {answer}"
    assert set(stored.pred) <= set(stored.vocabulary)


def test_itm_errors_name_the_fix(tiny_itm, tiny_itm_other, small_dataset, tmp_path):
    import pytest

    from featcache.errors import FeatcacheError
    from featcache.models.tiny_generative import build_tiny_generative

    extract(small_dataset, tmp_path / "p.h5", model=str(tiny_itm), progress=False,
            compute=Compute(device="cpu", workers=0))
    with pytest.raises(FeatcacheError, match="--store-vision"):
        zeroshot(tmp_path / "p.h5", str(tiny_itm), "itm")
    with pytest.raises(FeatcacheError, match="needs the retrieval checkpoint that made"):
        zeroshot(tmp_path / "p.h5", str(tiny_itm_other), "itm", dataset=small_dataset)
    gen = build_tiny_generative(tmp_path / "opt", "opt")
    extract(small_dataset, tmp_path / "g.h5", model=str(gen), progress=False, compute=Compute(device="cpu", workers=0))
    with pytest.raises(FeatcacheError, match="no ITM head"):
        zeroshot(tmp_path / "g.h5", str(tiny_itm), "itm", dataset=small_dataset)
