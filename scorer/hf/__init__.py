"""Hugging Face checkpoints: read one as it is (checkpoint), convert it to Keras (convert, deberta), write ours as one (export)."""
