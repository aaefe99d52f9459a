"""Encode stage: tokenization, length buckets, bounded shapes, order restoration."""

import numpy as np
import pytest

from scorer import backbone as backbones
from scorer import encode


@pytest.fixture(scope="module")
def encoder():
    tok = encode.load_tokenizer(backbones.packaged_path("all-minilm-l6-v2") / "tokenizer.json", 64)
    return encode.BatchEncoder(tok, max_length=64, batch_tokens=512)


def texts_of_many_lengths(n=300, seed=0):
    rng = np.random.default_rng(seed)
    words = "the film was a quiet , funny and moving story about love and loss".split()
    return [" ".join(rng.choice(words, size=rng.integers(1, 90))) for _ in range(n)]


def test_tokenizer_does_not_pad_to_128(encoder):
    ids, lengths, truncated = encoder.tokenize(["a good film"])
    assert ids[0] == [101, 1037, 2204, 2143, 102]  # [CLS] a good film [SEP], no padding
    assert lengths.tolist() == [5] and truncated.tolist() == [False]


def test_truncates_to_max_length_and_flags_it(encoder):
    ids, lengths, truncated = encoder.tokenize(["word " * 200, "short"])
    assert lengths.tolist() == [64, 3]
    assert ids[0][-1] == 102  # still ends in [SEP]
    assert truncated.tolist() == [True, False]


def test_huge_text_is_cut_before_tokenizing(encoder):
    ids, lengths, truncated = encoder.tokenize(["x" * 5_000_000])
    assert lengths[0] <= 64 and truncated[0]


def test_buckets_are_capped_at_max_length(encoder):
    assert encoder.buckets == (16, 32, 48, 64)


def test_every_row_lands_in_exactly_one_batch_in_its_bucket(encoder):
    texts = texts_of_many_lengths()
    chunk = encoder.encode(texts)
    rows = np.concatenate([b.rows for b in chunk.batches])
    assert sorted(rows.tolist()) == list(range(len(texts)))
    ids, lengths, _ = encoder.tokenize(texts)
    for batch in chunk.batches:
        n, length = batch.shape
        assert (n, length) in encoder.shapes()
        assert length in encoder.buckets
        for i, r in enumerate(batch.rows):
            assert batch.token_ids[i, : lengths[r]].tolist() == ids[r]
            assert batch.padding_mask[i].sum() == lengths[r]
            # the smallest bucket that fits: no row could have gone to a shorter bucket
            smaller = [b for b in encoder.buckets if b < length]
            assert not smaller or lengths[r] > smaller[-1]
        assert not batch.padding_mask[len(batch.rows):].any()  # padding rows are all padding
        assert (batch.token_ids[batch.padding_mask == 0] == encoder.pad_id).all()


def test_shapes_stay_bounded_whatever_the_input(encoder):
    seen = set()
    for seed in range(5):
        for b in encoder.encode(texts_of_many_lengths(n=50 + 97 * seed, seed=seed)).batches:
            seen.add(b.shape)
    assert seen <= set(encoder.shapes())
    assert len(encoder.shapes()) <= 4 * len(encoder.buckets)


def test_padding_accounting(encoder):
    chunk = encoder.encode(texts_of_many_lengths())
    assert chunk.real_tokens == sum(int(b.padding_mask.sum()) for b in chunk.batches)
    assert chunk.padded_tokens == sum(b.token_ids.size for b in chunk.batches)
    assert chunk.padded_tokens >= chunk.real_tokens


def test_packing_puts_several_texts_in_a_row_and_loses_none():
    tok = encode.load_tokenizer(backbones.packaged_path("all-minilm-l6-v2") / "tokenizer.json", 128)
    enc = encode.BatchEncoder(tok, max_length=128, batch_tokens=1024, pack_length=64)
    texts = texts_of_many_lengths(n=400)
    ids, lengths, _ = enc.tokenize(texts)
    chunk = enc.encode(texts)
    placed = np.concatenate([b.rows for b in chunk.batches])
    assert sorted(placed.tolist()) == list(range(len(texts)))
    for b in chunk.batches:
        assert b.shape in enc.shapes()
        if b.slot_ids is None:  # longer than pack_length: one text a row, padded to its bucket
            assert b.shape[1] > 64 and (lengths[b.rows] > 64).all()
            for i, text in enumerate(b.rows):
                assert b.token_ids[i, : lengths[text]].tolist() == ids[text]
            continue
        assert b.shape[1] == 64 and (lengths[b.rows] <= 64).all()
        per_row = b.slot_onehot.shape[1]
        for text, slot in zip(b.rows, b.slots):
            row, s = divmod(int(slot), per_row)
            where = np.flatnonzero(b.slot_ids[row] == s)
            assert b.token_ids[row, where].tolist() == ids[text]  # contiguous, whole, in order
            assert b.position_ids[row, where].tolist() == list(range(lengths[text]))
            assert b.slot_onehot[row, s].sum() == lengths[text]
    unpacked = encode.BatchEncoder(tok, max_length=128, batch_tokens=1024).encode(texts)
    assert chunk.padded_tokens < unpacked.padded_tokens


def test_chunks_of_short_texts_pack_into_half_length_rows():
    tok = encode.load_tokenizer(backbones.packaged_path("all-minilm-l6-v2") / "tokenizer.json", 128)
    enc = encode.BatchEncoder(tok, max_length=128, pack_length=128)
    assert enc.pack_lengths() == (64, 128)
    short = ["a short review of a film"] * 200
    assert {b.shape[1] for b in enc.encode(short).batches} == {64}
    mixed = short[:150] + [" ".join(["word"] * 90)] * 50  # a quarter longer than 64 tokens
    assert {b.shape[1] for b in enc.encode(mixed).batches if b.slot_ids is not None} == {128}
    assert all(b.shape in enc.shapes() for b in enc.encode(mixed).batches)
