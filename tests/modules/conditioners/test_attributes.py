"""attributes.py: what generate is given -> one ConditioningAttributes per sample."""
import pytest
import torch

from audiocraft_patched.models.builders import get_debug_lm_model
from audiocraft_patched.modules.conditioners import ConditioningAttributes, WavCondition
from audiocraft_patched.modules.conditioners.attributes import build_attributes, set_column, text_attributes


@pytest.fixture(scope="module")
def provider():
    return get_debug_lm_model().condition_provider  # one text conditioner: 'description'


def test_texts_and_columns(provider):
    samples = text_attributes(provider, ["calm", None])
    assert [s.text for s in samples] == [{"description": "calm"}, {"description": None}]
    clip = WavCondition(torch.zeros(1, 1, 8), torch.tensor([8]), [16000])
    set_column(samples, "wav", "self_wav", [clip, None])  # an absent clip is left out: the provider nulls it
    assert samples[0].wav == {"self_wav": clip} and samples[1].wav == {}
    with pytest.raises(ValueError, match="3 values of 'self_wav' for 2 samples"):
        set_column(samples, "wav", "self_wav", [clip, None, None])


def test_build_attributes_dispatch_and_errors(provider):
    assert [s.text for s in build_attributes(provider, ["a"])] == [{"description": "a"}]
    given = ConditioningAttributes(text={"description": "b"})
    assert build_attributes(provider, conditions=[given, {"description": "c"}])[0] is given
    with pytest.raises(ValueError, match="either conditions= or descriptions"):
        build_attributes(provider, ["a"], conditions=[given])
    with pytest.raises(ValueError, match="nothing to condition on"):
        build_attributes(provider)
    with pytest.raises(KeyError, match=r"names \['image'\]"):
        build_attributes(provider, conditions=[{"image": "cat.png"}])
    with pytest.raises(ValueError, match="images= needs a model with one image conditioner; this one has no"):
        build_attributes(provider, ["a"], images=["cat.png"])
