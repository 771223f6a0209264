"""MusicGen with image and reference-audio conditioners: generation, checkpoints, zero-shot use, the CLI.

Tiny random models built offline (see `tiny_multimodal.py`): a MusicGen whose LM reads a T5
description and a CLIP image by cross-attention and a CLAP clip by prepending; an image-only one
on SigLIP; and zero-shot ones made from a CLIP / CLAP text conditioner.
"""
import pytest
import torch
from omegaconf import OmegaConf
from tiny_multimodal import CLAP_RATE, T5_DESCRIPTION, draw, make_multimodal_musicgen, tone, tower_folders

from audiocraft_patched.align.export import export_musicgen
from audiocraft_patched.cli import main
from audiocraft_patched.data.audio import audio_read, audio_write
from audiocraft_patched.models import MusicGen
from audiocraft_patched.modules.conditioners import ConditioningAttributes, HFEncoderConditioner
from audiocraft_patched.modules.conditioners.audio_embed import CLAPAudioConditioner, audio_condition
from audiocraft_patched.modules.conditioners.cross_modal import add_cross_modal_conditioner
from audiocraft_patched.modules.conditioners.vision import HFImageConditioner
from audiocraft_patched.utils.tiny import captions


@pytest.fixture(scope="session")
def towers(tmp_path_factory):
    return tower_folders(tmp_path_factory)


@pytest.fixture(scope="module")
def built(towers, tiny_t5_dir, tmp_path_factory):
    conditioners = {"description": T5_DESCRIPTION,
                    "image": {"model": "hf_image", "hf_image": {"name": str(towers["clip"]), "pooling": "none"}},
                    "audio": {"model": "clap_audio", "clap_audio": {"name": str(towers["clap"])}}}
    return make_multimodal_musicgen(tmp_path_factory.mktemp("mm"), conditioners,
                                    {"cross": ["description", "image"], "prepend": ["audio"]})


@pytest.fixture(scope="module")
def model(built):
    m = MusicGen.get_pretrained(str(built[0]), device="cpu")
    m.set_generation_params(duration=0.2, top_k=10)
    return m


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    draw("sun").save(root / "sun.png")
    draw("stripes").save(root / "stripes.jpg")
    (root / "notes.png").write_text("not an image")
    audio_write(root / "clip", tone(440, 0.5, 22050, channels=2), 22050, strategy="clip")
    return root


def tokens_of(model, seed=0, **kwargs):
    torch.manual_seed(seed)
    return model.generate(return_tokens=True, **kwargs)[1]


def test_checkpoint_records_the_conditioners_and_round_trips(built, model, towers):
    folder, lm = built
    pkg = torch.load(folder / "state_dict.bin", weights_only=True)
    cfg = OmegaConf.to_container(OmegaConf.create(pkg["xp.cfg"]))
    assert cfg["conditioners"]["image"] == {"model": "hf_image",
                                            "hf_image": {"name": str(towers["clip"]), "pooling": "none"}}
    assert cfg["fuser"]["cross"] == ["description", "image"] and cfg["fuser"]["prepend"] == ["audio"]
    keys = [k for k in pkg["best_state"] if ".conditioners.image." in k or ".conditioners.audio." in k]
    assert sorted(keys) == sorted(f"condition_provider.conditioners.{a}.output_proj.{p}"
                                  for a in ("image", "audio") for p in ("weight", "bias"))  # no tower weights
    loaded = model.lm
    assert isinstance(loaded.condition_provider.conditioners["image"], HFImageConditioner)
    assert loaded.condition_provider.conditioners["audio"].projection_origin == "checkpoint"
    conditions = [ConditioningAttributes(text={"description": "calm piano"}, image={"image": draw("sun")},
                                         wav={"audio": audio_condition(tone(440, 0.3, 44100), 44100)}),
                  ConditioningAttributes(image={"image": draw("stripes")})]
    codes = torch.randint(0, 64, (2, 4, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = lm.compute_predictions(codes, conditions).logits
        after = loaded.compute_predictions(codes, conditions).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0, equal_nan=True)


def test_generate_from_an_image_text_and_image_and_a_reference_clip(model, files):
    sun = draw("sun")
    image_only = tokens_of(model, images=[str(files / "sun.png")])
    assert image_only.shape == (1, 4, 5)
    # Every way of saying the same thing gives the same tokens.
    assert torch.equal(tokens_of(model, images=[sun]), image_only)
    assert torch.equal(tokens_of(model, images=sun), image_only)
    assert torch.equal(tokens_of(model, conditions=[{"image": sun}]), image_only)
    assert torch.equal(tokens_of(model, conditions=[ConditioningAttributes(image={"image": sun})]), image_only)
    both = tokens_of(model, descriptions=["calm piano"], images=[sun])
    assert torch.equal(tokens_of(model, conditions=[{"description": "calm piano", "image": sun}]), both)
    wav, read_rate = audio_read(files / "clip.wav")
    from_file = tokens_of(model, audio_prompts=[str(files / "clip.wav")])
    assert torch.equal(tokens_of(model, audio_prompts=[(wav, read_rate)]), from_file)
    assert torch.equal(tokens_of(model, audio_prompts=wav[None], audio_prompt_sample_rate=read_rate), from_file)
    # Upstream's positional call is unchanged; mixed batches (absent = None) are fine.
    audio, tokens = model.generate(["rock", None], False, True)
    assert audio.shape == (2, 1, 5 * 640) and tokens.shape == (2, 4, 5)
    mixed = tokens_of(model, descriptions=["rock", None, "jazz"], images=[sun, str(files / "stripes.jpg"), None],
                      audio_prompts=[None, (wav, read_rate), None])
    assert mixed.shape == (3, 4, 5)
    model.set_generation_params(duration=0.2, top_k=10, two_step_cfg=True)  # the null batch on its own
    try:
        assert tokens_of(model, images=[sun]).shape == (1, 4, 5)
    finally:
        model.set_generation_params(duration=0.2, top_k=10)


def test_each_condition_changes_what_the_lm_predicts(model, files):
    lm = model.lm
    codes = torch.randint(0, 64, (1, 4, 6), generator=torch.Generator().manual_seed(1))
    clip = (tone(440, 0.4, 44100), 44100)

    def logits(**attrs):
        sample = ConditioningAttributes(**attrs)
        with torch.no_grad():
            out = lm.compute_predictions(codes, [sample])
        valid = out.logits[out.mask]  # [N, card]: the positions with a prediction (the others are NaN)
        assert valid.numel() and torch.isfinite(valid).all()
        return valid

    null = logits()
    sun, stripes = logits(image={"image": draw("sun")}), logits(image={"image": draw("stripes")})
    assert not torch.allclose(sun, null) and not torch.allclose(sun, stripes)
    assert not torch.allclose(logits(wav={"audio": audio_condition(*clip)}), null)
    assert torch.equal(logits(image={"image": None}), null)  # None is the null condition


def test_generate_errors_say_what_is_wrong(model, tiny_musicgen_dir, files):
    text_only = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    text_only.set_generation_params(duration=0.2)
    cases = [
        (lambda: text_only.generate(["x"], images=[draw("sun")]), ValueError, "needs a model with one image "
                                                                              "conditioner; this one has no"),
        (lambda: text_only.generate(audio_prompts=[str(files / "clip.wav")]), ValueError, "one audio conditioner"),
        (lambda: model.generate(), ValueError, "nothing to condition on"),
        (lambda: model.generate(["a", "b"], images=[draw("sun")]), ValueError, "one entry per sample"),
        (lambda: model.generate(["a"], conditions=[{"image": draw("sun")}]), ValueError, "not both"),
        (lambda: model.generate(conditions=[{"photo": draw("sun")}]), KeyError, "no conditioner for"),
        (lambda: model.generate(audio_prompts=[torch.zeros(1, 0)], audio_prompt_sample_rate=16000), ValueError,
         "audio prompt 0 is empty"),
        (lambda: model.generate(audio_prompts=[torch.zeros(1, 100)]), ValueError, "audio_prompt_sample_rate"),
        (lambda: model.generate(images=[str(files / "notes.png")]), ValueError, "cannot read"),
        (lambda: model.generate(images=[torch.zeros(4, 8, 8)]), ValueError, "3 (RGB) or 1 (grayscale) channels"),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as info:
            call()
        assert message in str(info.value), (message, str(info.value))


def test_image_only_model_on_siglip_with_prepend(towers, tmp_path):
    conditioners = {"image": {"model": "clip_image", "clip_image": {"name": str(towers["siglip"]),
                                                                    "pooling": "pooled", "normalize": True}}}
    folder, _ = make_multimodal_musicgen(tmp_path, conditioners, {"prepend": ["image"]})
    model = MusicGen.get_pretrained(str(folder), device="cpu")
    model.set_generation_params(duration=0.2, top_k=10)
    assert model.lm.condition_provider.conditioners["image"].normalize is True
    assert tokens_of(model, images=[draw("sun"), None]).shape == (2, 4, 5)
    assert model.generate_unconditional(2).shape == (2, 1, 5 * 640)
    with pytest.raises(KeyError, match=r"unknown text attributes \['description'\]"):
        model.generate(["a text for a model without a text conditioner"])


def test_zero_shot_image_through_a_clip_text_conditioner_aligned_by_align(towers, tiny_musicgen_dir, tmp_path, files):
    import transformers as T

    from audiocraft_patched.align.train import TrainConfig, train

    (tmp_path / "captions.txt").write_text("\n".join(captions(40)))
    train(TrainConfig(mode="align", model=str(tiny_musicgen_dir), out=str(tmp_path / "aligned"),
                      student=str(towers["clip"]), pooling="projected", adapter={"kind": "mlp", "hidden": 16},
                      captions=str(tmp_path / "captions.txt"), steps=3, batch_size=8, holdout=8, code_steps=8,
                      progress=False))
    model = MusicGen.get_pretrained(str(tmp_path / "aligned"), device="cpu")
    model.set_generation_params(duration=0.2, top_k=10)
    assert add_cross_modal_conditioner(model.lm) == "image"
    text, image = (model.lm.condition_provider.conditioners[k] for k in ("description", "image"))
    assert model.lm.fuser.cond2fuse["image"] == "cross" and image.projection_origin == "zero-shot"
    # The image goes through exactly the text side's adapter + projection, from CLIP's joint space.
    images = [draw("sun"), draw("stripes")]
    full = T.CLIPModel.from_pretrained(towers["clip"]).eval()
    pixels = T.AutoImageProcessor.from_pretrained(towers["clip"])(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        joint = full.get_image_features(pixel_values=pixels).pooler_output[:, None]  # [2, 1, 12]
        expected, _ = text.project(joint, torch.ones(2, 1, dtype=torch.long))
        got, mask = image(image.tokenize(images))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert mask.tolist() == [[1], [1]]
    before = tokens_of(model, images=[str(files / "sun.png")])
    # Saved like any checkpoint, reloaded in one call, same tokens.
    export_musicgen(model.lm, model.lm.cfg, tmp_path / "aligned", tmp_path / "zero-shot")
    reloaded = MusicGen.get_pretrained(str(tmp_path / "zero-shot"), device="cpu")
    reloaded.set_generation_params(duration=0.2, top_k=10)
    entry = reloaded.lm.cfg["conditioners"]["image"]
    assert entry["model"] == "hf_image" and entry["hf_image"]["pooling"] == "projected"
    assert entry["hf_image"]["adapter"] == {"kind": "mlp", "hidden": 16}
    assert reloaded.lm.cfg["fuser"]["cross"] == ["description", "image"]
    assert torch.equal(tokens_of(reloaded, images=[str(files / "sun.png")]), before)
    with pytest.raises(ValueError, match="already has a conditioner for 'image'"):
        add_cross_modal_conditioner(reloaded.lm)


def test_zero_shot_audio_through_a_clap_text_conditioner(towers, tmp_path):
    import transformers as T

    conditioners = {"description": {"model": "hf", "hf": {"name": str(towers["clap"]), "pooling": "projected"}}}
    folder, _ = make_multimodal_musicgen(tmp_path, conditioners, {"cross": ["description"]})
    model = MusicGen.get_pretrained(str(folder), device="cpu")
    model.set_generation_params(duration=0.2, top_k=10)
    assert add_cross_modal_conditioner(model.lm) == "audio"
    text, audio = (model.lm.condition_provider.conditioners[k] for k in ("description", "audio"))
    assert isinstance(audio, CLAPAudioConditioner) and audio.normalize and text.normalize
    clip = tone(440, 0.5, CLAP_RATE)
    full = T.ClapModel.from_pretrained(towers["clap"]).eval()
    extractor = T.AutoFeatureExtractor.from_pretrained(towers["clap"])
    features = extractor(clip[0].numpy(), sampling_rate=CLAP_RATE, return_tensors="pt")
    with torch.no_grad():
        joint = full.get_audio_features(**features).pooler_output[:, None]  # normalized, [1, 1, 12]
        expected = text.output_proj(joint)  # what the `hf` text conditioner does with a joint embedding
        provider = model.lm.condition_provider
        sample = ConditioningAttributes(wav={"audio": audio_condition(clip, CLAP_RATE)})
        got, _ = provider(provider.tokenize([sample]))["audio"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert tokens_of(model, audio_prompts=[(clip, CLAP_RATE)]).shape == (1, 4, 5)
    token_states = HFEncoderConditioner(str(towers["clap"]), output_dim=32, pooling="mean")
    with pytest.raises(ValueError, match="pooling='projected' on a CLIP/CLAP text tower"):
        CLAPAudioConditioner.from_text_conditioner(token_states)  # not in the joint space


def test_zero_shot_needs_a_joint_model(tiny_musicgen_dir):
    lm = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu").lm
    with pytest.raises(ValueError, match="not a CLIP or CLAP text tower"):
        add_cross_modal_conditioner(lm)


def test_cli_generates_from_an_image_or_a_reference_clip(built, tiny_musicgen_dir, files, tmp_path, capsys):
    folder = str(built[0])
    common = ["--duration", "0.2", "-q"]
    assert main(["generate", folder, "--image", str(files / "sun.png"), "-o", str(tmp_path / "a.wav")] + common) == 0
    assert (tmp_path / "a.wav").is_file()
    assert main(["generate", folder, "calm piano", "--image", str(files / "sun.png"), "--image",
                 str(files / "stripes.jpg"), "-o", str(tmp_path / "b.wav")] + common) == 0
    assert (tmp_path / "b_0.wav").is_file() and (tmp_path / "b_1.wav").is_file()
    assert main(["generate", folder, "--audio-prompt", str(files / "clip.wav"), "-o", str(tmp_path / "c.wav")]
                + common) == 0
    assert (tmp_path / "c.wav").is_file()
    capsys.readouterr()
    assert main(["generate", folder, "--image", str(files / "notes.png"), "-o", str(tmp_path / "d.wav")] + common) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["generate", str(tiny_musicgen_dir), "x", "--image", str(files / "sun.png"), "-o",
                 str(tmp_path / "e.wav")] + common) == 2
    assert "image conditioner" in capsys.readouterr().err
    assert main(["generate", folder, "a", "b", "c", "--image", str(files / "sun.png"), "--image",
                 str(files / "sun.png"), "-o", str(tmp_path / "f.wav")] + common) == 2
    assert "2 --image for 3 samples" in capsys.readouterr().err
    assert main(["inspect", folder]) == 0
    out = capsys.readouterr().out
    assert "conditioner 'image': HFImageConditioner" in out and "conditioner 'audio': CLAPAudioConditioner" in out
