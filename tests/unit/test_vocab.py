import pytest

from streamcap.model.vocab import END, PAD, START, Vocabulary, clean_caption


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("A child in a pink dress is climbing up a set of stairs in an entry way .", "child in pink dress is climbing up set of stairs in an entry way"),
        ("Two dogs, one black & one white, play!", "two dogs one black one white play"),
        ("A man wearing a #23 jersey runs 100m", "man wearing jersey runs"),
        ("DOG'S toy", "dogs toy"),
    ],
)
def test_clean_caption_follows_the_paper(raw, expected):
    assert " ".join(clean_caption(raw)) == expected


def test_vocabulary_of_flickr8k_train_matches_the_papers(flickr8k, shared_data):
    # given the official training captions
    cleaned = [clean_caption(c) for i in flickr8k.split("train") for c in flickr8k.captions[i]]
    # when the vocabulary keeps words seen at least 10 times
    vocab = Vocabulary.build(cleaned, min_count=10)
    # then it is the paper's 1,651 words (with startseq/endseq) plus padding, the same set as the GloVe subset
    assert len(vocab) == 1652
    published = (shared_data / "glove" / "flickr8k_vocab.txt").read_text().split()
    assert set(vocab.words[1:]) == set(published[1:]), "vocabulary differs from the published Flickr8k one"
    assert vocab.words[0] == PAD and START in vocab.index and END in vocab.index


def test_encode_wraps_in_markers_and_drops_unknown_words():
    vocab = Vocabulary([PAD, START, END, "dog", "runs"])
    assert vocab.encode(["dog", "zebra", "runs"]) == [1, 3, 4, 2]
    assert vocab.decode([1, 3, 4, 2, 3, 0]) == "dog runs"


def test_vocabulary_rejects_a_word_list_without_padding_first():
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary([START, END, PAD])
