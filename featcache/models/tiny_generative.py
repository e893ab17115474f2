"""Tiny random generative BLIP-2 checkpoints (OPT or T5 language model), saved like real ones.

They carry a real language-model tokenizer (a byte-level BPE for OPT, a unigram model for T5, trained
here on a small corpus) and a `Blip2Processor` with the image token, so they load through exactly the
path `Salesforce/blip2-opt-2.7b` or `blip2-flan-t5-xl` take. RANDOM weights: scores mean nothing.
"""

from __future__ import annotations

from pathlib import Path

_CORPUS = (
    "Question: what color is the shape? Answer: red. Question: what shape is in the image? Answer: circle. "
    "Question: is there a triangle? Answer: yes. Question: how many chairs are there? Answer: two. "
    "Answer in one word: blue green yellow gray teal black brown white rectangle no not sure "
    "a picture of a photo of table chair bed floor wall left right front behind one three four five"
)


def _tokenizer(lm: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [_CORPUS, _CORPUS.lower(), _CORPUS.upper()]
    if lm == "opt":  # OPT: GPT-2 byte-level BPE, "</s>" (id 2) opens every text
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(corpus, trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 2)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                       unk_token="<unk>", padding_side="left")
    # T5: sentencepiece-style unigram, "</s>" (id 1) closes every text, "<pad>" (id 0) starts the decoder
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"],
                                                            unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def build_tiny_generative(out_dir: str | Path, lm: str = "opt", seed: int = 0, image_size: int = 32) -> Path:
    """Write a tiny random Blip2ForConditionalGeneration (`lm` "opt" or "t5") with its processor."""
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessorPil

    from .tiny import blip2_config

    if lm not in ("opt", "t5"):
        raise ValueError(f"lm must be 'opt' or 't5', got {lm!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(lm)
    processor = Blip2Processor(BlipImageProcessorPil(size={"height": image_size, "width": image_size}), tokenizer,
                               num_query_tokens=32)  # adds the "<image>" token
    vocab = len(tokenizer)
    base = blip2_config("opt", "tiny", image_size).to_dict()
    if lm == "opt":
        text = dict(model_type="opt", hidden_size=64, num_hidden_layers=2, ffn_dim=128, num_attention_heads=2,
                    vocab_size=vocab, word_embed_proj_dim=64, bos_token_id=2, eos_token_id=2, pad_token_id=1)
    else:
        text = dict(model_type="t5", d_model=64, d_ff=128, d_kv=32, num_layers=2, num_decoder_layers=2, num_heads=2,
                    vocab_size=vocab, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    config = Blip2Config(vision_config=base["vision_config"], qformer_config=base["qformer_config"], text_config=text,
                         num_query_tokens=32, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    config.architectures = ["Blip2ForConditionalGeneration"]
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # informative query tokens, and language-model inputs on the embeddings' scale
        model.query_tokens.normal_(0.0, 0.5)
        model.language_projection.weight.mul_(4.0)
        for name, p in model.qformer.named_parameters():  # at init the queries barely see the image (0.03%
            if "crossattention.attention.value.weight" in name:  # of their variance): make it about half
                p.mul_(10.0)
            elif "crossattention.output.dense.weight" in name:
                p.mul_(5.0)
        if lm == "opt":  # OPT's tied embeddings start at std 0.02: logits too small for LoRA to ever sharpen
            model.get_input_embeddings().weight.normal_(0.0, 0.2)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
