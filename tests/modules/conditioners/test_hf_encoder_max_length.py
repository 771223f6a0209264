"""Long prompts: the default max_length is the tokenizer's own limit, lifted by max_length=0 (issue 16, item 7)."""
import json
import shutil
import warnings

import pytest
import torch

from audiocraft_patched.modules.conditioners import HFEncoderConditioner
from audiocraft_patched.utils.tiny import make_tiny_t5

LONG = " ".join(["calm piano with soft drums"] * 400)  # ~2,000 words


@pytest.fixture(scope="module")
def t5_dirs(tmp_path_factory):
    """(tokenizer without a limit, as the tiny test models; the same with t5-base's limit scaled to 16)."""
    plain = make_tiny_t5(tmp_path_factory.mktemp("t5"), d_model=16, num_heads=2, d_kv=8, d_ff=16)
    limited = tmp_path_factory.mktemp("t5-limited") / "t5"
    shutil.copytree(plain, limited)
    config = json.loads((limited / "tokenizer_config.json").read_text())
    config["model_max_length"] = 16  # t5-base's tokenizer says 512
    (limited / "tokenizer_config.json").write_text(json.dumps(config))
    return str(plain), str(limited)


def encode(cond, texts):
    with torch.no_grad():
        return cond(cond.tokenize(texts))


def test_default_is_the_tokenizers_limit_with_a_warning(t5_dirs):
    cond = HFEncoderConditioner(t5_dirs[1], output_dim=8).eval()
    assert cond.max_length == 16 and cond.options()["max_length"] is None  # the config is as before
    with pytest.warns(UserWarning, match=r"tokens; truncated to max_length=16 \(max_length=0 lifts the limit\)"):
        embeds, mask = encode(cond, [LONG, "short"])
    assert embeds.shape[1] == 16 and mask[0].sum() == 16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short = encode(cond, ["calm piano"])  # under the limit: untouched, no warning
    unlimited = HFEncoderConditioner(t5_dirs[0], output_dim=8).eval()
    unlimited.output_proj.load_state_dict(cond.output_proj.state_dict())
    assert torch.equal(short[0], encode(unlimited, ["calm piano"])[0])


def test_max_length_0_lifts_the_limit_and_is_kept_in_the_config(t5_dirs):
    cond = HFEncoderConditioner(t5_dirs[1], output_dim=8, max_length=0).eval()
    assert cond.max_length is None and cond.options()["max_length"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embeds, mask = encode(cond, [LONG])
    assert embeds.shape[1] > 16 * 50 and int(mask.sum()) == embeds.shape[1]
    rebuilt = HFEncoderConditioner(output_dim=8, **cond.options())
    assert rebuilt.max_length is None
    with pytest.raises(ValueError, match=r"or 0: no limit\), got -1"):
        HFEncoderConditioner(t5_dirs[1], output_dim=8, max_length=-1)


def test_explicit_max_length_wins_and_a_tokenizer_without_limit_keeps_none(t5_dirs):
    assert HFEncoderConditioner(t5_dirs[1], output_dim=8, max_length=64).max_length == 64
    cond = HFEncoderConditioner(t5_dirs[0], output_dim=8)  # model_max_length unset (1e30): no default
    assert cond.max_length is None and cond.options()["max_length"] is None
