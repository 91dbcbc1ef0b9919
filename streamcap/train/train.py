"""`streamcap train`: concept head, cross-entropy with teacher forcing, then optional SCST.

The stages, each resumable:
1. Features: the frozen encoder's grid of every image, extracted once and cached.
2. Concept head (`--concepts`): trained on the caption-word labels of the
   training images, calibrated on a held-out tenth of them, and used to
   predict every training image out of fold (the decoder must learn to read
   the head as it is at run time, on images it never saw).
3. Cross-entropy: teacher forcing on whole captions optimises exactly the
   paper's objective (predict each next word from the image and the partial
   caption), for every prefix of a caption in one pass.
4. Self-critical training (`--scst-epochs`), see `streamcap.train.scst`.

Several `--data` folders train one model (Flickr8k, the COCO subset, the
training clips); dev CIDEr-D, the selection and early-stopping criterion, is
the mean over the folders' dev splits, so the largest set does not drown the
others.
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

from streamcap.concepts import CONCEPT_NAMES
from streamcap.model.checkpoint import CaptionModelSpec, load_checkpoint, save_checkpoint
from streamcap.model.concept_head import ConceptHeadConfig
from streamcap.model.decoder import DecoderConfig, build_decoder, load_glove, transplant_weights
from streamcap.model.decoding import DecodeOptions
from streamcap.model.encoder import build_encoder
from streamcap.model.vocab import Vocabulary, clean_caption
from streamcap.train.concept_eval import image_labels
from streamcap.train.concept_training import calibrate, head_logits, label_arrays, out_of_fold, train_head
from streamcap.train.data import CaptionCorpus, load_corpora, source_of
from streamcap.train.evaluate import caption_features, score_captions
from streamcap.train.features import cached_features

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    images: str | None = None  # image folder for a Karpathy JSON
    corrections: str | None = None  # image<TAB>caption number<TAB>corrected caption
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
    concepts: bool = False  # train a concept head and condition the (attention) decoder on it
    concept_epochs: int = 12
    concept_folds: int = 5
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


@dataclass
class TrainingData:
    corpus: CaptionCorpus
    train_ids: list[str]
    dev_ids: list[str]
    features: torch.Tensor  # (N, P, D) float16, in RAM
    dev_features: np.ndarray  # (N_dev, P, D) float16
    vocab: Vocabulary
    rows: np.ndarray  # caption -> row of its image
    sequences: np.ndarray  # (captions, max_len) token ids
    concepts: torch.Tensor | None = None  # (N, C) out-of-fold probabilities of the training images


def prepare_data(config: TrainConfig, encoder) -> TrainingData:
    corpus = load_corpora(config.data, config.images, config.corrections)
    train_ids = corpus.split(config.train_split)
    if config.limit_train_images:
        train_ids = train_ids[: config.limit_train_images]
    dev_ids = corpus.split(config.dev_split) if not config.limit_train_images else train_ids
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
    log.info("train: %d images, %d captions, vocabulary %d words; dev: %d images", len(train_ids), len(rows), len(vocab), len(dev_ids))
    return TrainingData(corpus, train_ids, dev_ids, features, dev_features, vocab, rows, sequences)


def concept_stage(config: TrainConfig, data: TrainingData, feature_dim: int, out: Path) -> dict:
    """Train (or reload) the concept head; fills `data.concepts`; returns the head's config and weights."""
    stage_file = out.with_name(out.stem + ".concepts.pt")
    head_config = ConceptHeadConfig(CONCEPT_NAMES, feature_dim)
    if stage_file.is_file():
        saved = torch.load(stage_file, map_location="cpu", weights_only=True)
        if saved["train_ids"] == data.train_ids:
            log.info("concept head: reusing %s", stage_file)
            data.concepts = saved["concepts"]
            return {"config": saved["config"], "state_dict": saved["state_dict"]}
    labels, mask = label_arrays([image_labels(data.corpus, i) for i in data.train_ids], CONCEPT_NAMES)
    rng = np.random.default_rng(config.seed)
    held = rng.random(len(data.train_ids)) < 0.1
    fit_rows, calib_rows = np.flatnonzero(~held), np.flatnonzero(held)
    t0 = time.time()
    head = train_head(head_config, data.features, labels, mask, rows=fit_rows, epochs=config.concept_epochs, seed=config.seed)
    calibrate(head, head_logits(head, data.features, calib_rows), labels[calib_rows], mask[calib_rows])
    folds = config.concept_folds if len(data.train_ids) >= 5 * config.concept_folds else 0
    if folds:
        data.concepts = out_of_fold(head_config, data.features, labels, mask, folds, config.seed, epochs=config.concept_epochs)
    else:  # a toy run: too few images to hold any out
        data.concepts = head(data.features.float()).detach()
    log.info("concept head trained in %.0f s (%d folds for the decoder's inputs)", time.time() - t0, folds)
    result = {"config": head_config.to_dict(), "state_dict": head.state_dict()}
    stage_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**result, "concepts": data.concepts, "train_ids": data.train_ids}, stage_file)
    return result


def _xe_epoch(decoder, optimizer, data: TrainingData, config: TrainConfig, rng) -> float:
    decoder.train()
    lengths = (data.sequences != 0).sum(1)
    total, count = 0.0, 0
    for batch in _length_bucketed_batches(lengths, config.batch_size, rng):
        T = int(lengths[batch].max())
        seq = torch.from_numpy(data.sequences[batch, :T])  # (B, T)
        image_rows = torch.from_numpy(data.rows[batch])
        grid = data.features[image_rows].float()  # (B, P, D)
        concepts = None if data.concepts is None else data.concepts[image_rows]  # (B, C)
        logprobs = decoder(grid, seq[:, :-1], concepts)  # (B, T-1, V)
        target = seq[:, 1:]  # (B, T-1)
        loss = F.nll_loss(logprobs.reshape(-1, logprobs.shape[-1]), target.reshape(-1), ignore_index=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), config.grad_clip)
        optimizer.step()
        total += loss.item() * len(batch)
        count += len(batch)
    return total / max(count, 1)


def dev_scores(decoder, data: TrainingData, max_len: int, beam: int = 1) -> dict:
    """BLEU-4 and CIDEr-D per source and their means over sources (the selection criterion)."""
    captions = caption_features(decoder, data.vocab, data.dev_features, DecodeOptions(beam_size=beam, max_len=max_len))
    by_source: dict[str, list[int]] = {}
    for k, image_id in enumerate(data.dev_ids):
        by_source.setdefault(source_of(image_id), []).append(k)
    scores: dict[str, float] = {}
    for source, members in by_source.items():
        part = score_captions([data.dev_ids[k] for k in members], [captions[k] for k in members], data.corpus.captions)
        if len(by_source) > 1:
            scores.update({f"{metric}/{source}": value for metric, value in part.items() if metric in ("CIDEr-D", "BLEU-4")})
        for metric, value in part.items():
            scores[metric] = scores.get(metric, 0.0) + value / len(by_source)
    return scores


def write_history(out: Path, history: list[dict]) -> None:
    """Rewritten after every epoch: CPU runs take hours and are often stopped by hand."""
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".history.json").write_text(json.dumps(history, indent=1))


def build_model(config: TrainConfig, data: TrainingData, feature_dim: int, head: dict | None) -> tuple[torch.nn.Module, CaptionModelSpec]:
    freeze = config.freeze_embeddings if config.freeze_embeddings is not None else config.decoder == "merge"
    decoder_config = DecoderConfig(
        kind=config.decoder, vocab_size=len(data.vocab), feature_dim=feature_dim, embed_dim=config.embed_dim,
        hidden_dim=config.hidden_dim, attention_dim=config.attention_dim, dropout=config.dropout,
        freeze_embeddings=freeze, concept_head=head["config"] if head else None,
    )
    decoder = build_decoder(decoder_config)
    if config.glove:
        glove_words, glove_vectors = _read_glove(config.glove)
        found = load_glove(decoder.embed, data.vocab.words, glove_words, glove_vectors)
        log.info("GloVe: %d of %d vocabulary words initialised", found, len(data.vocab) - 1)
    if config.init_from:
        source_spec, source, _ = load_checkpoint(config.init_from)
        copied = transplant_weights(source, source_spec.vocab, decoder, data.vocab)
        log.info("warm start from %s: %d tensors copied, vocabulary rows matched by word", config.init_from, copied)
    if head:
        decoder.concept_head.load_state_dict(head["state_dict"])
        decoder.concept_head.requires_grad_(False)  # trained in its own stage; the decoder learns to read it
    decoder.embed.weight.requires_grad_(not freeze)
    spec = CaptionModelSpec(
        encoder=config.encoder, decoder=decoder_config, vocab=data.vocab, max_len=config.max_len,
        beam_size=config.eval_beam, info={"command": config.command, "config": asdict(config)},
    )
    return decoder, spec


@dataclass
class RunState:
    """Where a run stands; saved in every `.last.pt` so a stopped run resumes exactly."""

    epoch: int = -1  # last finished cross-entropy epoch
    scst_epoch: int = -1  # last finished self-critical epoch
    best_cider: float = -1.0
    stale: int = 0
    history: list[dict] = field(default_factory=list)

    def to_extra(self, optimizer, phase: str) -> dict:
        return {**asdict(self), "optimizer": optimizer.state_dict(), "phase": phase}

    @classmethod
    def from_extra(cls, extra: dict) -> "RunState":
        return cls(extra["epoch"], extra.get("scst_epoch", -1), extra["best_cider"], extra["stale"], extra["history"])


def train(config: TrainConfig) -> Path:
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    out = Path(config.out)
    last_path = out.with_name(out.stem + ".last.pt")
    encoder = build_encoder(config.encoder, config.encoder_weights)
    data = prepare_data(config, encoder)
    head = concept_stage(config, data, encoder.feature_dim, out) if config.concepts else None
    decoder, spec = build_model(config, data, encoder.feature_dim, head)

    params = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    state, phase, scst_optimizer = RunState(), "xe", None
    if config.resume:
        _, resumed, payload = load_checkpoint(config.resume)
        decoder.load_state_dict(resumed.state_dict())
        state, phase = RunState.from_extra(payload["extra"]), payload["extra"].get("phase", "xe")
        if phase == "xe":
            optimizer.load_state_dict(payload["extra"]["optimizer"])
        else:
            scst_optimizer = payload["extra"]["optimizer"]
        log.info("resumed from %s after %s epoch %d", config.resume, phase, state.scst_epoch if phase == "scst" else state.epoch)

    t0 = time.time()
    # A resumed run that had early-stopped, or had moved on to SCST, goes straight to SCST.
    first_epoch = config.epochs if phase == "scst" or state.stale >= config.patience else state.epoch + 1
    for epoch in range(first_epoch, config.epochs):
        lr = config.lr if epoch < config.lr_drop_epoch else config.lr_after_drop
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = _xe_epoch(decoder, optimizer, data, config, rng)
        scores = dev_scores(decoder, data, config.max_len)
        state.history.append({"epoch": epoch, "phase": "xe", "lr": lr, "loss": loss, **scores, "elapsed_s": time.time() - t0})
        write_history(out, state.history)
        improved = scores["CIDEr-D"] > state.best_cider
        log.info("epoch %d lr %.0e loss %.3f dev CIDEr-D %.3f BLEU-4 %.3f%s", epoch, lr, loss, scores["CIDEr-D"], scores["BLEU-4"], " *" if improved else "")
        state.epoch = epoch
        if improved:
            state.best_cider, state.stale = scores["CIDEr-D"], 0
            spec.info["history"] = state.history
            save_checkpoint(out, spec, decoder)
        else:
            state.stale += 1
        save_checkpoint(last_path, spec, decoder, extra=state.to_extra(optimizer, "xe"))
        if state.stale >= config.patience:
            log.info("early stop: dev CIDEr-D has not improved for %d epochs", state.stale)
            break

    if config.scst_epochs:
        from streamcap.train.scst import SelfCritical

        if phase != "scst":
            if out.is_file():  # SCST starts from the best cross-entropy model
                decoder.load_state_dict(load_checkpoint(out)[1].state_dict())
            else:  # no cross-entropy epoch ran (--epochs 0 --init-from ...): start from what we have
                state.best_cider = dev_scores(decoder, data, config.max_len)["CIDEr-D"]
                save_checkpoint(out, spec, decoder)
        scst = SelfCritical(decoder, data, config, scst_optimizer)
        for epoch in range(state.scst_epoch + 1, config.scst_epochs):
            reward = scst.epoch(epoch)
            scores = dev_scores(decoder, data, config.max_len)
            state.history.append({"epoch": epoch, "phase": "scst", "reward": reward, **scores, "elapsed_s": time.time() - t0})
            write_history(out, state.history)
            improved = scores["CIDEr-D"] > state.best_cider
            log.info("scst epoch %d train reward %.3f dev CIDEr-D %.3f BLEU-4 %.3f%s", epoch, reward, scores["CIDEr-D"], scores["BLEU-4"], " *" if improved else "")
            state.scst_epoch = epoch
            if improved:
                state.best_cider = scores["CIDEr-D"]
                spec.info["history"] = state.history
                save_checkpoint(out, spec, decoder)
            save_checkpoint(last_path, spec, decoder, extra=state.to_extra(scst.optimizer, "scst"))

    log.info("best dev CIDEr-D %.3f; model at %s (%.0f s)", state.best_cider, out, time.time() - t0)
    return out
