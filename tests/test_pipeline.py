"""The GPU-feeding pipeline on CPU: uint8 shipping is exact, auto settings resolve, options keep features."""

import numpy as np
import pytest
import torch
from PIL import Image

from featcache import open_cache
from featcache.datasets import load_dataset
from featcache.extract import Compute, Storage, extract
from featcache.extract.pipeline import auto_batch_size, auto_workers, find_largest


def pictures():
    ds = load_dataset("easy-vqa", limit=100)
    rng = np.random.default_rng(0)
    return [ds.open_image(k) for k in ds.images()[:12]] + [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(31, 47), (500, 300), (900, 1400)]]


@pytest.mark.parametrize("side", [None, 224])
def test_uint8_plus_lookup_table_equals_the_processor_bit_for_bit(backbone, side):
    """What decode workers ship (uint8) and what the device computes from it (the lookup table) give
    exactly the pixels transformers' processor gives today's CPU path."""
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    from featcache.images import ImagePreprocessor, normalize_uint8

    pre = backbone.preprocessor if side is None else ImagePreprocessor(BlipImageProcessorPil(size={"height": side,
                                                                                                    "width": side}))
    table = torch.from_numpy(pre.lookup_table())
    for image in pictures():
        expected = pre.processor(images=image, return_tensors="np")["pixel_values"][0]
        u8 = pre.resize_uint8(image)
        assert u8.dtype == np.uint8 and u8.shape == expected.shape
        np.testing.assert_array_equal(normalize_uint8(torch.from_numpy(u8)[None], table)[0].numpy(), expected)


def test_backbone_features_from_uint8_equal_those_from_float(backbone):
    images = pictures()[:6]
    u8 = np.stack([backbone.preprocessor.resize_uint8(im) for im in images])
    as_float = np.stack([backbone.preprocessor.processor(images=im, return_tensors="np")["pixel_values"][0]
                         for im in images])
    a, b = backbone.encode_images(u8), backbone.encode_images(as_float)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_sdpa_attention_is_used_and_recorded(backbone):
    assert backbone.model.config.vision_config._attn_implementation == "sdpa"
    assert backbone.provenance()["attn_implementation"] == "sdpa"


def test_auto_settings():
    assert find_largest(lambda n: n <= 300) == 256
    assert find_largest(lambda n: n <= 20) == 16
    assert find_largest(lambda n: True, limit=128) == 128
    with pytest.raises(RuntimeError):
        find_largest(lambda n: False)
    assert auto_workers(torch.device("cuda"), cores=16) == 8
    assert auto_workers(torch.device("cuda"), cores=4) == 3
    assert auto_workers(torch.device("cuda"), cores=64) == 8
    assert auto_workers(torch.device("cpu"), cores=2) == 0
    assert auto_workers(torch.device("cpu"), cores=16) == 4


def test_auto_extract_equals_fixed_settings(small_dataset, backbone, tmp_path):
    assert auto_batch_size(backbone) == 32  # CPU: RAM is not probed
    extract(small_dataset, tmp_path / "a.h5", model=backbone, progress=False,
            compute=Compute(batch_size="auto", workers="auto"))
    extract(small_dataset, tmp_path / "b.h5", model=backbone, progress=False,
            compute=Compute(batch_size=32, workers=0))
    with open_cache(tmp_path / "a.h5") as a, open_cache(tmp_path / "b.h5") as b:
        for name in ("query", "query_proj"):
            np.testing.assert_array_equal(a.array("images", name), b.array("images", name))


def test_bfloat16_and_compile_keep_features_close(small_dataset, tiny_itm, tmp_path):
    """--dtype bfloat16 (recorded, so it is never mixed with float32 features) and --compile."""
    extract(small_dataset, tmp_path / "fp32.h5", model=str(tiny_itm), progress=False,
            compute=Compute(device="cpu", workers=0), storage=Storage(store_dtype="float32"))
    extract(small_dataset, tmp_path / "bf16.h5", model=str(tiny_itm), progress=False,
            compute=Compute(device="cpu", dtype="bfloat16", workers=0), storage=Storage(store_dtype="float32"))
    comp = extract(small_dataset, tmp_path / "comp.h5", model=str(tiny_itm), progress=False,
                   compute=Compute(device="cpu", compile=True, workers=0, batch_size=5),
                   storage=Storage(store_dtype="float32"))  # smaller last batches: padded
    assert comp.n_images % 5 and set(comp.stage_seconds) >= {"prepare", "images", "images_decode_wait", "merge"}
    with open_cache(tmp_path / "fp32.h5") as ref, open_cache(tmp_path / "bf16.h5") as bf, \
            open_cache(tmp_path / "comp.h5") as comp:
        assert bf.attrs["compute_dtype"] == "bfloat16" and ref.attrs["compute_dtype"] == "float32"
        assert ref.attrs["qformer_matmul"] == bf.attrs["qformer_matmul"] == "fp32"  # TF32 is for CUDA only
        q = ref.array("images", "query")
        np.testing.assert_allclose(comp.array("images", "query"), q, atol=1e-5)
        np.testing.assert_allclose(bf.array("images", "query"), q, atol=0.1 * np.abs(q).max())
        assert not np.array_equal(bf.array("images", "query"), q)


def test_jpeg_draft_decodes_big_photos_small_and_is_recorded(backbone, tmp_path):
    from featcache.datasets import Question, VQADataset
    from featcache.images import JPEG_DRAFT, load_image

    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 255, (18, 24, 3), dtype=np.uint8)).resize((2400, 1800), Image.BICUBIC)
    smooth.save(tmp_path / "big.jpg", quality=92)
    assert load_image(tmp_path / "big.jpg").size == (2400, 1800)
    assert load_image(tmp_path / "big.jpg", draft_size=64).size == (300, 225)  # 1/8 keeps both sides >= 64
    pre = backbone.preprocessor
    full = pre.resize_uint8(load_image(tmp_path / "big.jpg")).astype(int)
    draft = pre.resize_uint8(load_image(tmp_path / "big.jpg", draft_size=2 * max(pre.size))).astype(int)
    assert np.abs(full - draft).mean() < 2.0  # grey levels, out of 255

    ds = VQADataset("big", str(tmp_path), [Question("big", "what?", "x", "train")], {"big": str(tmp_path / "big.jpg")})
    extract(ds, tmp_path / "d.h5", model=backbone, progress=False, compute=Compute(jpeg_draft=True, workers=0))
    with open_cache(tmp_path / "d.h5") as c:
        assert c.attrs["image_decoding"].endswith(JPEG_DRAFT)
    assert backbone.preprocessor.jpeg_draft is False  # the run's choice; the caller's backbone is untouched
