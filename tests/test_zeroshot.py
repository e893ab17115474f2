"""The generative BLIP-2 as a zero-shot classifier, on tiny random OPT and T5 checkpoints: answer
scores from cached query states equal an uncached Blip2ForConditionalGeneration forward per candidate,
batched scoring equals one candidate at a time, generation equals model.generate."""

import numpy as np
import pytest
import torch

from featcache import open_cache
from featcache.extract import Compute, Storage, extract
from featcache.models.generative import load_generative
from featcache.generative.rank import PAPER_PROMPT, answer_tokens, generate_answers, score_answers
from featcache.models.tiny_generative import build_tiny_generative

ANSWERS = ["red", "blue", "circle", "yes", "no", "two"]


@pytest.fixture(scope="module", params=["opt", "t5"])
def generative(request, tmp_path_factory):
    folder = build_tiny_generative(tmp_path_factory.mktemp(f"tiny_{request.param}"), request.param, seed=0)
    return folder, load_generative(str(folder), device="cpu")


def _direct_scores(model, processor, image, prompt: str, answer_ids: list[list[int]], decoder_only: bool):
    """Log-likelihood of each candidate by one full, uncached forward of image + prompt + candidate."""
    scores = []
    for ids in answer_ids:
        x = processor(images=image, text=prompt, return_tensors="pt")
        if decoder_only:
            input_ids = torch.cat([x["input_ids"], torch.tensor([ids])], 1)
            logits = model(pixel_values=x["pixel_values"], input_ids=input_ids).logits[0, -len(ids) - 1:-1]
        else:
            logits = model(pixel_values=x["pixel_values"], input_ids=x["input_ids"], labels=torch.tensor([ids])).logits[0]
        scores.append(float(torch.log_softmax(logits.double(), -1)[torch.arange(len(ids)), torch.tensor(ids)].sum()))
    return np.array(scores)


def test_scores_from_the_cache_equal_an_uncached_forward(generative, small_dataset, tmp_path):
    from transformers import AutoProcessor

    folder, lm = generative
    extract(small_dataset, tmp_path / "gen.h5", model=str(folder), progress=False,
            compute=Compute(device="cpu", workers=0), storage=Storage(store_dtype="float32"))
    processor = AutoProcessor.from_pretrained(folder)
    with open_cache(tmp_path / "gen.h5") as cache:
        lm.check_cache(cache.attrs, cache.path)
        keys = list(cache.strings("images", "key"))
        query = cache.read("images", "query")
    tokens = lm.project(query[:3])
    prompts = [PAPER_PROMPT.format(q) for q in ("what color is it?", "is there a circle?", "how many?")]
    cached = score_answers(lm, tokens, prompts, ANSWERS)
    ids = answer_tokens(lm, ANSWERS)
    for i in range(3):
        image = small_dataset.open_image(keys[i])
        direct = _direct_scores(lm.model, processor, image, prompts[i], ids, lm.decoder_only)
        np.testing.assert_allclose(cached[i], direct, rtol=0, atol=1e-4)
    one_by_one = np.column_stack([score_answers(lm, tokens, prompts, [a])[:, 0] for a in ANSWERS])
    np.testing.assert_allclose(cached, one_by_one, rtol=1e-6, atol=1e-5)  # float32 rounding of other batch shapes
    assert cached.std() > 0  # the random model does tell candidates apart
    normed = score_answers(lm, tokens, prompts, ANSWERS, length_norm=True)
    np.testing.assert_allclose(normed, cached / np.array([len(t) for t in ids]), atol=1e-12)
    # candidates in bounded chunks (memory flat in the number of answers): chunks of 1 and of a few agree
    from featcache.generative.rank import candidate_chunk

    width = max(map(len, ids))
    middle = next(b for b in (1 << e for e in range(10, 40)) if 1 < candidate_chunk(lm, len(ANSWERS), width, 30, b))
    assert candidate_chunk(lm, len(ANSWERS), width, 30, 1) == 1
    assert 1 < candidate_chunk(lm, len(ANSWERS), width, 30, middle) <= len(ANSWERS)
    for budget in (1, middle):
        chunked = score_answers(lm, tokens, prompts, ANSWERS, chunk_bytes=budget)
        np.testing.assert_allclose(chunked, one_by_one, rtol=1e-6, atol=1e-5)


def test_generation_equals_model_generate(generative, small_dataset):
    from transformers import AutoProcessor

    folder, lm = generative
    processor = AutoProcessor.from_pretrained(folder)
    image = small_dataset.open_image(small_dataset.images()[0])
    prompt = PAPER_PROMPT.format("what color is it?")
    x = processor(images=image, text=prompt, return_tensors="pt")
    stop = {}  # OPT answers end at "\n", as BLIP-2 (LAVIS) generates them
    if lm.decoder_only:
        stop["eos_token_id"] = [lm.tokenizer("\n", add_special_tokens=False).input_ids[-1], lm.tokenizer.eos_token_id]
    with torch.no_grad():
        reference = lm.model.generate(**x, max_new_tokens=4, do_sample=False, num_beams=1, **stop)
        image_tokens = lm.model.get_image_features(pixel_values=x["pixel_values"]).pooler_output
    new = reference[0, x["input_ids"].shape[1]:] if lm.decoder_only else reference[0]
    expected = lm.tokenizer.decode(new, skip_special_tokens=True).strip().split("\n")[0].strip()
    assert generate_answers(lm, image_tokens, [prompt], max_new_tokens=4) == [expected]


def test_the_end_marker_keeps_a_prefix_answer_from_winning_for_free(generative):
    _, lm = generative
    short, long = answer_tokens(lm, ["red", "red and white"])
    assert len(long) > len(short) and short[-1] != long[len(short) - 1]  # "red" must end where "red and..." goes on


def test_errors_name_the_problem(generative, tiny_itm):
    from featcache.errors import ModelLoadError

    _, lm = generative
    with pytest.raises(ModelLoadError, match="without a language model"):
        load_generative(str(tiny_itm), device="cpu")
    with pytest.raises(ValueError, match="cannot be encoded"):
        answer_tokens(lm, ["   "])
    with pytest.raises(ModelLoadError, match="Q-Former is not"):
        lm.check_cache({"model_id": "x", "model_fingerprint": "0"}, "c.h5")


def test_zeroshot_cli_reports_like_a_sweep(generative, small_dataset, tiny_itm, tmp_path):
    import json

    from click.testing import CliRunner

    from cli import main
    from featcache.generative.zeroshot import zeroshot

    folder, lm = generative
    extract(small_dataset, tmp_path / "gen.h5", model=str(folder), progress=False,
            compute=Compute(device="cpu", workers=0))
    extract(small_dataset, tmp_path / "itm.h5", model=str(tiny_itm), progress=False,
            compute=Compute(device="cpu", workers=0))
    extract(small_dataset, tmp_path / "itmv.h5", model=str(tiny_itm), progress=False,
            compute=Compute(device="cpu", workers=0), storage=Storage(store_vision=True))
    runner = CliRunner()
    for name, cache, method, extra in (("rank", "gen.h5", "rank", []), ("norm", "gen.h5", "rank", ["--length-norm"]),
                                       ("generate", "gen.h5", "generate", ["--map-model", str(tiny_itm)]),
                                       ("itc", "itm.h5", "itc", ["--template", "statement"]),
                                       ("itm", "itmv.h5", "itm", [])):
        model = str(tiny_itm) if method in ("itc", "itm") else str(folder)
        r = runner.invoke(main, ["zeroshot", str(tmp_path / cache), "--model", model, "--method", method,
                                 "--out", str(tmp_path / f"r-{name}"), *extra])
        assert r.exit_code == 0, r.output
        results = json.loads((tmp_path / f"r-{name}" / "results.json").read_text())
        row = results["ranking"][0]
        assert row["head"] == f"zeroshot-{method}" and 0 <= row["accuracy"] <= 1
        assert set(results["per_class"]) >= set(small_dataset.answers or [q.answer for q in small_dataset.questions])
    assert row["questions"] == sum(q.split == "test" for q in small_dataset.questions)
    gen = json.loads((tmp_path / "r-generate" / "results.json").read_text())["ranking"][0]
    assert gen["exact"] + gen["mapped"] == gen["questions"] and gen["unmatched"] == 0
    # the CLI's rank is the library's
    direct = zeroshot(tmp_path / "gen.h5", str(folder), "rank")
    rank = json.loads((tmp_path / "r-rank" / "results.json").read_text())["ranking"][0]
    assert rank["accuracy"] == float((direct.pred == direct.y).mean())

    for args, message in (
        (["zeroshot", str(tmp_path / "itm.h5"), "--model", str(tiny_itm), "--method", "rank"], "without a language model"),
        (["zeroshot", str(tmp_path / "gen.h5"), "--model", str(tiny_itm), "--method", "itc"], "no ITC projections"),
        (["zeroshot", str(tmp_path / "itm.h5"), "--model", str(folder), "--method", "rank"], "Q-Former is not"),
        (["zeroshot", str(tmp_path / "gen.h5"), "--model", str(folder), "--prompt", "no slot"], "must hold"),
    ):
        r = runner.invoke(main, [*args, "--out", str(tmp_path / "bad")])
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output


def test_vqa_normalisation_and_mapping():
    from featcache.generative.answers import map_by_embedding, match_answers, normalize_answer

    assert normalize_answer("  The Two!") == "2" and normalize_answer("a red, circle.") == "red circle"
    found, matched = match_answers(["Two.", "the Circle", "purple"], ["2", "circle", "red"])
    assert found == ["2", "circle", None] and list(matched) == [True, True, False]
    table = {"purple": [1.0, 0.0], "red": [0.8, 0.6], "2": [0.0, 1.0], "circle": [-1.0, 0.0]}
    embed = lambda texts: np.array([table[t] for t in texts])  # noqa: E731
    assert map_by_embedding(["purple"], ["2", "circle", "red"], embed) == ["red"]


def test_zeroshot_of_a_dataset_extracts_first(generative, tmp_path):
    import json

    from click.testing import CliRunner

    from cli import main
    from tests.conftest import write_images

    folder, _ = generative
    paths = write_images(tmp_path / "imgs", 4)
    rows = [f"{p.name},what color is it?,{'red' if i % 2 else 'blue'},test" for i, p in enumerate(paths)]
    (tmp_path / "m.csv").write_text("image,question,answer,split\n" + "\n".join(rows) + "\n")
    r = CliRunner().invoke(main, ["zeroshot", "--dataset", str(tmp_path / "m.csv"), "--images", str(tmp_path / "imgs"),
                                  "--model", str(folder), "--save-cache", str(tmp_path / "kept.h5"),
                                  "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "rep" / "results.json").read_text())["ranking"][0]
    from featcache.generative.zeroshot import zeroshot

    direct = zeroshot(tmp_path / "kept.h5", str(folder), "rank")
    assert row["questions"] == 4 and row["accuracy"] == float((direct.pred == direct.y).mean())
