"""Every encoder family on a tiny random model built offline: tokenize -> forward -> MusicGen generate.

Each builder writes a model folder as `save_pretrained` would (config + weights + tokenizer),
with a tokenizer trained in milliseconds on template captions, so nothing is downloaded.
"""
import json
import warnings

import pytest
import torch

from audiocraft_patched.models import MusicGen
from audiocraft_patched.modules.conditioners import HFEncoderConditioner
from audiocraft_patched.swap import set_text_encoder
from audiocraft_patched.utils.tiny import captions

TEXTS = ["calm piano with soft drums", None, "", "日本の音楽 ♪ café, très doux"]
WIDTH = 16  # hidden width of every tiny encoder
SMALL = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)


def _bpe(specials: list[str], metaspace: bool = False, suffix: str | None = None):
    """Train a byte-level (or metaspace) BPE on captions: (vocab dict, merges list)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    model = models.BPE(end_of_word_suffix=suffix) if suffix else models.BPE()
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Metaspace() if metaspace else pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = [] if metaspace else pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=350, initial_alphabet=alphabet, special_tokens=specials,
                                  show_progress=False, **({"end_of_word_suffix": suffix} if suffix else {}))
    tok.train_from_iterator(captions(200) + ["日本の音楽 ♪ café très doux"], trainer)
    data = json.loads(tok.to_str())["model"]
    return data["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in data["merges"]]


def _unigram(specials: list[str]) -> list[tuple[str, float]]:
    """Train a unigram vocabulary on captions, specials first: [(piece, score)]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(captions(200), trainers.UnigramTrainer(vocab_size=200, special_tokens=specials,
                                                                   show_progress=False))
    return [tuple(p) for p in json.loads(tok.to_str())["model"]["vocab"]]


def _save(folder, tokenizer, model):
    tokenizer.save_pretrained(folder)
    model.eval().save_pretrained(folder)
    return folder


def _t5_like(folder, config_cls, model_cls, **config):
    import transformers as T

    tokenizer = T.T5Tokenizer(vocab=_unigram(["<pad>", "</s>", "<unk>"]), extra_ids=0)
    cfg = getattr(T, config_cls)(vocab_size=len(tokenizer), d_model=WIDTH, d_kv=8, d_ff=32, num_layers=2,
                                 num_decoder_layers=1, num_heads=2, relative_attention_num_buckets=8, pad_token_id=0,
                                 eos_token_id=1, decoder_start_token_id=0, **config)
    return _save(folder, tokenizer, getattr(T, model_cls)(cfg))


def make_bert(folder, cls="BertModel"):
    import transformers as T

    words = sorted({w for c in captions(200) for w in c.replace(",", " ,").split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + list("abcdefghijklmnopqrstuvwxyz0123456789,.-")
    tokenizer = T.BertTokenizer(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))})
    cfg = T.BertConfig(vocab_size=len(tokenizer), hidden_size=WIDTH, max_position_embeddings=64, **SMALL)
    return _save(folder, tokenizer, getattr(T, cls)(cfg))


def _roberta_tokenizer():
    import transformers as T

    vocab, merges = _bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return T.RobertaTokenizer(vocab=vocab, merges=merges)


def make_roberta(folder):
    import transformers as T

    tokenizer = _roberta_tokenizer()
    cfg = T.RobertaConfig(vocab_size=len(tokenizer), hidden_size=WIDTH, max_position_embeddings=66, pad_token_id=1,
                          **SMALL)
    return _save(folder, tokenizer, T.RobertaModel(cfg))


def make_xlm_roberta(folder):
    import transformers as T

    tokenizer = T.XLMRobertaTokenizer(vocab=_unigram(["<s>", "<pad>", "</s>", "<unk>"]) + [("<mask>", 0.0)])
    cfg = T.XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=WIDTH, max_position_embeddings=66,
                             pad_token_id=1, **SMALL)
    return _save(folder, tokenizer, T.XLMRobertaModel(cfg))


def make_deberta_v2(folder):
    import transformers as T

    tokenizer = T.DebertaV2Tokenizer(vocab=_unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]))
    # deberta-v3's layout: relative positions only (no length limit)
    cfg = T.DebertaV2Config(vocab_size=len(tokenizer), hidden_size=WIDTH, relative_attention=True,
                            position_biased_input=False, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
                            position_buckets=16, **SMALL)
    return _save(folder, tokenizer, T.DebertaV2Model(cfg))


def make_sentence_transformers(folder, pooling="mean"):
    make_bert(folder)
    (folder / "1_Pooling").mkdir()
    modes = {f"pooling_mode_{m}": pooling == m.split("_")[0] for m in ("cls_token", "mean_tokens", "max_tokens")}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": WIDTH, **modes}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24, "do_lower_case": True}))
    return folder


def make_clip(folder):
    import transformers as T

    vocab, merges = _bpe(["<|startoftext|>", "<|endoftext|>"], suffix="</w>")
    tokenizer = T.CLIPTokenizer(vocab=vocab, merges=merges)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    cfg = T.CLIPConfig(text_config=dict(vocab_size=len(tokenizer), hidden_size=WIDTH, max_position_embeddings=64,
                                        **SMALL, **ids),
                       vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, image_size=32, patch_size=16), projection_dim=8)
    return _save(folder, tokenizer, T.CLIPModel(cfg))


def make_clap(folder):
    import transformers as T

    tokenizer = _roberta_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=WIDTH, max_position_embeddings=66, pad_token_id=1,
                projection_dim=8, **SMALL)
    audio = dict(hidden_size=16, depths=[1, 1], num_attention_heads=[1, 1], patch_embeds_hidden_size=16,
                 window_size=2, spec_size=16, num_mel_bins=8, patch_stride=4, projection_dim=8)
    return _save(folder, tokenizer, T.ClapModel(T.ClapConfig(text_config=text, audio_config=audio, projection_dim=8)))


def make_gpt2(folder):
    import transformers as T

    vocab, merges = _bpe(["<|endoftext|>"])
    tokenizer = T.GPT2Tokenizer(vocab=vocab, merges=merges)  # no padding token, as GPT-2
    model = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=len(tokenizer), n_embd=WIDTH, n_layer=2, n_head=2, n_positions=64,
                                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    return _save(folder, tokenizer, model)


def make_llama(folder):
    import transformers as T

    vocab, merges = _bpe(["<unk>", "<s>", "</s>"], metaspace=True)
    tokenizer = T.LlamaTokenizer(vocab=vocab, merges=merges)
    cfg = T.LlamaConfig(vocab_size=len(tokenizer), hidden_size=WIDTH, intermediate_size=32, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return _save(folder, tokenizer, T.LlamaForCausalLM(cfg))


def make_qwen2(folder):
    import transformers as T

    vocab, merges = _bpe(["<|endoftext|>"])
    tokenizer = T.Qwen2Tokenizer(vocab=vocab, merges=merges)
    cfg = T.Qwen2Config(vocab_size=len(tokenizer), hidden_size=WIDTH, intermediate_size=32, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    return _save(folder, tokenizer, T.Qwen2ForCausalLM(cfg))


# name -> (builder, family the conditioner must pick, pooling to try besides the default)
BUILDERS = {
    "t5": (lambda f: _t5_like(f, "T5Config", "T5EncoderModel"), "t5", "mean"),
    "flan-t5": (lambda f: _t5_like(f, "T5Config", "T5ForConditionalGeneration", feed_forward_proj="gated-gelu"),
                "t5", "max"),
    "mt5": (lambda f: _t5_like(f, "MT5Config", "MT5EncoderModel"), "t5", "mean"),
    "umt5": (lambda f: _t5_like(f, "UMT5Config", "UMT5EncoderModel"), "t5", "mean"),
    "bert": (make_bert, "encoder-only", "cls"),
    "roberta": (make_roberta, "encoder-only", "cls"),
    "xlm-roberta": (make_xlm_roberta, "encoder-only", "mean"),
    "deberta-v2": (make_deberta_v2, "encoder-only", "mean"),
    "sentence-transformers": (make_sentence_transformers, "sentence-transformers", "none"),
    "clip": (make_clip, "clip", "projected"),
    "clap": (make_clap, "clap", "projected"),
    "gpt2": (make_gpt2, "decoder-only", "last"),
    "llama": (make_llama, "decoder-only", "last"),
    "qwen2": (make_qwen2, "decoder-only", "last"),
}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[name] = BUILDERS[name][0](tmp_path_factory.mktemp(name))
        return str(cache[name])
    return get


@pytest.fixture(scope="module")
def musicgen(tiny_musicgen_dir):
    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    model.set_generation_params(duration=0.2, top_k=10)
    return model


def check_condition(embeds, mask, texts, pooled: bool):
    """Shapes, zero rows for None/'' and zeros at padding."""
    assert embeds.shape[0] == mask.shape[0] == len(texts) and embeds.shape[1] == mask.shape[1]
    if pooled:
        assert mask.shape[1] == 1
    assert torch.isfinite(embeds).all()
    for i, text in enumerate(texts):
        assert bool(mask[i].any()) == bool(text), f"row {i} ({text!r}): mask {mask[i].tolist()}"
    assert (embeds[mask == 0] == 0).all()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_family_tokenize_forward_generate(name, family_dirs, musicgen):
    folder = family_dirs(name)
    _, family, other_pooling = BUILDERS[name]
    cond = HFEncoderConditioner(folder, output_dim=32)
    assert cond.family.name == family
    embeds, mask = cond(cond.tokenize(TEXTS))
    check_condition(embeds, mask, TEXTS, pooled=cond.pooling != "none")
    assert embeds.shape[-1] == 32 and cond.dim == cond.output_proj.in_features
    # texts that differ give conditions that differ
    assert not torch.allclose(embeds[0], embeds[3][:embeds.shape[1]]) if cond.pooling != "none" else True
    other = HFEncoderConditioner(folder, output_dim=32, pooling=other_pooling)
    embeds, mask = other(other.tokenize(TEXTS))
    check_condition(embeds, mask, TEXTS, pooled=other_pooling != "none")
    # end to end: the family's conditioner in a MusicGen, generating from a batch with a None row
    swapped = set_text_encoder(musicgen, folder, pooling=other_pooling)
    assert swapped.family.name == family
    torch.manual_seed(0)
    wav, tokens = musicgen.generate(["calm piano with soft drums", None], return_tokens=True)
    assert tokens.shape == (2, musicgen.lm.num_codebooks, 5) and wav.shape[0] == 2 and torch.isfinite(wav).all()


def pooled_states(cond, texts):
    """What the conditioner feeds output_proj: ([B, 1, D] pooled states, [B, 1] mask)."""
    inputs = cond.tokenize(texts)
    with torch.no_grad():
        return cond.pool(*cond.encode(inputs))


@pytest.mark.parametrize("name, full_class, normalized", [("clip", "CLIPModel", False), ("clap", "ClapModel", True)])
def test_projected_equals_get_text_features(name, full_class, normalized, family_dirs):
    import transformers

    folder = family_dirs(name)
    cond = HFEncoderConditioner(folder, output_dim=32, pooling="projected")
    assert cond.dim == 8 and cond.normalize == normalized
    texts = ["calm piano with soft drums", "fast techno beat"]
    full = getattr(transformers, full_class).from_pretrained(folder).eval()
    with torch.no_grad():
        expected = full.get_text_features(**cond.tokenizer(texts, return_tensors="pt", padding=True)).pooler_output
    pooled, _ = pooled_states(cond, texts)
    torch.testing.assert_close(pooled[:, 0], expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="layer"):
        HFEncoderConditioner(folder, output_dim=32, pooling="projected", layer=1).encode(cond.tokenize(texts))


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2"])
def test_decoder_last_token_is_unaffected_by_padding(name, family_dirs):
    """Right padding + 'last' pooling: a short text in a batch pools exactly its own last token."""
    folder = family_dirs(name)
    cond = HFEncoderConditioner(folder, output_dim=32, pooling="last")
    assert cond.tokenizer.padding_side == "right" and cond.tokenizer.pad_token is not None
    assert "token_type_ids" not in cond.tokenize(["jazz"])  # GPT-2 would add an embedding for them
    short, long = "jazz", "slow ambient tune played on the violin and the cello, dreamy"
    batch, _ = pooled_states(cond, [short, long])
    alone, _ = pooled_states(cond, [short])
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=1e-5)
    inputs = cond.tokenizer([short], return_tensors="pt")
    with torch.no_grad():
        hidden = cond.encoder(**inputs, output_hidden_states=True).hidden_states
    layered = HFEncoderConditioner(folder, output_dim=32, layer=1)
    torch.testing.assert_close(layered.encode(layered.tokenize([short]))[0], hidden[1])
    # only empty texts: a tokenizer without BOS gives no token at all; one masked position stands in
    embeds, mask = cond(cond.tokenize([None, ""]))
    assert mask.tolist() == [[0], [0]] and (embeds == 0).all()
    embeds, mask = HFEncoderConditioner(folder, output_dim=32)(cond.tokenize([None, ""]))
    assert embeds.shape[1] >= 1 and not mask.any()


def test_sentence_transformers_folder_settings(family_dirs):
    """Pooling, normalization, lower-casing and max_seq_length come from the folder's own files."""
    import transformers

    folder = family_dirs("sentence-transformers")
    cond = HFEncoderConditioner(folder, output_dim=32)
    assert (cond.pooling, cond.normalize, cond.max_length) == ("mean", True, 24)
    pooled, _ = pooled_states(cond, ["Calm PIANO"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    bert = transformers.AutoModel.from_pretrained(folder).eval()
    inputs = tokenizer(["calm piano"], return_tensors="pt")
    assert "token_type_ids" in cond.tokenize(["calm piano"])  # BERT takes them: passed along
    with torch.no_grad():
        expected = torch.nn.functional.normalize(bert(**inputs).last_hidden_state.mean(1), dim=-1)
    torch.testing.assert_close(pooled[:, 0], expected)
    # the user's choice wins over the folder's
    assert HFEncoderConditioner(folder, output_dim=32, pooling="cls").normalize is False


def test_sentence_transformers_modules_we_do_not_run(family_dirs, tmp_path):
    import shutil

    folder = tmp_path / "st"
    shutil.copytree(family_dirs("sentence-transformers"), folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.warns(UserWarning, match="Dense.*does not run"):
        HFEncoderConditioner(str(folder), output_dim=32)
    (folder / "modules.json").write_text(json.dumps(modules[:3]))
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_weightedmean_tokens=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="weightedmean.*no equivalent here.*pass pooling"):
        HFEncoderConditioner(str(folder), output_dim=32)
    assert HFEncoderConditioner(str(folder), output_dim=32, pooling="mean").pooling == "mean"


def test_lm_head_only_folder_is_refused(family_dirs, tmp_path):
    """A folder with only a causal LM head has no encoder body: a clear error, not random weights."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "head-only"
    shutil.copytree(family_dirs("gpt2"), folder)
    weights = load_file(folder / "model.safetensors")
    head = {"lm_head.weight": weights.get("lm_head.weight", weights["transformer.wte.weight"]).clone()}
    save_file(head, folder / "model.safetensors")
    with pytest.raises(ValueError, match="no usable text encoder.*causal LM head"):
        HFEncoderConditioner(str(folder), output_dim=32)


def test_unknown_model_type_says_what_is_supported(tmp_path):
    import transformers

    transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'vit' model.*not a text encoder.*Known families: .*decoder-only"):
        HFEncoderConditioner(str(tmp_path), output_dim=32)
