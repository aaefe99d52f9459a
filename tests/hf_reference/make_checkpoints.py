"""Write tiny, seeded, randomly initialised Hugging Face *ForSequenceClassification checkpoints,
one sub-directory of OUT_DIR per case, as `save_pretrained` writes them (config.json,
model.safetensors, the tokenizer's files). Run with .venv-hfref/bin/python (transformers + torch):

    .venv-hfref/bin/python tests/hf_reference/make_checkpoints.py OUT_DIR

The tokenizers are trained here on a built-in English text (corpus.py), so nothing is downloaded.
Every parameter is perturbed with seeded noise after init, so that LayerNorm weights are not 1,
biases not 0, and a transposed, missing or misread tensor changes the output. The embedding
tables are kept small so that the embedding LayerNorm's eps matters (a converter that ignores
layer_norm_eps gives other probabilities)."""

from __future__ import annotations

import functools
import io
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import sentencepiece as spm
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (AlbertConfig, AlbertForSequenceClassification, AlbertTokenizer, BertConfig,
                          BertForSequenceClassification, BertTokenizer, DebertaV2Config,
                          DebertaV2ForSequenceClassification, DebertaV2Tokenizer, DistilBertConfig,
                          DistilBertForSequenceClassification, DistilBertTokenizer, PretrainedConfig,
                          PreTrainedModel, PreTrainedTokenizerBase, RobertaConfig,
                          RobertaForSequenceClassification,
                          RobertaTokenizer, XLMRobertaConfig, XLMRobertaForSequenceClassification,
                          XLMRobertaTokenizer)

from corpus import sentences

POSITIONS = 64  # small, so that texts longer than the max length are cheap to test
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
WEIGHT_NOISE = 0.3  # std of the noise added to every parameter
EMBEDDING_STD = 2e-3  # embedding tables' std: small, so the embedding LayerNorm's eps shows


@dataclass(frozen=True)
class Case:
    """One checkpoint: its model class and config, how its tokenizer is made, and which tokenizer
    files are removed after saving (to leave only the files a case is about)."""

    name: str
    model_class: type[PreTrainedModel]
    make_config: Callable[[int], PretrainedConfig]  # from the tokenizer's vocabulary size
    make_tokenizer: Callable[[Path], PreTrainedTokenizerBase]  # given a scratch directory
    remove_files: tuple[str, ...] = ()
    seed: int = 0


# ---------------------------------------------------------------------------- tokenizers


def learn_merges(words: Counter[tuple[str, ...]], count: int,
                 join: Callable[[str, str], str]) -> list[tuple[str, str]]:
    """Byte-pair merges: repeatedly the most frequent adjacent pair of symbols, ties to the smallest
    pair. (The `tokenizers` trainers break ties in hash order, so their vocabularies differ from
    run to run; this one is the same every time.)"""
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, n in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        words = Counter({merge_pair(symbols, best, join): n for symbols, n in words.items()})
    return merges


def merge_pair(symbols: tuple[str, ...], pair: tuple[str, str],
               join: Callable[[str, str], str]) -> tuple[str, ...]:
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if symbols[i:i + 2] == pair:
            merged.append(join(*pair))
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def words_of(tokenizer: Tokenizer) -> Counter[str]:
    """The corpus's words as `tokenizer`'s normalizer and pre-tokenizer cut them."""
    words: Counter[str] = Counter()
    for sentence in sentences():
        if tokenizer.normalizer is not None:
            sentence = tokenizer.normalizer.normalize_str(sentence)
        words.update(word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(sentence))
    return words


@functools.cache  # five cases share two vocabularies
def wordpiece_tokens(lowercase: bool, vocab_size: int = 600) -> tuple[str, ...]:
    """A BERT WordPiece vocabulary learnt from the corpus, in id order: special tokens, characters
    (word-initial and ##-continuing), then merged pieces."""
    splitter = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    splitter.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    splitter.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = Counter({(w[0], *("##" + c for c in w[1:])): n for w, n in words_of(splitter).items()})
    alphabet = sorted({symbol for symbols in words for symbol in symbols})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *alphabet]
    merges = learn_merges(words, vocab_size - len(tokens), join=lambda a, b: a + b.removeprefix("##"))
    tokens += [a + b.removeprefix("##") for a, b in merges]
    return tuple(dict.fromkeys(tokens))


def wordpiece_vocab(lowercase: bool) -> dict[str, int]:
    return {token: i for i, token in enumerate(wordpiece_tokens(lowercase))}


def bert_tokenizer(lowercase: bool, model_max_length: int | None = None) -> Callable[[Path], BertTokenizer]:
    def make(_: Path) -> BertTokenizer:
        kwargs = {"model_max_length": model_max_length} if model_max_length else {}
        return BertTokenizer(vocab=wordpiece_vocab(lowercase), do_lower_case=lowercase, **kwargs)
    return make


def distilbert_tokenizer(_: Path) -> DistilBertTokenizer:
    return DistilBertTokenizer(vocab=wordpiece_vocab(lowercase=True), do_lower_case=True,
                               model_max_length=POSITIONS)


def roberta_tokenizer(_: Path) -> RobertaTokenizer:
    """A byte-level BPE (GPT-2 / RoBERTa style) learnt from the corpus: <s>=0, <pad>=1, </s>=2,
    <unk>=3, the 256 byte symbols, the merged pieces, <mask> last."""
    splitter = Tokenizer(models.BPE())
    splitter.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = Counter({tuple(w): n for w, n in words_of(splitter).items()})
    tokens = ["<s>", "<pad>", "</s>", "<unk>", *sorted(pre_tokenizers.ByteLevel.alphabet())]
    merges = learn_merges(words, 700 - len(tokens), join=str.__add__)
    tokens += [a + b for a, b in merges] + ["<mask>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=POSITIONS)


def train_sentencepiece(path: Path, vocab_size: int, **special) -> Path:
    """A SentencePiece Unigram model trained on the corpus, written to `path`. Trained from memory
    into memory, so that no temporary path is recorded in the model (it is the same every run)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences()), model_writer=model, model_type="unigram",
        vocab_size=vocab_size, character_coverage=1.0, num_threads=1, minloglevel=2, **special)
    path.write_bytes(model.getvalue())
    return path


def sentencepiece_tokenizer(cls: type, file_name: str, vocab_size: int, **special):
    """`cls` loaded from a trained SentencePiece model the way a checkpoint with only that file is
    (AutoTokenizer's slow -> fast conversion)."""
    def make(work: Path) -> PreTrainedTokenizerBase:
        spm_dir = work / f"spm-{cls.__name__}"
        spm_dir.mkdir()
        train_sentencepiece(spm_dir / file_name, vocab_size, **special)
        return cls.from_pretrained(spm_dir, model_max_length=POSITIONS)
    return make


# Special-token layouts of the original checkpoints' SentencePiece models.
ALBERT_SPM = dict(pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, control_symbols="[CLS],[SEP]",
                  user_defined_symbols="[MASK]")
XLMR_SPM = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)  # fairseq re-orders these (+<pad>, <mask>)
DEBERTA_SPM = dict(pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]",
                   eos_piece="[SEP]", unk_piece="[UNK]")

# ---------------------------------------------------------------------------- cases


def labelled(names: list[str] | None, count: int = 2) -> dict:
    """Config arguments for the labels: named, or (names=None) `count` unnamed ones, for which
    transformers writes LABEL_0, LABEL_1, ..."""
    if names is None:
        return {"num_labels": count}
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def bert_config(vocab_size: int, labels: dict, **overrides) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, **TINY, hidden_act="gelu", layer_norm_eps=1e-7,
                      max_position_embeddings=POSITIONS, type_vocab_size=2, pad_token_id=0,
                      **labels, **overrides)


def cases() -> list[Case]:
    return [
        Case("bert", BertForSequenceClassification, lambda v: bert_config(v, labelled(["sad", "meh", "happy"])),
             bert_tokenizer(lowercase=False), seed=1),
        Case("bert_vocab_only", BertForSequenceClassification, lambda v: bert_config(v, labelled(["sad", "meh", "happy"])),
             bert_tokenizer(lowercase=True, model_max_length=40), remove_files=("tokenizer.json",), seed=2),
        Case("bert_multilabel", BertForSequenceClassification,
             lambda v: bert_config(v, labelled(["toxic", "obscene", "threat", "insult"]),
                                   problem_type="multi_label_classification"),
             bert_tokenizer(lowercase=True, model_max_length=POSITIONS), seed=3),
        Case("bert_no_labels", BertForSequenceClassification,
             lambda v: bert_config(v, labelled(None, count=2)),
             bert_tokenizer(lowercase=True), seed=4),
        Case("distilbert", DistilBertForSequenceClassification,
             lambda v: DistilBertConfig(vocab_size=v, dim=32, n_layers=2, n_heads=2, hidden_dim=37,
                                        activation="gelu", max_position_embeddings=POSITIONS,
                                        pad_token_id=0, **labelled(["negative", "positive"])),
             distilbert_tokenizer, seed=5),
        Case("roberta", RobertaForSequenceClassification,
             lambda v: RobertaConfig(vocab_size=v, **TINY, hidden_act="gelu_new", layer_norm_eps=1e-5,
                                     max_position_embeddings=POSITIONS + 2, type_vocab_size=1,
                                     pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                     **labelled(["anger", "joy", "fear"])),
             roberta_tokenizer, seed=6),
        Case("xlm_roberta", XLMRobertaForSequenceClassification,
             lambda v: XLMRobertaConfig(vocab_size=v, **TINY, hidden_act="gelu", layer_norm_eps=1e-5,
                                        max_position_embeddings=POSITIONS + 2, type_vocab_size=1,
                                        pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                        **labelled(["no", "yes"])),
             sentencepiece_tokenizer(XLMRobertaTokenizer, "sentencepiece.bpe.model", 300, **XLMR_SPM),
             seed=7),
        Case("albert", AlbertForSequenceClassification,
             lambda v: AlbertConfig(vocab_size=v, embedding_size=16, **TINY,
                                    max_position_embeddings=POSITIONS, type_vocab_size=2,
                                    pad_token_id=0, bos_token_id=2, eos_token_id=3,
                                    **labelled(["ham", "spam"])),
             sentencepiece_tokenizer(AlbertTokenizer, "spiece.model", 300, **ALBERT_SPM),
             remove_files=("tokenizer.json",), seed=8),
        Case("deberta_v3", DebertaV2ForSequenceClassification,
             lambda v: DebertaV2Config(vocab_size=v, **TINY, hidden_act="gelu", layer_norm_eps=1e-7,
                                       max_position_embeddings=POSITIONS, relative_attention=True,
                                       position_buckets=8, max_relative_positions=-1,
                                       pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                                       share_att_key=True, position_biased_input=False,
                                       type_vocab_size=0, pooler_hidden_act="gelu", pad_token_id=0,
                                       **labelled(["contradiction", "neutral", "entailment"])),
             sentencepiece_tokenizer(DebertaV2Tokenizer, "spm.model", 300, **DEBERTA_SPM), seed=9),
    ]


# ---------------------------------------------------------------------------- weights


def perturb(model: PreTrainedModel, seed: int) -> None:
    """Add seeded noise to every parameter; shrink the embedding tables (see module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if is_embedding_table(name):
                param.copy_(noise * EMBEDDING_STD)
            else:
                param.add_(noise * WEIGHT_NOISE)


def is_embedding_table(name: str) -> bool:
    return name.endswith("embeddings.weight") and "LayerNorm" not in name


def write_case(case: Case, out_dir: Path, work: Path) -> None:
    tokenizer = case.make_tokenizer(work)
    torch.manual_seed(case.seed)
    config = case.make_config(len(tokenizer))
    model = case.model_class(config).eval()
    perturb(model, case.seed)
    target = out_dir / case.name
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    # transformers 5 writes only tokenizer.json (+ tokenizer_config.json); hub checkpoints also
    # carry the tokenizer's own vocabulary files, which is all that some of them have.
    if isinstance(tokenizer.backend_tokenizer.model, (models.WordPiece, models.BPE)):
        tokenizer.backend_tokenizer.model.save(str(target))  # vocab.txt; vocab.json + merges.txt
    sentencepiece_file = getattr(tokenizer, "vocab_file", None)
    if sentencepiece_file and sentencepiece_file.endswith(".model"):
        shutil.copy(sentencepiece_file, target / Path(sentencepiece_file).name)
    for name in case.remove_files:
        (target / name).unlink()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: make_checkpoints.py OUT_DIR", file=sys.stderr)
        return 2
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for case in cases():
            write_case(case, out_dir, Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
