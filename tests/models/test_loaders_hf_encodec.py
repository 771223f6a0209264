"""`compression_state_dict.bin` = `{'pretrained': NAME}` (issue 11, item 5), against upstream's wrapper.

A tiny random `transformers.EncodecConfig` model is saved to the session's (fake, offline) HF
cache as a hub id, and to a folder; both sides wrap the same weights.
"""
import sys
from pathlib import Path

import pytest
import torch

from audiocraft_patched.models import loaders
from audiocraft_patched.models.hf_encodec import HFEncodecCompressionModel
from audiocraft_patched.models.loaders import CheckpointError

sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import put_in_hf_cache  # noqa: E402

REPO = "tiny-org/encodec_8khz"


def save_tiny_encodec(folder: Path) -> Path:
    from transformers import EncodecConfig, EncodecModel

    config = EncodecConfig(target_bandwidths=[1.5, 3.0], sampling_rate=8000, audio_channels=1, num_filters=4,
                           upsampling_ratios=[4, 4, 2], codebook_size=64, codebook_dim=16, hidden_size=16,
                           num_lstm_layers=1, num_residual_layers=1, normalize=False)
    torch.manual_seed(0)
    EncodecModel(config).eval().save_pretrained(folder)
    return folder


def pretrained_checkpoint(folder: Path, name: str) -> Path:
    folder.mkdir(exist_ok=True)
    torch.save({"pretrained": name, "exported": True, "version": "1.3.0"}, folder / "compression_state_dict.bin")
    return folder


@pytest.mark.upstream
@pytest.mark.parametrize("where", ["hub id in the local cache", "folder"])
def test_pretrained_codec_loads_as_upstream(where, tmp_path):
    from audiocraft.models.encodec import HFEncodecCompressionModel as Upstream
    from transformers import EncodecModel

    snapshot = put_in_hf_cache(REPO, save_tiny_encodec)
    name = REPO if where.startswith("hub") else str(save_tiny_encodec(tmp_path / "codec"))
    ours = loaders.load_compression_model(pretrained_checkpoint(tmp_path / "ckpt", name))
    assert isinstance(ours, HFEncodecCompressionModel)
    up = Upstream(EncodecModel.from_pretrained(snapshot).eval()).eval()
    assert (ours.sample_rate, ours.channels, ours.frame_rate, ours.cardinality) == \
        (up.sample_rate, up.channels, up.frame_rate, up.cardinality) == (8000, 1, 250.0, 64)
    assert (ours.num_codebooks, ours.total_codebooks, ours.possible_num_codebooks) == \
        (up.num_codebooks, up.total_codebooks, up.possible_num_codebooks) == (2, 2, [1, 2])
    wav = torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(1))
    for n in (2, 1):  # each target bandwidth
        ours.set_num_codebooks(n)
        up.set_num_codebooks(n)
        with torch.no_grad():
            codes, scale = ours.encode(wav)
            up_codes, up_scale = up.encode(wav)
            assert codes.shape == (2, n, 125) and torch.equal(codes, up_codes) and scale is up_scale is None
            torch.testing.assert_close(ours.decode(codes, scale), up.decode(up_codes, up_scale), atol=1e-5, rtol=0)
            torch.testing.assert_close(ours.decode_latent(codes), up.decode_latent(up_codes), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"\[1, 2\] codebooks"):
        ours.set_num_codebooks(3)
    with pytest.raises(NotImplementedError):
        ours(wav)


def test_pretrained_codec_not_in_the_cache_says_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="local Hugging Face cache .*huggingface-cli download"):
        loaders.load_compression_model(pretrained_checkpoint(tmp_path, "facebook/encodec_nowhere"))


def test_pretrained_codec_path_outside_the_folder_must_be_a_model_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a model folder"):
        loaders.load_compression_model(pretrained_checkpoint(tmp_path / "a", str(tmp_path)))
    with pytest.raises(CheckpointError, match="leaves the checkpoint folder"):
        loaders.load_compression_model(pretrained_checkpoint(tmp_path / "b", "./../a"))
    with pytest.raises(CheckpointError, match="only EnCodec"):
        loaders.load_compression_model(pretrained_checkpoint(tmp_path / "c", "dac_44khz"))
