"""Checkpoint tensors onto backbone variables: the helpers the converters (scorer.hf.convert,
scorer.hf.deberta) and the exporter (scorer.hf.export) share."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from scorer.errors import ModelError


def tensor_key(names: Mapping, name: str, prefix: str) -> str:
    """The checkpoint's name for a tensor a converter asks for: as given, with the encoder's
    prefix, or without it. KeyError when there is none."""
    for candidate in (name, prefix + name, name.removeprefix(prefix)):
        if candidate in names:
            return candidate
    raise KeyError(name)


def hooked(loader, keras_variable, hf_weight_key: str, hook_fn) -> np.ndarray:
    """What keras-hub's loader.port_weight(keras_variable, hf_weight_key, hook_fn) ports: the
    named tensor, through the converter's hook (a transpose, reshape or slice) if it has one."""
    value = loader.get_tensor(hf_weight_key)
    return hook_fn(value, list(keras_variable.shape)) if hook_fn else value


def assign_tensor(variable, value: np.ndarray, name: str, stored_shape: tuple | None = None) -> None:
    """Set a backbone variable to a checkpoint tensor (laid out for it), refusing one of another
    shape; the message names the tensor's shape as stored when it is given."""
    if tuple(value.shape) != tuple(variable.shape):
        raise ModelError(f"tensor {name} has shape {stored_shape or value.shape}, which does not fit "
                         f"the backbone's {variable.path} {tuple(variable.shape)}")
    variable.assign(value)
