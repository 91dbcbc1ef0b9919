"""`streamcap train`: cross-entropy training with teacher forcing, then optional SCST.

Teacher forcing on whole captions optimises exactly the paper's objective (predict
each next word from the image and the partial caption), computed for every
prefix of a caption in one pass instead of one generator row per prefix.
Model selection and early stopping use dev CIDEr-D with greedy decoding.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from streamcap.model.captioner import DecodeOptions
from streamcap.model.checkpoint import CaptionModelSpec, load_checkpoint, save_checkpoint
from streamcap.model.decoder import DecoderConfig, build_decoder, load_glove, transplant_weights
from streamcap.model.encoder import build_encoder
from streamcap.model.vocab import Vocabulary, clean_caption
from streamcap.train.data import CaptionCorpus, load_corpus
from streamcap.train.evaluate import caption_features, score_captions
from streamcap.train.features import cached_features

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str
    out: str
    images: str | None = None  # image folder for a Karpathy JSON
    encoder: str = "efficientnet_lite0"
    encoder_weights: str | None = None
    decoder: str = "attention"
    glove: str | None = None  # .npy of GloVe rows; its words in a .txt beside it
    embed_dim: int = 200
    hidden_dim: int = 512
    attention_dim: int = 512
    dropout: float = 0.5
    freeze_embeddings: bool | None = None  # default: frozen for merge (as the paper), trained for attention
    min_count: int = 10
    min_word_length: int = 2  # the paper's 2 drops one-letter words ("a"); 1 keeps them
    init_from: str | None = None  # warm start: copy weights of a checkpoint, rows matched by word
    max_len: int = 34
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    lr_drop_epoch: int = 20  # the paper: 1e-3, then 1e-4 after 20 of 30 epochs
    lr_after_drop: float = 1e-4
    grad_clip: float = 5.0
    patience: int = 5  # epochs without a better dev CIDEr-D before stopping
    scst_epochs: int = 0
    scst_lr: float = 2e-5
    scst_samples: int = 5
    scst_batch_images: int = 32
    eval_beam: int = 3
    seed: int = 1234
    cache_dir: str = ".cache/features"
    train_split: str = "train"
    dev_split: str = "dev"
    limit_train_images: int = 0  # 0: all; tests use a handful
    resume: str | None = None
    command: str = ""
    extra: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _read_glove(path: str) -> tuple[list[str], np.ndarray]:
    vectors = np.load(path)
    words_file = Path(path).with_name(Path(path).name.replace("glove200.npy", "vocab.txt"))
    if not words_file.is_file():
        words_file = Path(path).with_suffix(".txt")
    words = words_file.read_text(encoding="utf-8").splitlines()
    if len(words) != len(vectors):
        raise ValueError(f"{path}: {len(vectors)} rows but {words_file} lists {len(words)} words")
    return words, vectors


def _encode_captions(image_ids: list[str], corpus: CaptionCorpus, vocab: Vocabulary, max_len: int, min_word_length: int):
    """(row of the image in the split, padded token array (N, max_len))."""
    rows, sequences = [], []
    for row, image_id in enumerate(image_ids):
        for raw in corpus.captions[image_id]:
            tokens = vocab.encode(clean_caption(raw, min_word_length))[:max_len]
            rows.append(row)
            sequences.append(tokens + [0] * (max_len - len(tokens)))
    return np.asarray(rows), np.asarray(sequences, dtype=np.int64)


def _length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar-length captions in random order: the attention loop runs only as long as its batch."""
    noisy = lengths + rng.random(len(lengths))  # random order among equal lengths
    order = np.argsort(noisy)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _xe_epoch(decoder, optimizer, features, rows, sequences, config, rng) -> float:
    decoder.train()
    lengths = (sequences != 0).sum(1)
    total, count = 0.0, 0
    for batch in _length_bucketed_batches(lengths, config.batch_size, rng):
        T = int(lengths[batch].max())
        seq = torch.from_numpy(sequences[batch, :T])  # (B, T)
        grid = features[torch.from_numpy(rows[batch])].float()  # (B, P, D)
        logprobs = decoder(grid, seq[:, :-1])  # (B, T-1, V)
        target = seq[:, 1:]  # (B, T-1)
        loss = F.nll_loss(logprobs.reshape(-1, logprobs.shape[-1]), target.reshape(-1), ignore_index=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), config.grad_clip)
        optimizer.step()
        total += loss.item() * len(batch)
        count += len(batch)
    return total / max(count, 1)


def _dev_cider(decoder, vocab, dev_features, dev_ids, corpus, max_len, beam=1) -> dict:
    captions = caption_features(decoder, vocab, dev_features, DecodeOptions(beam_size=beam, max_len=max_len))
    return score_captions(dev_ids, captions, corpus.captions)


def train(config: TrainConfig) -> Path:
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    corpus = load_corpus(config.data, config.images)
    train_ids = corpus.split(config.train_split)
    if config.limit_train_images:
        train_ids = train_ids[: config.limit_train_images]
    dev_ids = corpus.split(config.dev_split) if not config.limit_train_images else train_ids

    encoder = build_encoder(config.encoder, config.encoder_weights)
    train_feats, bad_train = cached_features(encoder, train_ids, corpus.image_paths, config.cache_dir)
    dev_feats, bad_dev = cached_features(encoder, dev_ids, corpus.image_paths, config.cache_dir)
    keep_train = [i for i, image_id in enumerate(train_ids) if image_id not in set(bad_train)]
    keep_dev = [i for i, image_id in enumerate(dev_ids) if image_id not in set(bad_dev)]
    train_ids = [train_ids[i] for i in keep_train]
    dev_ids = [dev_ids[i] for i in keep_dev]
    features = torch.from_numpy(np.ascontiguousarray(train_feats[keep_train]))  # (N, P, D) float16 in RAM
    dev_features = np.ascontiguousarray(dev_feats[keep_dev])

    cleaned = [clean_caption(c, config.min_word_length) for i in train_ids for c in corpus.captions[i]]
    vocab = Vocabulary.build(cleaned, config.min_count)
    rows, sequences = _encode_captions(train_ids, corpus, vocab, config.max_len, config.min_word_length)
    log.info("train: %d images, %d captions, vocabulary %d words", len(train_ids), len(rows), len(vocab))

    freeze = config.freeze_embeddings if config.freeze_embeddings is not None else config.decoder == "merge"
    decoder_config = DecoderConfig(
        kind=config.decoder, vocab_size=len(vocab), feature_dim=encoder.feature_dim, embed_dim=config.embed_dim,
        hidden_dim=config.hidden_dim, attention_dim=config.attention_dim, dropout=config.dropout,
        freeze_embeddings=freeze,
    )
    decoder = build_decoder(decoder_config)
    if config.glove:
        glove_words, glove_vectors = _read_glove(config.glove)
        found = load_glove(decoder.embed, vocab.words, glove_words, glove_vectors)
        log.info("GloVe: %d of %d vocabulary words initialised", found, len(vocab) - 1)
    if config.init_from:
        source_spec, source, _ = load_checkpoint(config.init_from)
        copied = transplant_weights(source, source_spec.vocab, decoder, vocab)
        log.info("warm start from %s: %d tensors copied, vocabulary rows matched by word", config.init_from, copied)
    decoder.embed.weight.requires_grad_(not freeze)

    spec = CaptionModelSpec(
        encoder=config.encoder, decoder=decoder_config, vocab=vocab, max_len=config.max_len,
        beam_size=config.eval_beam, info={"command": config.command, "config": asdict(config)},
    )
    out = Path(config.out)
    last_path = out.with_name(out.stem + ".last.pt")
    params = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    history: list[dict] = []
    start_epoch, best_cider, stale = 0, -1.0, 0
    if config.resume:
        _, resumed, payload = load_checkpoint(config.resume)
        decoder.load_state_dict(resumed.state_dict())
        optimizer.load_state_dict(payload["extra"]["optimizer"])
        start_epoch = payload["extra"]["epoch"] + 1
        best_cider, stale, history = payload["extra"]["best_cider"], payload["extra"]["stale"], payload["extra"]["history"]
        log.info("resumed from %s at epoch %d", config.resume, start_epoch)

    t0 = time.time()
    # A resumed run that had already early-stopped goes straight to SCST.
    first_epoch = config.epochs if stale >= config.patience else start_epoch
    for epoch in range(first_epoch, config.epochs):
        lr = config.lr if epoch < config.lr_drop_epoch else config.lr_after_drop
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = _xe_epoch(decoder, optimizer, features, rows, sequences, config, rng)
        scores = _dev_cider(decoder, vocab, dev_features, dev_ids, corpus, config.max_len)
        history.append({"epoch": epoch, "phase": "xe", "lr": lr, "loss": loss, **scores, "elapsed_s": time.time() - t0})
        write_history(out, history)
        improved = scores["CIDEr-D"] > best_cider
        log.info("epoch %d lr %.0e loss %.3f dev CIDEr-D %.3f BLEU-4 %.3f%s", epoch, lr, loss, scores["CIDEr-D"], scores["BLEU-4"], " *" if improved else "")
        if improved:
            best_cider, stale = scores["CIDEr-D"], 0
            spec.info["history"] = history
            save_checkpoint(out, spec, decoder)
        else:
            stale += 1
        extra = {"optimizer": optimizer.state_dict(), "epoch": epoch, "best_cider": best_cider, "stale": stale, "history": history}
        save_checkpoint(last_path, spec, decoder, extra=extra)
        if stale >= config.patience:
            log.info("early stop: dev CIDEr-D has not improved for %d epochs", stale)
            break

    if config.scst_epochs:
        from streamcap.train.scst import self_critical_training

        _, best, _ = load_checkpoint(out)
        decoder.load_state_dict(best.state_dict())
        best_cider = self_critical_training(decoder, vocab, features, train_ids, corpus, dev_features, dev_ids, config, spec, out, history, best_cider, t0)

    log.info("best dev CIDEr-D %.3f; model at %s (%.0f s)", best_cider, out, time.time() - t0)
    return out


def write_history(out: Path, history: list[dict]) -> None:
    """Rewritten after every epoch: CPU runs take hours and are often stopped by hand."""
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".history.json").write_text(json.dumps(history, indent=1))
