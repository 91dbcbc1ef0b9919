"""`streamcap train`: concept head, cross-entropy with teacher forcing, then optional SCST.

The stages, each resumable:
1. Features: the frozen encoder's grid of every image, extracted once per
   corpus and input size and cached (`--input-sizes 224,320` trains on both,
   a size drawn per batch, so one model serves a small box at 224 and a GPU
   box at 320).
2. Concept head (`--concepts`): groups and the object categories the training
   captions name often enough (`--min-category-images`), trained on
   caption-word labels (hand labels where there are any), every image
   predicted out of fold (camera frames held out a whole clip at a time, so
   their predictions are what an unseen camera gets), calibrated on those
   out-of-fold predictions with camera frames weighted up (`--camera-weight`),
   because camera views are what users have and what COCO alone calibrates
   wrongly. The decoder learns to read the out-of-fold probabilities.
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

from streamcap.concepts import CONCEPT_NAMES, GROUP_NAMES, members_of
from streamcap.model.checkpoint import CaptionModelSpec, load_checkpoint, save_checkpoint
from streamcap.model.concept_head import ConceptHead, ConceptHeadConfig, combine_groups, fit_calibration
from streamcap.model.decoder import DecoderConfig, build_decoder, load_glove, transplant_weights
from streamcap.model.decoding import DecodeOptions
from streamcap.model.encoder import build_encoder
from streamcap.model.vocab import Vocabulary, clean_caption
from streamcap.train.concept_eval import image_labels
from streamcap.train.concept_training import head_logits, label_arrays, out_of_fold_logits, train_head
from streamcap.train.data import CaptionCorpus, clip_of, load_corpora, source_of
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
    min_category_images: int = 25  # a category named in fewer training images gets no head output
    camera_weight: float = 8.0  # camera frames (the labelled clip corpora) count this many times in training and calibration
    input_sizes: str = ""  # comma-separated square sides; "" = the encoder's own
    scst_epochs: int = 0
    scst_lr: float = 2e-5
    scst_samples: int = 5
    scst_batch_images: int = 32
    scst_images: int = 0  # images per self-critical epoch (0: all; camera frames are always among them)
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
    features: list[torch.Tensor]  # per input size, (N, P, D) float16, in RAM
    dev_features: np.ndarray  # (N_dev, P, D) float16 at the first size
    vocab: Vocabulary
    rows: np.ndarray  # caption -> row of its image
    sequences: np.ndarray  # (captions, max_len) token ids
    concepts: list[torch.Tensor] | None = None  # per input size, (N, C) out-of-fold probabilities of the training images
    camera: np.ndarray | None = None  # (N,) bool: the image is a camera frame (a hand-labelled clip corpus)

    def grid(self, image_rows, size: int = 0) -> torch.Tensor:
        return self.features[size][torch.as_tensor(image_rows)].float()  # (B, P, D)

    def concept_inputs(self, image_rows, size: int = 0) -> torch.Tensor | None:
        return None if self.concepts is None else self.concepts[size][torch.as_tensor(image_rows)]  # (B, C)


def input_sizes(config: TrainConfig) -> list[int]:
    from streamcap.model.encoder import SPECS

    return [int(v) for v in config.input_sizes.split(",")] if config.input_sizes else [SPECS[config.encoder].input_size]


def _features_by_source(encoder, ids: list[str], corpus: CaptionCorpus, cache_dir: str) -> tuple[np.ndarray, list[str]]:
    """Features of `ids` cached per corpus, so adding a corpus never re-extracts the others."""
    parts, bad = [], []
    for source in dict.fromkeys(source_of(i) for i in ids):
        members = [i for i in ids if source_of(i) == source]
        feats, unreadable = cached_features(encoder, members, corpus.image_paths, cache_dir)
        parts.append(feats)
        bad += unreadable
    order = [i for source in dict.fromkeys(source_of(i) for i in ids) for i in ids if source_of(i) == source]
    if order != ids:
        raise ValueError("training ids must be grouped by corpus")
    return (np.concatenate([np.asarray(p) for p in parts]) if len(parts) > 1 else parts[0]), bad


def prepare_data(config: TrainConfig) -> TrainingData:
    corpus = load_corpora(config.data, config.images, config.corrections)
    train_ids = corpus.split(config.train_split)
    if config.limit_train_images:
        train_ids = train_ids[: config.limit_train_images]
    dev_ids = corpus.split(config.dev_split) if not config.limit_train_images else train_ids
    sizes = input_sizes(config)
    features, dev_feats, bad = [], None, set()
    for k, size in enumerate(sizes):
        encoder = build_encoder(config.encoder, config.encoder_weights, input_size=size)
        train_feats, bad_train = _features_by_source(encoder, train_ids, corpus, config.cache_dir)
        features.append(train_feats)
        bad |= set(bad_train)
        if k == 0:
            dev_feats, bad_dev = _features_by_source(encoder, dev_ids, corpus, config.cache_dir)
    keep_train = [i for i, image_id in enumerate(train_ids) if image_id not in bad]
    keep_dev = [i for i, image_id in enumerate(dev_ids) if image_id not in set(bad_dev)]
    train_ids = [train_ids[i] for i in keep_train]
    dev_ids = [dev_ids[i] for i in keep_dev]
    features = [torch.from_numpy(np.ascontiguousarray(f[keep_train])) for f in features]  # (N, P, D) float16 in RAM
    dev_features = np.ascontiguousarray(dev_feats[keep_dev])

    cleaned = [clean_caption(c, config.min_word_length) for i in train_ids for c in corpus.captions[i]]
    vocab = Vocabulary.build(cleaned, config.min_count)
    rows, sequences = _encode_captions(train_ids, corpus, vocab, config.max_len, config.min_word_length)
    camera = np.array([i in corpus.labels for i in train_ids], dtype=bool)
    log.info("train: %d images (%d camera frames), %d captions, vocabulary %d words, input sizes %s; dev: %d images",
             len(train_ids), int(camera.sum()), len(rows), len(vocab), sizes, len(dev_ids))
    return TrainingData(corpus, train_ids, dev_ids, features, dev_features, vocab, rows, sequences, camera=camera)


def head_concepts(data: TrainingData, labels: torch.Tensor, mask: torch.Tensor, min_images: int) -> tuple[str, ...]:
    """The groups, and the categories named in at least `min_images` training images."""
    positives = (labels * mask).sum(0)  # (C_all,)
    return tuple(c for k, c in enumerate(CONCEPT_NAMES) if c in GROUP_NAMES or positives[k] >= min_images)


def stratified_folds(data: TrainingData, folds: int, seed: int) -> np.ndarray:
    """Fold of every training image: camera frames a whole clip at a time, the rest at random."""
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(len(data.train_ids)) % folds
    clips = sorted({clip_of(i) for i, cam in zip(data.train_ids, data.camera) if cam})
    clip_fold = {clip: k % folds for k, clip in enumerate(rng.permutation(clips))}
    for row in np.flatnonzero(data.camera):
        fold_of[row] = clip_fold[clip_of(data.train_ids[row])]
    return fold_of


def fit_concept_head(config: TrainConfig, data: TrainingData, feature_dim: int,
                     names: tuple[str, ...] | None = None) -> tuple[ConceptHead, list[torch.Tensor]]:
    """The calibrated head trained on every training image, and per input size the out-of-fold probabilities (N, C).

    `names`: the concepts to learn (a refit keeps a trained decoder's); default: the groups and every category
    with enough training images."""
    all_labels, all_mask = label_arrays([image_labels(data.corpus, i) for i in data.train_ids], CONCEPT_NAMES)
    names = tuple(names) if names else head_concepts(data, all_labels, all_mask, config.min_category_images)
    keep = torch.tensor([CONCEPT_NAMES.index(c) for c in names])
    labels, mask = all_labels[:, keep], all_mask[:, keep]
    groups = tuple((g, tuple(c for c in members_of(g) if c in names)) for g in GROUP_NAMES)
    head_config = ConceptHeadConfig(names, feature_dim, groups=tuple((g, m) for g, m in groups if m))
    weight = np.where(data.camera, config.camera_weight, 1.0)  # (N,)
    log.info("concept head: %d concepts (%d categories); %d camera frames weighted x%g",
             len(names), len(names) - len(GROUP_NAMES), int(data.camera.sum()), config.camera_weight)
    folds = config.concept_folds if len(data.train_ids) >= 5 * config.concept_folds else 0
    train_kwargs = dict(epochs=config.concept_epochs, seed=config.seed, weights=weight)
    scale, bias = torch.ones(len(names)), torch.zeros(len(names))
    if folds:
        oof = out_of_fold_logits(head_config, data.features, labels, mask, stratified_folds(data, folds, config.seed), **train_kwargs)
        # One calibration for every size and fold, on predictions none of the heads trained on.
        weighted = mask * torch.from_numpy(weight).float()[:, None]
        scale, bias = fit_calibration(torch.cat(oof), labels.repeat(len(oof), 1), weighted.repeat(len(oof), 1))
    head = train_head(head_config, data.features, labels, mask, **train_kwargs)
    if not folds:  # a toy run: too few images to hold any out, so the head predicts its own
        oof = [head_logits(head, f) for f in data.features]
    head.calib_scale.copy_(scale)
    head.calib_bias.copy_(bias)
    log.info("concept head calibration: %s", ", ".join(f"{c} x{float(a):.2f}{float(b):+.2f}" for c, a, b in zip(names, scale, bias)))
    member = head_config.membership()
    return head, [combine_groups(torch.sigmoid(logits * scale + bias), member) for logits in oof]


def concept_stage(config: TrainConfig, data: TrainingData, feature_dim: int, out: Path) -> dict:
    """Train (or reload) the concept head; fills `data.concepts`; returns the head's config and weights."""
    stage_file = out.with_name(out.stem + ".concepts.pt")
    if stage_file.is_file():
        saved = torch.load(stage_file, map_location="cpu", weights_only=True)
        if saved["train_ids"] == data.train_ids and len(saved["concepts"]) == len(data.features):
            log.info("concept head: reusing %s", stage_file)
            data.concepts = saved["concepts"]
            return {"config": saved["config"], "state_dict": saved["state_dict"]}
    t0 = time.time()
    head, data.concepts = fit_concept_head(config, data, feature_dim)
    log.info("concept head trained in %.0f s", time.time() - t0)
    result = {"config": head.config.to_dict(), "state_dict": head.state_dict()}
    stage_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**result, "concepts": data.concepts, "train_ids": data.train_ids}, stage_file)
    return result


def _caption_rows(data: TrainingData, config: TrainConfig, rng) -> np.ndarray:
    """Every caption once, camera frames' captions `camera_weight` times (rounded at random)."""
    if data.camera is None or not data.camera.any() or config.camera_weight == 1:
        return np.arange(len(data.rows))
    on_camera = data.camera[data.rows]  # (captions,)
    whole, part = divmod(config.camera_weight, 1.0)
    repeats = np.where(on_camera, int(whole) + (rng.random(len(data.rows)) < part), 1)
    return np.repeat(np.arange(len(data.rows)), repeats)


def _xe_epoch(decoder, optimizer, data: TrainingData, config: TrainConfig, rng) -> float:
    decoder.train()
    captions = _caption_rows(data, config, rng)
    lengths = (data.sequences[captions] != 0).sum(1)
    total, count = 0.0, 0
    for positions in _length_bucketed_batches(lengths, config.batch_size, rng):
        batch = captions[positions]
        size = int(rng.integers(len(data.features)))  # one input size per batch
        T = int(lengths[positions].max())
        seq = torch.from_numpy(data.sequences[batch, :T])  # (B, T)
        image_rows = data.rows[batch]
        grid = data.grid(image_rows, size)  # (B, P, D)
        concepts = data.concept_inputs(image_rows, size)  # (B, C)
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
    data = prepare_data(config)
    feature_dim = data.features[0].shape[-1]
    head = concept_stage(config, data, feature_dim, out) if config.concepts else None
    decoder, spec = build_model(config, data, feature_dim, head)

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
