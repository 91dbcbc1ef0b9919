"""Our BLEU, ROUGE-L and CIDEr-D agree with pycocoevalcap on the same tokenised input."""
import pytest

from streamcap.model.vocab import tokenize_for_scoring
from streamcap.train.metrics import CiderD, bleu, rouge_l

coco = pytest.importorskip("pycocoevalcap", reason="pip install pycocoevalcap to compare against the COCO scorer")
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402


@pytest.fixture(scope="module")
def human_vs_rest(flickr8k):
    """Each dev image's first human caption scored against its other four: real, varied text."""
    ids = flickr8k.split("dev")[:300]
    refs = {i: [tokenize_for_scoring(c) for c in flickr8k.captions[i][1:]] for i in ids}
    hyps = {i: [tokenize_for_scoring(flickr8k.captions[i][0])] for i in ids}
    return refs, hyps


# (hypothesis, references): a one-word hypothesis, no overlap at all, a repeated word, a longer hypothesis.
EDGE_CASES = (
    {"a": ("dog", ["a dog runs on the grass", "the dog is running"]), "b": ("two men", ["two men talk"])},
    {"a": ("men talking loudly", ["a dog"]), "b": ("dog dog dog dog", ["a dog", "dog runs"])},
    {"a": ("a black dog runs across the green grass in the park", ["a dog runs", "black dog on grass"])},
)


def _cases(human_vs_rest):
    refs, hyps = human_vs_rest
    yield refs, hyps
    for case in EDGE_CASES:
        yield {k: refs for k, (_, refs) in case.items()}, {k: [hyp] for k, (hyp, _) in case.items()}


def test_bleu_agrees_with_coco(human_vs_rest):
    for refs, hyps in _cases(human_vs_rest):
        expected, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
        assert bleu(refs, hyps) == pytest.approx(expected, abs=1e-6)


def test_rouge_l_agrees_with_coco(human_vs_rest):
    for refs, hyps in _cases(human_vs_rest):
        expected, per_image = Rouge().compute_score(refs, hyps)
        ours, ours_per_image = rouge_l(refs, hyps)
        assert ours == pytest.approx(expected, abs=1e-6)
        assert ours_per_image == pytest.approx(list(per_image), abs=1e-6)


def test_cider_d_agrees_with_coco(human_vs_rest):
    for refs, hyps in _cases(human_vs_rest):
        expected, per_image = Cider().compute_score(refs, hyps)
        ours, ours_per_image = CiderD(refs).corpus_score(hyps)
        assert ours == pytest.approx(expected, abs=1e-6)
        assert ours_per_image == pytest.approx(list(per_image), abs=1e-6)


def test_human_reference_point_matches_the_published_figures(flickr8k):
    # ENVIRONMENT.md: on dev, caption 1 against the other four scores BLEU-4 0.21 and CIDEr 0.80 (PTB tokenizer).
    ids = flickr8k.split("dev")
    refs = {i: [tokenize_for_scoring(c) for c in flickr8k.captions[i][1:]] for i in ids}
    hyps = {i: [tokenize_for_scoring(flickr8k.captions[i][0])] for i in ids}
    assert bleu(refs, hyps)[3] == pytest.approx(0.21, abs=0.02)
    assert CiderD(refs).corpus_score(hyps)[0] == pytest.approx(0.80, abs=0.05)
