"""Tiny random InstructBLIP checkpoints (a Flan-T5 or a Llama/Vicuna-like language model), saved like real ones.

They carry an `InstructBlipProcessor` (the image processor, the language model's tokenizer with the image token,
and the Q-Former's BERT tokenizer in `qformer_tokenizer/`), so they load through exactly the path
`Salesforce/instructblip-flan-t5-xl` or `-vicuna-7b` take. RANDOM weights: scores mean nothing.
"""

from __future__ import annotations

from pathlib import Path

LANGUAGE_MODELS = ("t5", "llama")


def _llama_tokenizer():
    """A byte-level BPE whose texts open with <s> (id 1), as Vicuna's do; </s> (id 2) ends an answer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from .tiny_generative import _CORPUS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([_CORPUS, _CORPUS.lower(), _CORPUS.upper()], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="left")


def build_tiny_instructblip(out_dir: str | Path, lm: str = "t5", seed: int = 0, image_size: int = 32) -> Path:
    """Write a tiny random InstructBlipForConditionalGeneration (`lm` "t5" or "llama") with its processor."""
    import torch
    from transformers import (BertTokenizer, BlipImageProcessorPil, InstructBlipConfig,
                              InstructBlipForConditionalGeneration, InstructBlipProcessor)

    from .tiny import blip2_config, tiny_vocabulary
    from .tiny_generative import _tokenizer

    if lm not in LANGUAGE_MODELS:
        raise ValueError(f"lm must be one of {LANGUAGE_MODELS}, got {lm!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer("t5") if lm == "t5" else _llama_tokenizer()
    vocab_file = out / "qformer-vocab.txt"
    vocab_file.write_text("\n".join(tiny_vocabulary()) + "\n")
    qformer_tokenizer = BertTokenizer(str(vocab_file), do_lower_case=True, model_max_length=64)
    vocab_file.unlink()
    processor = InstructBlipProcessor(BlipImageProcessorPil(size={"height": image_size, "width": image_size}),
                                      tokenizer, qformer_tokenizer, num_query_tokens=32)  # adds "<image>"
    vocab = len(processor.tokenizer)
    base = blip2_config("itm", "tiny", image_size).to_dict()
    qformer = {k: base["qformer_config"][k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                     "intermediate_size", "cross_attention_frequency",
                                                     "max_position_embeddings", "vocab_size")}
    if lm == "t5":
        text = dict(model_type="t5", d_model=64, d_ff=128, d_kv=32, num_layers=2, num_decoder_layers=2, num_heads=2,
                    vocab_size=vocab, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    else:
        text = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=256,
                    bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    config = InstructBlipConfig(vision_config=base["vision_config"], qformer_config=qformer, text_config=text,
                                num_query_tokens=32,
                                image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"))
    config.architectures = ["InstructBlipForConditionalGeneration"]
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config).eval()
    with torch.no_grad():  # as tiny_generative: informative queries that see the image, LM inputs on scale
        model.query_tokens.normal_(0.0, 0.5)
        model.language_projection.weight.mul_(4.0)
        for name, p in model.qformer.named_parameters():
            if "crossattention.attention.value.weight" in name:
                p.mul_(10.0)
            elif "crossattention.output.dense.weight" in name:
                p.mul_(5.0)
            elif "word_embeddings" in name or ".attention.attention.value.weight" in name:  # the instruction
                p.normal_(0.0, 0.5) if "word_embeddings" in name else p.mul_(10.0)  # moves the queries visibly
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
