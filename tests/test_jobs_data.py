"""jobs.data: the validation split keeps a text and the texts it contains on one side."""

from __future__ import annotations

import numpy as np

import pytest

from jobs.data import LabeledData, NamedSource, containment_groups, read_raw, split, whole_texts
from scorer.errors import DataError


def test_containment_groups_by_hand():
    texts = ["a good film", "good film", "good", "a bad film", "bad", "good film", "goo"]
    # "good film" (both copies) and "good" are inside "a good film"; "bad" inside "a bad film";
    # "goo" is not a word of anything
    assert containment_groups(texts).tolist() == [0, 0, 0, 3, 3, 0, 6]
    assert whole_texts(texts).tolist() == [True, False, False, True, False, False, True]


def test_a_split_never_validates_on_a_phrase_of_a_training_sentence():
    """SST-2's shape: sentences and their phrases. A row-wise split puts most phrases of the
    validation sentences in training; the grouped one puts none there."""
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(300)]
    texts, labels = [], []
    for s in range(200):
        words = list(rng.choice(vocab, 8, replace=False))
        label = s % 2
        texts.append(" ".join(words))
        labels.append(label)
        for start in range(0, 6, 2):  # three phrases of each sentence
            texts.append(" ".join(words[start:start + 3]))
            labels.append(label)
    data = LabeledData(texts, np.array(labels, np.int32))
    train, validation = split(data, 0.2, seed=3)
    assert len(train.texts) + len(validation.texts) == len(texts)
    assert 0.15 < len(validation.texts) / len(texts) < 0.25
    assert np.bincount(validation.targets).min() > 0.4 * len(validation.texts)  # stratified
    padded_train = [f" {t} " for t in train.texts]
    assert not any(f" {v} " in t for v in validation.texts for t in padded_train)
    assert whole_texts(validation.texts).sum() == len(validation.texts) // 4  # its sentences
    again = split(data, 0.2, seed=3)[1]
    assert again.texts == validation.texts  # seeded


def test_rows_keep_their_source_through_a_split():
    data = LabeledData([f"text {i}" for i in range(40)], np.arange(40, dtype=np.int32) % 2,
                       np.array([0] * 30 + [1] * 10, np.int32), ["a", "b"])
    train, validation = split(data, 0.25, seed=1)
    for part in (train, validation):
        assert part.source_names == ["a", "b"]
        assert [int(t.split()[1]) >= 30 for t in part.texts] == (part.sources == 1).tolist()


@pytest.mark.parametrize("argument, name, path", [
    ("../shared/datasets/sst2/train.jsonl", "sst2", "../shared/datasets/sst2/train.jsonl"),
    ("imdb_reviews/dev.jsonl", "imdb_reviews", "imdb_reviews/dev.jsonl"),
    ("labeled/support_tickets.parquet", "support_tickets", "labeled/support_tickets.parquet"),
    ("labeled/", "labeled", "labeled/"),
    ("s3://bucket/events/*.parquet", "events", "s3://bucket/events/*.parquet"),
    ("reviews=data/train.jsonl", "reviews", "data/train.jsonl"),
    ("data/label=pos/", "label=pos", "data/label=pos/"),  # a hive directory, not NAME=PATH
])
def test_a_data_source_is_named_by_its_dataset_or_by_name_equals_path(argument, name, path):
    assert NamedSource.parse(argument) == NamedSource(name, path)


def test_an_existing_path_with_an_equals_sign_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "label=pos").mkdir()
    assert NamedSource.parse("label=pos") == NamedSource("label=pos", "label=pos")


def test_sources_are_read_under_their_names_and_two_of_one_name_are_refused(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "train.jsonl").write_text('{"text": "x", "label": 1}\n')
    raw = read_raw([f"first={tmp_path / 'a' / 'train.jsonl'}", str(tmp_path / "b" / "train.jsonl")],
                   "text", "label")
    assert raw.names == ["first", "b"] and raw.paths == [str(tmp_path / d / "train.jsonl") for d in "ab"]
    with pytest.raises(DataError, match="two data sources are named 'a'.*NAME=PATH"):
        read_raw([str(tmp_path / "a" / "train.jsonl"), f"a={tmp_path / 'b' / 'train.jsonl'}"],
                 "text", "label")
