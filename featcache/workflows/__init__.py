"""Workflows that combine the rooms end to end: the demo (extract -> sweep -> report), prediction from
a saved head or fine-tune checkpoint on new images, and converting featcache 0.1's pickles."""
