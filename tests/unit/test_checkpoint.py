import pytest
import torch

from streamcap.__main__ import main
from streamcap.backends.torch_backend import TorchCaptioner
from streamcap.model.decoding import DecodeOptions
from streamcap.concepts import CONCEPT_NAMES
from streamcap.model.checkpoint import CaptionModelSpec, CheckpointError, load_checkpoint, save_checkpoint
from streamcap.model.concept_head import ConceptHeadConfig
from streamcap.model.decoder import DecoderConfig, build_decoder
from streamcap.model.vocab import END, PAD, START, Vocabulary

WORDS = [PAD, START, END, "dog", "runs", "grass"]


def _spec(kind="attention", feature_dim=1280):
    vocab = Vocabulary(WORDS)
    config = DecoderConfig(kind=kind, vocab_size=len(vocab), feature_dim=feature_dim, hidden_dim=16, attention_dim=8, embed_dim=8)
    return CaptionModelSpec(encoder="efficientnet_lite0", decoder=config, vocab=vocab, beam_size=3)


@pytest.mark.parametrize("kind", ["merge", "attention"])
@pytest.mark.parametrize("half", [False, True])
def test_checkpoint_round_trip(tmp_path, kind, half):
    # given a decoder saved with its vocabulary and decoding defaults
    spec = _spec(kind)
    decoder = build_decoder(spec.decoder).eval()
    save_checkpoint(tmp_path / "m.pt", spec, decoder, half=half)
    # when loaded back
    loaded_spec, loaded, _ = load_checkpoint(tmp_path / "m.pt")
    # then everything needed to caption comes back
    assert loaded_spec.vocab.words == WORDS and loaded_spec.encoder == "efficientnet_lite0"
    assert loaded_spec.decoder == spec.decoder and loaded_spec.beam_size == 3
    tolerance = 1e-3 if half else 0.0
    for name, tensor in decoder.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, atol=tolerance, rtol=tolerance)


def test_checkpoint_whose_vocabulary_does_not_fit_the_decoder_is_refused(tmp_path):
    spec = _spec()
    decoder = build_decoder(spec.decoder)
    spec.vocab = Vocabulary(WORDS + ["extra"])
    save_checkpoint(tmp_path / "m.pt", spec, decoder)
    with pytest.raises(CheckpointError, match="vocabulary has 7 words but the decoder expects 6"):
        load_checkpoint(tmp_path / "m.pt")


def test_checkpoint_for_another_encoder_is_refused(tmp_path, lite0_encoder):
    spec = _spec(feature_dim=2048)
    spec.encoder = "resnet50"
    with pytest.raises(CheckpointError, match="trained on resnet50 features .2048-d. but the encoder is efficientnet_lite0"):
        TorchCaptioner(spec, build_decoder(spec.decoder), lite0_encoder, DecodeOptions())


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_unreadable_checkpoint_names_the_file(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pt: not a streamcap checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("kind", ["merge", "attention"])
def test_warm_start_matches_vocabulary_rows_by_word(kind):
    # given a trained-looking decoder and a new vocabulary that adds "a" in front and drops "grass"
    spec = _spec(kind)
    torch.manual_seed(0)
    source = build_decoder(spec.decoder)
    new_vocab = Vocabulary([PAD, "a", START, END, "dog", "runs"])
    target = build_decoder(DecoderConfig(**{**spec.decoder.to_dict(), "vocab_size": len(new_vocab)}))
    fresh_row_of_a = target.embed.weight[1].clone()
    # when warm-started
    from streamcap.model.decoder import transplant_weights

    transplant_weights(source, spec.vocab, target, new_vocab)
    # then shared words keep their rows, the new word keeps its fresh row, the rest is copied as is
    for word in (START, END, "dog", "runs"):
        torch.testing.assert_close(target.embed.weight[new_vocab.index[word]], source.embed.weight[spec.vocab.index[word]])
    torch.testing.assert_close(target.embed.weight[1], fresh_row_of_a)
    source_state, target_state = source.state_dict(), target.state_dict()
    vocab_sized = [n for n, t in source_state.items() if t.shape[:1] == (len(spec.vocab),)]
    assert vocab_sized, "expected the embedding and output layer to be indexed by vocabulary"
    for name, tensor in source_state.items():
        if name not in vocab_sized:
            torch.testing.assert_close(target_state[name], tensor)


def _spec_with_head():
    spec = _spec()
    spec.decoder = DecoderConfig(**{**spec.decoder.to_dict(), "concept_head": ConceptHeadConfig(CONCEPT_NAMES, 1280).to_dict()})
    return spec


def test_pack_records_decoding_and_grounding_defaults(tmp_path):
    # given a trained checkpoint with a concept head
    spec = _spec_with_head()
    save_checkpoint(tmp_path / "m.pt", spec, build_decoder(spec.decoder).eval())
    # when packed with thresholds chosen on dev
    code = main(["pack", str(tmp_path / "m.pt"), str(tmp_path / "packed.pt"), "--beam", "2",
                 "--ban-below", "0.1", "--concept-thresholds", "person=0.5,0.95"])
    # then the packed model decodes with them by default
    assert code == 0
    packed, _, _ = load_checkpoint(tmp_path / "packed.pt")
    assert packed.beam_size == 2
    assert packed.grounding.ban_below == 0.1 and packed.grounding.require_above == spec.grounding.require_above
    assert packed.grounding.per_concept == (("person", 0.5, 0.95),)
    assert DecodeOptions.for_model(packed).grounding == packed.grounding


@pytest.mark.parametrize("item, message", [("ghost=0.1,0.9", "concepts are person"), ("person=0.1", "CONCEPT=BAN,REQUIRE")])
def test_pack_refuses_thresholds_it_cannot_apply(tmp_path, item, message, capsys):
    spec = _spec_with_head()
    save_checkpoint(tmp_path / "m.pt", spec, build_decoder(spec.decoder).eval())
    with pytest.raises(SystemExit) as stopped:
        main(["pack", str(tmp_path / "m.pt"), str(tmp_path / "packed.pt"), "--concept-thresholds", item])
    assert message in str(stopped.value)
    assert not (tmp_path / "packed.pt").exists()


def test_pack_refuses_grounding_for_a_model_without_concept_head(tmp_path):
    spec = _spec()
    save_checkpoint(tmp_path / "m.pt", spec, build_decoder(spec.decoder).eval())
    with pytest.raises(SystemExit, match="no concept head"):
        main(["pack", str(tmp_path / "m.pt"), str(tmp_path / "packed.pt"), "--ban-below", "0.2"])
