"""Tests of HFEncoderConditioner (`model: hf`) on tiny random encoders built offline in seconds."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from audiocraft.models import builders
from audiocraft.modules.conditioners import ConditioningAttributes, T5Conditioner
from audiocraft.modules.hf_conditioner import HFEncoderConditioner

WORDS = ["calm", "fast", "dark", "piano", "drums", "synth", "bass", "techno", "jazz", "rock", "beat", "soft",
         "with", "and", "a", "at", "bpm", "120"]
TEXTS = ["calm piano with soft drums", "", None, "fast techno beat at 120 bpm with synth and bass"]
CONFIG = Path(__file__).parents[2] / "config" / "conditioner" / "text2music_hf.yaml"


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> str:
    """A random 2-layer T5 encoder (width 32) with a sentencepiece tokenizer trained on WORDS."""
    import sentencepiece as spm
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder = tmp_path_factory.mktemp("tiny-t5")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "spiece"), vocab_size=60,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2, num_threads=1)
    tokenizer = T5Tokenizer.from_pretrained(str(folder), extra_ids=0)
    tokenizer.save_pretrained(str(folder))
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                      relative_attention_num_buckets=8, decoder_start_token_id=0)
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A random 2-layer BERT (width 24) with a word-level WordPiece vocabulary of WORDS."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(folder))
    return str(folder)


def run(conditioner, texts=TEXTS):
    with torch.no_grad():
        return conditioner(conditioner.tokenize(texts))


class TestHFEncoderConditioner:

    def test_same_outputs_as_t5_conditioner(self, tiny_t5, monkeypatch):
        # T5Conditioner only takes whitelisted names with a hand-kept width: admit the tiny one.
        monkeypatch.setattr(T5Conditioner, "MODELS", [tiny_t5])
        monkeypatch.setitem(T5Conditioner.MODELS_DIMS, tiny_t5, 32)
        t5 = T5Conditioner(tiny_t5, output_dim=16, finetune=False, device="cpu")
        hf = HFEncoderConditioner(tiny_t5, output_dim=16, device="cpu")
        hf.load_state_dict(t5.state_dict())
        embeds, mask = run(hf)
        expected_embeds, expected_mask = run(t5)
        assert embeds.shape == (4, expected_mask.shape[1], 16)
        assert torch.equal(mask, expected_mask)
        assert torch.equal(embeds, expected_embeds)
        assert not mask[1].any() and not mask[2].any()  # empty and missing texts: the CFG null condition
        assert not embeds[1].any() and not embeds[2].any()

    def test_any_encoder_width_from_its_config(self, tiny_bert):
        hf = HFEncoderConditioner(tiny_bert, output_dim=16, device="cpu")
        assert hf.dim == 24 and hf.output_proj.in_features == 24
        embeds, mask = run(hf)
        assert embeds.shape == (4, mask.shape[1], 16)
        assert torch.equal(embeds[mask == 0], torch.zeros_like(embeds[mask == 0]))
        pooled, pooled_mask = run(HFEncoderConditioner(tiny_bert, output_dim=16, device="cpu", pooling="mean"))
        assert pooled.shape == (4, 1, 16) and pooled_mask.tolist() == [[1], [0], [0], [1]]

    def test_frozen_encoder_stays_out_of_checkpoints(self, tiny_bert):
        frozen = HFEncoderConditioner(tiny_bert, output_dim=16, device="cpu")
        assert set(frozen.state_dict()) == {"output_proj.weight", "output_proj.bias"}
        tuned = HFEncoderConditioner(tiny_bert, output_dim=16, device="cpu", finetune=True)
        assert len(tuned.state_dict()) > 2

    @pytest.mark.parametrize("encoder", ["tiny_t5", "tiny_bert"])
    def test_builder_builds_model_hf_from_the_config(self, encoder, request):
        cfg = OmegaConf.load(CONFIG)
        cfg.conditioners.description.hf.name = request.getfixturevalue(encoder)
        cfg.device = "cpu"
        cfg.dataset.segment_duration = 10.0
        provider = builders.get_conditioner_provider(16, cfg)
        assert isinstance(provider.conditioners["description"], HFEncoderConditioner)
        attributes = [ConditioningAttributes(text={"description": text}) for text in TEXTS]
        with torch.no_grad():
            embeds, mask = provider(provider.tokenize(attributes))["description"]
        assert embeds.shape[0] == 4 and embeds.shape[-1] == 16
        assert mask.sum(1).tolist()[1:3] == [0, 0]
