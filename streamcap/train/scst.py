"""Self-critical sequence training (Rennie et al. 2017) with a CIDEr-D reward.

The policy samples several captions per image; each sample's advantage is its
CIDEr-D minus the mean CIDEr-D of the other samples of the same image (the
"new self-critical" baseline of Luo 2020, which needs no extra greedy pass).
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from streamcap.model.checkpoint import save_checkpoint
from streamcap.model.vocab import tokenize_for_scoring
from streamcap.train.metrics import CiderD

log = logging.getLogger(__name__)


def sample_captions(decoder, grid: torch.Tensor, start: int, end: int, max_len: int, samples: int):
    """Sampled tokens (B*S, T) and their summed log-probs (B*S,), with gradients."""
    memory = decoder.prepare(grid)
    expand = torch.arange(grid.shape[0]).repeat_interleave(samples)  # (B*S,)
    memory = tuple(m.index_select(0, expand) for m in memory)
    state = decoder.init_state(memory)
    tokens = torch.full((len(expand),), start, dtype=torch.long)  # (B*S,)
    alive = torch.ones(len(expand), dtype=torch.bool)
    generated, logprob_sum = [], torch.zeros(len(expand))
    for _ in range(max_len):
        logprobs, state = decoder.step(tokens, state, memory)  # (B*S, V)
        tokens = torch.multinomial(logprobs.detach().exp(), 1)[:, 0]  # (B*S,)
        picked = logprobs.gather(1, tokens[:, None])[:, 0]  # (B*S,)
        logprob_sum = logprob_sum + torch.where(alive, picked, torch.zeros_like(picked))
        generated.append(torch.where(alive, tokens, torch.zeros_like(tokens)))
        alive = alive & (tokens != end)
        if not bool(alive.any()):
            break
    return torch.stack(generated, 1), logprob_sum


def self_critical_training(decoder, vocab, features, train_ids, corpus, dev_features, dev_ids, config, spec, out, history, best_cider, t0):
    from streamcap.train.train import _dev_cider, write_history

    references = {i: [tokenize_for_scoring(c) for c in corpus.captions[i]] for i in train_ids}
    reward = CiderD(references)
    optimizer = torch.optim.Adam([p for p in decoder.parameters() if p.requires_grad], lr=config.scst_lr)
    rng = np.random.default_rng(config.seed + 1)
    S = config.scst_samples
    for epoch in range(config.scst_epochs):
        decoder.train()
        order = rng.permutation(len(train_ids))
        mean_reward = []
        for start in range(0, len(order), config.scst_batch_images):
            rows = order[start : start + config.scst_batch_images]
            grid = features[torch.from_numpy(rows)].float()  # (B, P, D)
            tokens, logprob_sum = sample_captions(decoder, grid, vocab.start_index, vocab.end_index, config.max_len, S)
            texts = [vocab.decode(t) for t in tokens.tolist()]
            image_keys = [train_ids[r] for r in rows for _ in range(S)]
            rewards = torch.tensor([reward.sentence_score(k, t) for k, t in zip(image_keys, texts)]).view(-1, S)  # (B, S)
            baseline = (rewards.sum(1, keepdim=True) - rewards) / (S - 1)  # (B, S)
            advantage = (rewards - baseline).view(-1)  # (B*S,)
            lengths = (tokens != 0).sum(1).clamp(min=1).float()  # (B*S,)
            loss = -(advantage * logprob_sum / lengths).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), config.grad_clip)
            optimizer.step()
            mean_reward.append(float(rewards.mean()))
        scores = _dev_cider(decoder, vocab, dev_features, dev_ids, corpus, config.max_len)
        history.append({"epoch": epoch, "phase": "scst", "reward": float(np.mean(mean_reward)), **scores, "elapsed_s": time.time() - t0})
        write_history(out, history)
        improved = scores["CIDEr-D"] > best_cider
        log.info("scst epoch %d train reward %.3f dev CIDEr-D %.3f BLEU-4 %.3f%s", epoch, np.mean(mean_reward), scores["CIDEr-D"], scores["BLEU-4"], " *" if improved else "")
        if improved:
            best_cider = scores["CIDEr-D"]
            spec.info["history"] = history
            save_checkpoint(out, spec, decoder)
    return best_cider
