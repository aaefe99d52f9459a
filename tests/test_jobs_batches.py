"""jobs.batches: a long training text becomes its windows, of which each epoch trains on one."""

import numpy as np
import pytest

from jobs.batches import TrainingRows, epoch_batches, epoch_steps
from scorer import api, encode

# With max length 8 a window holds 6 tokens between [CLS] and [SEP] and shares
# api.window_overlap(8) = 2 of them with the one before, so windows start every 4 tokens.
TEXTS = ["a b c d e f g h i j", "good", "a b c d e f g h i j k l"]
CLS, SEP = 101, 102
A = 1037  # "a"; the letters' ids follow in order: "b" 1038, ... "l" 1048
GOOD = 2204


def letters(first: str, last: str) -> list[int]:
    return [A + i for i in range(ord(first) - ord("a"), ord(last) - ord("a") + 1)]


@pytest.fixture
def tokenizer(tiny_model):
    return encode.load_tokenizer(tiny_model / "tokenizer.json", 8)


def windowed(tokenizer) -> encode.BatchEncoder:
    return encode.BatchEncoder(tokenizer, 8, window_overlap=api.window_overlap(8))


def test_a_long_text_becomes_its_overlapping_windows(tokenizer):
    rows = TrainingRows.of(windowed(tokenizer), TEXTS)
    assert rows.count.tolist() == [2, 1, 3]  # 10 tokens: a-f, e-j; 1; 12 tokens: a-f, e-j, i-l
    assert rows.first.tolist() == [0, 2, 3]
    assert rows.lengths.tolist() == [8, 8, 3, 8, 8, 6]
    assert [list(ids) for ids in rows.ids] == [
        [CLS, *letters("a", "f"), SEP], [CLS, *letters("e", "j"), SEP],
        [CLS, GOOD, SEP],
        [CLS, *letters("a", "f"), SEP], [CLS, *letters("e", "j"), SEP], [CLS, *letters("i", "l"), SEP]]


def test_truncation_keeps_one_cut_sequence_a_text(tokenizer):
    rows = TrainingRows.of(encode.BatchEncoder(tokenizer, 8), TEXTS)
    assert rows.count.tolist() == [1, 1, 1] and rows.first.tolist() == [0, 1, 2]
    assert rows.lengths.tolist() == [8, 3, 8]
    assert list(rows.ids[2]) == [CLS, *letters("a", "f"), SEP]
    assert (rows.epoch(0, 1) == [0, 1, 2]).all() and (rows.epoch(5, 9) == [0, 1, 2]).all()


def test_the_epochs_window_is_seeded_in_range_and_changes_between_epochs(tokenizer):
    rows = TrainingRows.of(windowed(tokenizer), TEXTS)
    draws = np.array([rows.epoch(0, e) for e in range(1, 21)])  # [epochs, texts]
    # seeded: drawn again (a resumed epoch), the same windows
    assert (draws == np.array([rows.epoch(0, e) for e in range(1, 21)])).all()
    # each text's draw stays among its own windows, and over the epochs reaches each of them
    assert set(draws[:, 0]) == {0, 1} and set(draws[:, 1]) == {2} and set(draws[:, 2]) == {3, 4, 5}
    assert len({tuple(d) for d in draws}) > 1  # it changes between epochs
    assert not (np.array([rows.epoch(1, e) for e in range(1, 21)]) == draws).all()  # and with the seed


def test_an_epochs_batches_hold_the_drawn_windows_with_their_texts_labels(tokenizer):
    encoder = windowed(tokenizer)
    rows = TrainingRows.of(encoder, TEXTS)
    targets = np.array([0, 1, 0], np.int32)
    for epoch in (1, 2, 3):
        batches = epoch_batches(encoder, rows, targets, 2, seed=0, epoch=epoch)
        assert len(batches) == epoch_steps(encoder, rows, 2, seed=0, epoch=epoch)
        drawn = rows.epoch(0, epoch)
        seen = []
        for b in batches:
            for i, row in enumerate(b.inputs.rows):  # rows index the epoch's drawn sequences
                seen.append(int(row))
                assert b.weights[i] == 1.0 and b.targets[i] == targets[row]
                length = rows.lengths[drawn[row]]
                assert list(b.inputs.token_ids[i, :length]) == list(rows.ids[drawn[row]])
            assert (b.weights[len(b.inputs.rows):] == 0).all()  # a short batch's padding rows
        assert sorted(seen) == [0, 1, 2]
