"""Self-critical sequence training (Rennie et al. 2017) with a CIDEr-D reward.

The policy samples several captions per image; each sample's advantage is its
CIDEr-D minus the mean CIDEr-D of the other samples of the same image (the
"new self-critical" baseline of Luo 2020, which needs no extra greedy pass).
Samples are drawn under the same step rules as decoding (word rules, no
repeated trigram; `streamcap.model.grounding`), so the policy is rewarded only
for captions the search could produce, and the decoder reads the same
out-of-fold concept probabilities as in cross-entropy training.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from streamcap.model.grounding import StepRules
from streamcap.model.vocab import tokenize_for_scoring
from streamcap.train.metrics import CiderD

log = logging.getLogger(__name__)


def sample_captions(decoder, grid: torch.Tensor, rules: StepRules, start: int, end: int, max_len: int, samples: int,
                    concepts: torch.Tensor | None = None):
    """Sampled tokens (B*S, T) and their summed log-probs (B*S,), with gradients."""
    memory, _ = decoder.prepare(grid, concepts)
    expand = torch.arange(grid.shape[0]).repeat_interleave(samples)  # (B*S,)
    memory = tuple(m.index_select(0, expand) for m in memory)
    state = decoder.init_state(memory)
    tokens = torch.full((len(expand),), start, dtype=torch.long)  # (B*S,)
    alive = torch.ones(len(expand), dtype=torch.bool)
    history = torch.zeros(len(expand), 0, dtype=torch.long)  # (B*S, t)
    generated, logprob_sum = [], torch.zeros(len(expand))
    for _ in range(max_len):
        logprobs, state = decoder.step(tokens, state, memory)  # (B*S, V)
        logprobs = F.log_softmax(rules.apply(logprobs, history, expand), -1)  # the policy is the ruled distribution
        tokens = torch.multinomial(logprobs.detach().exp(), 1)[:, 0]  # (B*S,)
        picked = logprobs.gather(1, tokens[:, None])[:, 0]  # (B*S,)
        logprob_sum = logprob_sum + torch.where(alive, picked, torch.zeros_like(picked))
        generated.append(torch.where(alive, tokens, torch.zeros_like(tokens)))
        history = torch.cat([history, tokens[:, None]], 1)
        alive = alive & (tokens != end)
        if not bool(alive.any()):
            break
    return torch.stack(generated, 1), logprob_sum


class SelfCritical:
    """One optimiser and one reward over a run; `epoch()` trains one pass over the training images."""

    def __init__(self, decoder, data, config, optimizer_state: dict | None = None):
        self.decoder, self.data, self.config = decoder, data, config
        references = {i: [tokenize_for_scoring(c) for c in data.corpus.captions[i]] for i in data.train_ids}
        self.reward = CiderD(references)
        self.rules = StepRules(data.vocab)
        self.optimizer = torch.optim.Adam([p for p in decoder.parameters() if p.requires_grad], lr=config.scst_lr)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)

    def epoch(self, epoch: int) -> float:
        """Mean training reward of this epoch."""
        decoder, data, config, vocab = self.decoder, self.data, self.config, self.data.vocab
        rng = np.random.default_rng(config.seed + 1 + epoch)
        S = config.scst_samples
        decoder.train()
        order = rng.permutation(len(data.train_ids))
        if config.scst_images and config.scst_images < len(order):
            # A CPU epoch over every image takes hours: a fresh random share each epoch, every camera frame in it.
            camera = np.flatnonzero(data.camera) if data.camera is not None else np.array([], dtype=int)
            others = order[~np.isin(order, camera)][: max(0, config.scst_images - len(camera))]
            order = rng.permutation(np.concatenate([camera, others]))
        rewards_seen = []
        for start in range(0, len(order), config.scst_batch_images):
            rows = torch.from_numpy(order[start : start + config.scst_batch_images])
            size = int(rng.integers(len(data.features)))  # one input size per batch, as in cross-entropy
            grid = data.grid(rows, size)  # (B, P, D)
            concepts = data.concept_inputs(rows, size)  # (B, C)
            tokens, logprob_sum = sample_captions(decoder, grid, self.rules, vocab.start_index, vocab.end_index,
                                                  config.max_len, S, concepts)
            texts = [vocab.decode(t) for t in tokens.tolist()]
            image_keys = [data.train_ids[r] for r in rows.tolist() for _ in range(S)]
            rewards = torch.tensor([self.reward.sentence_score(k, t) for k, t in zip(image_keys, texts)]).view(-1, S)  # (B, S)
            baseline = (rewards.sum(1, keepdim=True) - rewards) / (S - 1)  # (B, S)
            advantage = (rewards - baseline).view(-1)  # (B*S,)
            lengths = (tokens != 0).sum(1).clamp(min=1).float()  # (B*S,)
            loss = -(advantage * logprob_sum / lengths).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), config.grad_clip)
            self.optimizer.step()
            rewards_seen.append(float(rewards.mean()))
        return float(np.mean(rewards_seen))
