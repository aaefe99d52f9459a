"""The classifier head's names and activations, shared by the Keras model (scorer.classifier)
and the Hugging Face converters (scorer.hf.convert, scorer.hf.export), which sit below it.

    backbone -> pooling -> [HEAD_DENSE + activation] -> dropout -> HEAD_NAME (logits)
"""

from __future__ import annotations

HEAD_NAME = "classifier_head"  # the last dense layer: one logit per label
HEAD_DENSE = "head_dense"  # the dense layer before it, when the spec has a head_activation
# Activations of ours (keras.activations names; gelu_tanh: the tanh approximation of GELU);
# None: no dense layer before the classifier.
HEAD_ACTIVATIONS = (None, "tanh", "relu", "gelu", "gelu_tanh", "silu")


def activation(name: str):
    """A Keras activation for one of ours (see HEAD_ACTIVATIONS)."""
    import keras  # a function-local import of a third-party module: the spec layer loads no Keras

    if name == "gelu":
        return lambda x: keras.activations.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return lambda x: keras.activations.gelu(x, approximate=True)
    return keras.activations.get(name)
