"""What the model sees is what a person sees; manifests read as spreadsheets write them; damage is caught."""

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from featcache import open_cache
from featcache.datasets import Question, VQADataset, load_dataset
from featcache.errors import CacheFormatError, DatasetError
from featcache.extract import Compute, Storage, extract
from featcache.images import DECODING, load_image


@pytest.fixture
def plain(tmp_path) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (30, 44, 3), dtype=np.uint8))


def variants(plain: Image.Image, folder) -> dict[str, tuple[str, Image.Image]]:
    """name -> (file with the picture stored another way, the plain picture a person sees)."""
    folder.mkdir(exist_ok=True)
    out = {}

    rotated = plain.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF says "rotate 90 CW"
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(folder / "exif.png", exif=exif.tobytes())
    out["exif-orientation"] = (folder / "exif.png", plain)

    gray = plain.convert("L")
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(folder / "g16.png")  # 16-bit grey
    out["16-bit"] = (folder / "g16.png", gray.convert("RGB"))

    rgba = plain.convert("RGBA")
    alpha = np.zeros((plain.height, plain.width), dtype=np.uint8)
    alpha[:, plain.width // 2:] = 255
    alpha[:, plain.width // 3: plain.width // 2] = 128
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "alpha.png")
    white = Image.alpha_composite(Image.new("RGBA", plain.size, (255, 255, 255, 255)), rgba).convert("RGB")
    out["alpha"] = (folder / "alpha.png", white)

    pal = plain.quantize(16)
    pal.save(folder / "palette.png")
    out["palette"] = (folder / "palette.png", pal.convert("RGB"))

    pal_t = plain.quantize(16)
    pal_t.info["transparency"] = 0
    pal_t.save(folder / "palette_t.png", transparency=0)
    seen = Image.alpha_composite(Image.new("RGBA", plain.size, (255, 255, 255, 255)), pal_t.convert("RGBA"))
    out["palette+transparency"] = (folder / "palette_t.png", seen.convert("RGB"))

    plain.convert("CMYK").save(folder / "cmyk.tiff")
    out["cmyk"] = (folder / "cmyk.tiff", plain)

    gray.save(folder / "gray.png")
    out["grayscale"] = (folder / "gray.png", gray.convert("RGB"))
    return out


def test_every_storage_decodes_to_the_plain_picture(plain, tmp_path):
    for name, (path, expected) in variants(plain, tmp_path).items():
        got = load_image(path)
        assert got.mode == "RGB" and got.size == expected.size, name
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), err_msg=name)


def test_features_equal_those_of_the_plain_copies(plain, tmp_path, backbone):
    """Each odd storage and its plain RGB PNG copy give the same cached features."""
    qs, paths = [], {}
    for name, (path, expected) in variants(plain, tmp_path / "v").items():
        expected.save(tmp_path / f"{name}-plain.png")
        paths[name], paths[name + "-plain"] = str(path), str(tmp_path / f"{name}-plain.png")
        qs += [Question(name, "what is it?", "x", "train"), Question(name + "-plain", "what is it?", "x", "train")]
    extract(VQADataset("odd", str(tmp_path), qs, paths), tmp_path / "c.h5", model=backbone, progress=False,
            compute=Compute(workers=0), storage=Storage(store_dtype="float32"))
    with open_cache(tmp_path / "c.h5") as c:
        assert c.attrs["image_decoding"] == DECODING  # the rules are recorded
        keys = list(c.strings("images", "key"))
        query = c.array("images", "query")
    for name in variants(plain, tmp_path / "v2"):
        np.testing.assert_allclose(query[keys.index(name)], query[keys.index(name + "-plain")], atol=1e-5,
                                   err_msg=name)


# -- manifests -------------------------------------------------------------------------------------
@pytest.fixture
def images(tmp_path):
    for name in ("a", "b"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / f"{name}.png")
    return tmp_path


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_excel_style_csv_loads(images, sep):
    """UTF-8 with a byte-order mark (Excel's "CSV UTF-8"), comma / semicolon / tab, sniffed."""
    text = sep.join(["image", "question", "answer"]) + "\r\n" + sep.join(["a.png", "wie groß?", "rot"]) + "\r\n"
    (images / "m.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    ds = load_dataset(str(images / "m.csv"))
    assert [(q.image, q.text, q.answer) for q in ds.questions] == [("a.png", "wie groß?", "rot")]


def test_explicit_delimiter(images):
    (images / "m.csv").write_text("image|question|answer\na.png|what, really?|red\n")
    assert load_dataset(str(images / "m.csv"), delimiter="|").questions[0].text == "what, really?"


@pytest.mark.parametrize("content, message", [
    ("image,question,answer\na.png,what?,red\nb.png,what?\n".encode(), r"m\.csv:3: 2 fields, fewer"),
    ("image,question,answer\na.png,what?,red\nb.png,was für?,rot\n".encode("latin-1"), r"m\.csv:3: not UTF-8"),
    (b"image,question\na.png,what?\n", r"lacks column\(s\) \['answer'\]"),
])
def test_bad_csv_names_file_and_line(images, content, message):
    (images / "m.csv").write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(images / "m.csv"))


@pytest.mark.parametrize("lines, message", [
    (['{"image": "a.png", "question": "q", "answer": "x"}', '["a.png", "q", "x"]'], r"m\.jsonl:2: a JSON list"),
    (['{"image": "a.png", "question": "q", "answer": "x"}', '{"image": "b.png", "answer": "x"}'],
     r"m\.jsonl:2: the row lacks \['question'\]"),
    (['{"image": "a.png", "question": "q", "answer": "x"}', '{"image": '], r"m\.jsonl:2: not valid JSON"),
])
def test_bad_jsonl_names_file_and_line(images, lines, message):
    (images / "m.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(images / "m.jsonl"))


# -- long questions ---------------------------------------------------------------------------------
def test_long_questions_are_counted_flagged_and_adjustable(small_dataset, tiny_itm, tmp_path):
    long_q = "is there " + " and ".join(["a red circle"] * 12) + "?"
    ds = VQADataset("long", small_dataset.source,
                    small_dataset.questions + [Question(small_dataset.questions[0].image, long_q, "yes", "train")],
                    small_dataset.image_paths)
    rep = extract(ds, tmp_path / "short.h5", model=str(tiny_itm), progress=False,
                  compute=Compute(device="cpu", workers=0, max_text_length=16))
    assert rep.truncated_questions == 1 and rep.truncated_examples == [long_q]
    with open_cache(tmp_path / "short.h5") as c:
        assert c.array("questions", "truncated").tolist() == [0] * len(small_dataset.questions) + [1]
        assert c.attrs["max_text_length"] == 16
    rep = extract(ds, tmp_path / "long.h5", model=str(tiny_itm), progress=False,
                  compute=Compute(device="cpu", workers=0, max_text_length=128))
    assert rep.truncated_questions == 0
    r = CliRunner().invoke(main, ["extract", "--dataset", "easy-vqa", "--limit", "20", "--model", str(tiny_itm),
                                  "--device", "cpu", "--workers", "0", "--max-text-length", "4",
                                  "--out", str(tmp_path / "cli.h5")])
    assert r.exit_code == 0 and "longer than 4 tokens" in r.output, r.output


# -- cache integrity --------------------------------------------------------------------------------
def flip_bytes(path, dataset):
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + 16)
        data = fh.read(8)
        fh.seek(offset + 16)
        fh.write(bytes(b ^ 0xFF for b in data))


def test_damaged_feature_bytes_are_detected(small_dataset, backbone, tmp_path):
    path = tmp_path / "c.h5"
    extract(small_dataset, path, model=backbone, progress=False, compute=Compute(workers=0))
    runner = CliRunner()
    assert runner.invoke(main, ["verify", str(path)]).exit_code == 0
    flip_bytes(path, "images/query_proj")
    with open_cache(path) as c, pytest.raises(CacheFormatError, match=r"/images/query_proj .*damaged"):
        c.view("itc", "train")
    r = runner.invoke(main, ["verify", str(path)])
    assert r.exit_code == 1 and "/images/query_proj rows" in r.output and "Traceback" not in r.output, r.output


def test_truncated_cache_message_gives_advice_that_works(small_dataset, backbone, tiny_itm, tmp_path):
    path = tmp_path / "c.h5"
    extract(small_dataset, path, model=backbone, progress=False, compute=Compute(workers=0))
    path.write_bytes(path.read_bytes()[:5000])  # a copy cut short
    r = CliRunner().invoke(main, ["info", str(path)])
    assert r.exit_code == 1 and "--overwrite" in r.output and "Traceback" not in r.output, r.output
    rep = extract(small_dataset, path, model=str(tiny_itm), progress=False, compute=Compute(device="cpu", workers=0),
                  storage=Storage(overwrite=True))
    assert rep.n_images == len(small_dataset.images())
    with open_cache(path) as c:
        assert c.n_questions == len(small_dataset.questions)
