"""Image (CLIP, SigLIP) and reference-audio (CLAP) conditioners on tiny random models built offline.

Shapes, masks and CFG nulls; equality with the joint models' own `get_image_features` /
`get_audio_features`; every input form (path, PIL, tensors, any sample rate) and every bad input's
message. Generation, checkpoints, zero-shot use and the CLI are in `test_multimodal_generate.py`.
"""
import numpy as np
import pytest
import torch
from tiny_multimodal import CLAP_RATE, draw, make_clap, tone, tower_folders

from audiocraft_patched.data.audio_utils import convert_audio
from audiocraft_patched.modules.conditioners import (AttributeDropout, ClassifierFreeGuidanceDropout,
                                                     ConditioningAttributes, ConditioningProvider, WavCondition)
from audiocraft_patched.modules.conditioners.audio_embed import (CLAPAudioConditioner, audio_condition,
                                                                 read_audio_prompt)
from audiocraft_patched.modules.conditioners.base import collate_wavs
from audiocraft_patched.modules.conditioners.vision import HFImageConditioner, load_image


@pytest.fixture(scope="session")
def towers(tmp_path_factory):
    return tower_folders(tmp_path_factory)


@pytest.mark.parametrize("tower, pooling, length", [("clip", "none", 17), ("clip", "mean", 1), ("clip", "pooled", 1),
                                                    ("clip", "projected", 1), ("siglip", "none", 16),
                                                    ("siglip", "pooled", 1), ("siglip", "projected", 1),
                                                    ("vit", "none", 17), ("vit", "pooled", 1)])
def test_image_shapes_masks_and_nulls(towers, tower, pooling, length):
    cond = HFImageConditioner(str(towers[tower]), output_dim=8, pooling=pooling)
    assert cond.dim == (12 if (tower, pooling) == ("clip", "projected") else 16)
    embeds, mask = cond(cond.tokenize([draw("sun"), None, draw("stripes")]))
    assert embeds.shape == (3, length, 8) and mask.tolist() == [[1] * length, [0] * length, [1] * length]
    assert embeds[1].abs().sum() == 0 and embeds[0].abs().sum() > 0
    assert not torch.allclose(embeds[0], embeds[2])  # the image matters
    # An all-null batch (two-step CFG's unconditional pass) has the same length, all zero.
    null, null_mask = cond(cond.tokenize([None, None]))
    assert null.shape == (2, length, 8) and null.abs().sum() == 0 and null_mask.sum() == 0
    fresh = HFImageConditioner(str(towers[tower]), output_dim=8, pooling=pooling)
    assert fresh(fresh.tokenize([None]))[0].shape == (1, length, 8)  # before any image was seen
    # Only the projection is saved; the frozen tower stays out of checkpoints.
    assert sorted(cond.state_dict()) == ["output_proj.bias", "output_proj.weight"]


def test_projected_equals_the_joint_models_image_features(towers):
    import transformers as T

    images = [draw("sun"), draw("stripes")]
    for tower, cls in (("clip", T.CLIPModel), ("siglip", T.SiglipModel)):
        full = cls.from_pretrained(towers[tower]).eval()
        pixels = T.AutoImageProcessor.from_pretrained(towers[tower])(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            expected = full.get_image_features(pixel_values=pixels).pooler_output
            cond = HFImageConditioner(str(towers[tower]), output_dim=8, pooling="projected")
            got = cond.features(cond.tokenize(images)["inputs"])[:, 0]
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
            normed = HFImageConditioner(str(towers[tower]), output_dim=8, pooling="projected", normalize=True)
            torch.testing.assert_close(normed.features(normed.tokenize(images)["inputs"])[:, 0],
                                       torch.nn.functional.normalize(expected, dim=-1), rtol=0, atol=1e-6)


def test_every_image_input_form_gives_the_same_features(towers, tmp_path):
    cond = HFImageConditioner(str(towers["clip"]), output_dim=8, pooling="pooled")
    image = draw("sun")
    image.save(tmp_path / "sun.png")
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)  # uint8 [3, H, W]
    forms = [image, str(tmp_path / "sun.png"), tmp_path / "sun.png", pixels, pixels[None], pixels.float() / 255,
             draw("sun", mode="RGBA")]
    with torch.no_grad():
        feats = cond.features(cond.tokenize(forms)["inputs"])
    for i in range(1, len(forms)):
        torch.testing.assert_close(feats[i], feats[0], rtol=0, atol=0, msg=f"form {i}")
    gray = draw("dark", mode="L")
    one_channel = torch.from_numpy(np.asarray(gray).copy())[None]  # [1, H, W]
    assert load_image(one_channel).tobytes() == gray.convert("RGB").tobytes()


def test_image_errors_say_what_is_wrong(towers, tmp_path):
    cond = HFImageConditioner(str(towers["clip"]), output_dim=8)
    (tmp_path / "notes.png").write_text("not an image")
    png = tmp_path / "cut.png"
    draw("sun", size=(64, 64)).save(png)
    png.write_bytes(png.read_bytes()[:60])  # truncated
    cases = [
        (str(tmp_path / "missing.png"), FileNotFoundError, "no such image file"),
        (str(tmp_path / "notes.png"), ValueError, "cannot read"),
        (str(png), ValueError, "cannot read"),
        (torch.zeros(4, 8, 8), ValueError, "image[:3]"),
        (torch.zeros(2, 8, 8), ValueError, "2 channels"),
        (torch.zeros(8, 8, 3), ValueError, "permute(2, 0, 1)"),
        (torch.zeros(8, 8), ValueError, "[C, H, W]"),
        (torch.full((3, 8, 8), 255.0), ValueError, "divide 0-255 values by 255"),
        (torch.zeros(3, 8, 8, dtype=torch.int32), ValueError, "uint8"),
        (np.zeros((8, 8, 3)), TypeError, "PIL image"),
    ]
    for image, error, message in cases:
        with pytest.raises(error, match=None) as info:
            cond.tokenize([None, image])
        assert message in str(info.value) and "image 1" in str(info.value), (message, str(info.value))


def test_image_conditioner_refuses_bad_settings(towers, tmp_path):
    import transformers as T

    with pytest.raises(ValueError, match="pooling must be one of"):
        HFImageConditioner(str(towers["clip"]), output_dim=8, pooling="cls")
    with pytest.raises(ValueError, match="choose a pooling other than 'none'"):
        HFImageConditioner(str(towers["clip"]), output_dim=8, normalize=True)
    with pytest.raises(ValueError, match="out of range"):
        HFImageConditioner(str(towers["clip"]), output_dim=8, layer=5)
    # A vision tower saved without its projection cannot give the joint embedding.
    T.CLIPVisionModel.from_pretrained(towers["clip"]).save_pretrained(tmp_path / "tower")
    with pytest.raises(ValueError, match="lacks .* weights of CLIPVisionModelWithProjection"):
        HFImageConditioner(str(tmp_path / "tower"), output_dim=8, pooling="projected")
    with pytest.raises(ValueError, match="'clap' joint model, whose vision tower"):
        HFImageConditioner(str(towers["clap"]), output_dim=8)
    with pytest.raises(ValueError, match="without a joint image-text space"):
        HFImageConditioner(str(towers["vit"]), output_dim=8, pooling="projected")
    with pytest.raises(OSError, match="preprocessor_config.json"):
        HFImageConditioner(str(tmp_path / "tower"), output_dim=8)  # no image processor saved there


def test_hidden_layer_choice(towers):
    last = HFImageConditioner(str(towers["clip"]), output_dim=8, layer=-1)
    first = HFImageConditioner(str(towers["clip"]), output_dim=8, layer=0)
    default = HFImageConditioner(str(towers["clip"]), output_dim=8)
    inputs = default.tokenize([draw("sun")])["inputs"]
    with torch.no_grad():
        assert torch.equal(last.features(inputs), default.features(inputs))
        assert not torch.allclose(first.features(inputs), default.features(inputs))


@pytest.mark.parametrize("pooling, length", [("projected", 1), ("pooled", 1), ("none", 64)])
def test_clap_shapes_masks_and_nulls(towers, pooling, length):
    cond = CLAPAudioConditioner(str(towers["clap"]), output_dim=8, pooling=pooling)
    assert cond.normalize == (pooling == "projected")
    batch = collate_wavs([audio_condition(tone(440, 0.5, 44100, channels=2), 44100), None,
                          audio_condition(tone(220, 0.3, 8000), 8000)])
    assert batch.wav.shape == (3, 1, 22050) and batch.length.tolist() == [22050, 0, 2400]
    embeds, mask = cond(cond.tokenize(batch))
    assert embeds.shape == (3, length, 8) and mask.sum(1).tolist() == [length, 0, length]
    assert embeds[1].abs().sum() == 0 and not torch.allclose(embeds[0], embeds[2])
    null, _ = cond(cond.tokenize(collate_wavs([None])))
    assert null.shape == (1, length, 8) and null.abs().sum() == 0


def test_clap_projected_equals_get_audio_features_at_any_rate(towers):
    import transformers as T

    cond = CLAPAudioConditioner(str(towers["clap"]), output_dim=8)
    clip44 = tone(440, 0.6, 44100, channels=2)
    resampled = convert_audio(clip44, 44100, CLAP_RATE, 1)  # the sinc resampler, mono
    with torch.no_grad():
        feats = cond.features(cond.tokenize(collate_wavs([audio_condition(clip44, 44100),
                                                          audio_condition(resampled, CLAP_RATE)]))["inputs"])
        torch.testing.assert_close(feats[0], feats[1], rtol=0, atol=0)  # resampled here == resampled beforehand
        full = T.ClapModel.from_pretrained(towers["clap"]).eval()
        extractor = T.AutoFeatureExtractor.from_pretrained(towers["clap"])
        inputs = extractor(resampled[0].numpy(), sampling_rate=CLAP_RATE, return_tensors="pt")
        expected = full.get_audio_features(**inputs).pooler_output  # L2-normalized by CLAP
    torch.testing.assert_close(feats[0, 0], expected[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("fusion", [False, True])
def test_clap_long_clips_are_deterministic_and_batch_independent(towers, tmp_path, fusion):
    folder = towers["clap"] if not fusion else make_clap(tmp_path / "fused", fusion=True)
    cond = CLAPAudioConditioner(str(folder), output_dim=8)
    long_clip = audio_condition(torch.randn(1, 3 * CLAP_RATE, generator=torch.Generator().manual_seed(0)) * 0.1,
                                CLAP_RATE)  # 3 s: the extractor crops (or fuses) its 1 s window
    short = audio_condition(tone(330, 0.4, CLAP_RATE), CLAP_RATE)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    with torch.no_grad():
        alone = cond(cond.tokenize(collate_wavs([long_clip])))[0]
        again = cond(cond.tokenize(collate_wavs([long_clip])))[0]
        batched = cond(cond.tokenize(collate_wavs([short, long_clip, None])))[0]
    assert torch.equal(alone, again)
    torch.testing.assert_close(batched[1], alone[0], rtol=0, atol=1e-6)
    assert np.array_equal(np.random.get_state()[1], state)  # the caller's numpy RNG is left alone


def test_audio_errors_say_what_is_wrong(towers, tmp_path):
    cases = [
        (lambda: audio_condition(torch.zeros(1, 0), 16000), ValueError, "is empty"),
        (lambda: audio_condition(torch.zeros(0), 16000), ValueError, "is empty"),
        (lambda: audio_condition(torch.zeros(2, 0), 16000), ValueError, "None for no reference audio"),
        (lambda: audio_condition(torch.zeros(1, 10, dtype=torch.int16), 16000), ValueError, "f32_pcm"),
        (lambda: audio_condition(torch.full((1, 10), float("nan")), 16000), ValueError, "NaN"),
        (lambda: audio_condition(torch.zeros(1, 1, 10), 16000), ValueError, "[C, T]"),
        (lambda: audio_condition(torch.zeros(1, 10), 0), ValueError, "positive integer"),
        (lambda: read_audio_prompt(torch.zeros(1, 10)), ValueError, "audio_prompt_sample_rate"),
        (lambda: read_audio_prompt(str(tmp_path / "missing.wav")), FileNotFoundError, "no such audio file"),
        (lambda: read_audio_prompt(3), TypeError, "WAV file path"),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as info:
            call()
        assert message in str(info.value), (message, str(info.value))
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(ValueError, match="not a WAV file"):
        read_audio_prompt(str(tmp_path / "text.wav"))
    with pytest.raises(ValueError, match="'clip' model, not CLAP"):
        CLAPAudioConditioner(str(towers["clip"]), output_dim=8)
    with pytest.raises(ValueError, match="pooling must be one of"):
        CLAPAudioConditioner(str(towers["clap"]), output_dim=8, pooling="mean")
    cond = CLAPAudioConditioner(str(towers["clap"]), output_dim=8)
    with pytest.raises(ValueError, match="too short"):  # 1 sample at 48 kHz is nothing at 16 kHz
        cond.tokenize(collate_wavs([audio_condition(torch.ones(1, 1), 48000)]))
    with pytest.raises(ValueError, match=r"one waveform \[1, C, T\]"):
        collate_wavs([WavCondition(torch.zeros(2, 1, 5), torch.tensor([5, 5]), [16000] * 2)])


def test_dropouts_null_images_and_wavs_and_the_provider_mixes_absent_inputs(towers):
    wav = audio_condition(tone(440, 0.3, CLAP_RATE), CLAP_RATE)
    samples = [ConditioningAttributes(image={"image": draw("sun")}, wav={"audio": wav}),
               ConditioningAttributes(),  # nothing: every attribute is null
               ConditioningAttributes(image={"image": None}, wav={"audio": wav})]
    nulls = ClassifierFreeGuidanceDropout(p=1.0)(samples)
    assert nulls[0].image == {"image": None} and int(nulls[0].wav["audio"].length.sum()) == 0
    assert samples[0].image["image"] is not None  # the originals are untouched
    dropped = AttributeDropout({"image": {"image": 1.0}})(samples)
    assert dropped[0].image["image"] is None and int(dropped[0].wav["audio"].length.sum()) > 0
    assert ConditioningAttributes.from_flat_dict(samples[0].to_flat_dict()).image == samples[0].image

    provider = ConditioningProvider({"image": HFImageConditioner(str(towers["clip"]), output_dim=8, pooling="pooled"),
                                     "audio": CLAPAudioConditioner(str(towers["clap"]), output_dim=8)})
    assert provider.image_conditions == ["image"] and provider.wav_conditions == ["audio"]
    out = provider(provider.tokenize(samples + nulls))
    assert out["image"][1].reshape(-1).tolist() == [1, 0, 0, 0, 0, 0]
    assert out["audio"][1].reshape(-1).tolist() == [1, 0, 1, 0, 0, 0]
    with pytest.raises(KeyError, match=r"unknown image attributes \['photo'\]"):
        provider.tokenize([ConditioningAttributes(image={"photo": draw("sun")})])
