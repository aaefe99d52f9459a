"""Tiny seeded DeBERTa-v3-style checkpoints and transformers' hidden states for them, the reference
tests/test_hf_deberta.py checks scorer.hf.deberta against. Run with .venv-hfref/bin/python:

    .venv-hfref/bin/python tests/hf_reference/deberta_hidden.py OUT_DIR

For each variant it writes OUT_DIR/<variant>/ as `save_pretrained` leaves a
DebertaV2ForSequenceClassification (config.json, model.safetensors), and hidden.npz: for each
batch b, `ids_b` and `mask_b` (right-padded) and `hidden_b`, DebertaV2Model's last_hidden_state.
Also OUT_DIR/buckets_256_512.npy: the relative-position buckets of deberta-v3-base's size
(position_buckets 256, 512 positions) for a 512-token input.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification
from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

VOCAB = 300
POSITIONS = 64
WEIGHT_NOISE = 0.1  # std of the noise added to every parameter, so LayerNorm is not identity
# DeBERTa-v3's arithmetic (relative attention, log buckets, c2p + p2c, shared keys, normalised
# relative embeddings, no absolute positions, no token types) at toy size.
V3 = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
          intermediate_size=48, max_position_embeddings=POSITIONS, relative_attention=True,
          position_buckets=8, max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
          norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False,
          type_vocab_size=0, layer_norm_eps=1e-7, hidden_act="gelu", num_labels=3)
VARIANTS = {
    "v3": V3,
    # The tanh GELU, an eps large enough to move the outputs, and an explicit
    # max_relative_positions other than max_position_embeddings (another log-bucket scale).
    "tanh_gelu": {**V3, "hidden_act": "gelu_new", "layer_norm_eps": 1e-2,
                  "max_relative_positions": 40},
}
# Each batch: the lengths of its rows, right-padded to the longest. 64 reaches the largest relative
# distance of max_position_embeddings; 100 goes beyond it (DeBERTa has no absolute positions).
BATCHES = [(POSITIONS, 37, 5, 1), (100, 70)]


def make_model(config: dict, seed: int) -> DebertaV2ForSequenceClassification:
    torch.manual_seed(seed)
    model = DebertaV2ForSequenceClassification(DebertaV2Config(**config)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * WEIGHT_NOISE)
    return model


def batch(lengths: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((len(lengths), max(lengths)), dtype=np.int64)  # pad_token_id 0
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, VOCAB, size=n)
        mask[row, :n] = 1
    return ids, mask


def main(out_dir: Path) -> None:
    rng = np.random.default_rng(0)
    for seed, (name, config) in enumerate(VARIANTS.items()):
        model = make_model(config, seed)
        model.save_pretrained(out_dir / name)
        arrays = {}
        for b, lengths in enumerate(BATCHES):
            ids, mask = batch(lengths, rng)
            with torch.no_grad():
                hidden = model.deberta(input_ids=torch.from_numpy(ids),
                                       attention_mask=torch.from_numpy(mask)).last_hidden_state
            arrays.update({f"ids_{b}": ids, f"mask_{b}": mask, f"hidden_{b}": hidden.numpy()})
        np.savez(out_dir / name / "hidden.npz", **arrays)
    positions = torch.zeros(1, 512, 1)
    buckets = build_relative_position(positions, positions, bucket_size=256, max_position=512)
    np.save(out_dir / "buckets_256_512.npy", buckets[0].numpy())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
