"""The generative BLIP-2 (OPT / Flan-T5 language model) as a zero-shot classifier: each candidate
answer scored by the language model given the image's cached query tokens, or free generation mapped
onto the answer vocabulary."""
