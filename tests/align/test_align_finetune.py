"""Fine-tuning with the LM's own loss on audio + captions: held-out CE goes down, tokens are cached,
LoRA is merged into an ordinary checkpoint, the encoder can train, and --resume continues exactly."""
import json
import math
import random

import pytest
import torch

from audiocraft_patched.align.data import encode_audio_tokens, read_manifest
from audiocraft_patched.align.tasks import FinetuneTask
from audiocraft_patched.align.train import STATE_FILE, TrainConfig, train
from audiocraft_patched.data.audio import audio_write
from audiocraft_patched.models import MusicGen
from audiocraft_patched.utils.tiny import INSTRUMENTS, MOODS
from conftest import minilm_dir


@pytest.fixture(scope="module")
def audio_data(tmp_path_factory):
    """16 WAVs of 1.2 s (16 kHz): tones whose pitch follows the instrument and rhythm the mood.

    Half the captions are in the manifest line, half in upstream-style sidecar JSON files.
    """
    folder = tmp_path_factory.mktemp("audio")
    rng = random.Random(0)
    lines = []
    for i in range(16):
        inst, mood = rng.choice(INSTRUMENTS), rng.choice(MOODS)
        freq = 110 * 2 ** (INSTRUMENTS.index(inst) / 4)
        rate = 2 + MOODS.index(mood)
        t = torch.arange(int(1.2 * 16000)) / 16000
        wav = torch.sin(2 * math.pi * freq * t) * (0.6 + 0.4 * torch.sin(2 * math.pi * rate * t))
        audio_write(folder / f"clip{i}", wav[None], 16000)
        caption = f"a {mood} {inst} solo"
        if i % 2:
            (folder / f"clip{i}.json").write_text(json.dumps({"description": caption}))
            lines.append({"path": f"clip{i}.wav"})
        else:
            lines.append({"path": f"clip{i}.wav", "description": caption})
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def test_finetune_with_lora_reduces_held_out_loss(tiny_musicgen_dir, audio_data, tmp_path):
    out = tmp_path / "ft"
    cfg = TrainConfig(mode="finetune", model=str(tiny_musicgen_dir), out=str(out), student=minilm_dir(),
                      adapter={"kind": "mlp", "hidden": 64}, manifest=str(audio_data), segment_steps=10,
                      lora_rank=2, lora_targets=("q", "v", "out"), holdout=4, steps=40, batch_size=8, lr=3e-3,
                      progress=False)
    result = train(cfg)
    assert result["after"]["ce"] < result["before"]["ce"] - 0.05, result
    # Tokens were computed once: reading the manifest again encodes nothing.
    model = MusicGen.get_pretrained(str(tiny_musicgen_dir), device="cpu")
    _, computed = encode_audio_tokens(read_manifest(audio_data), model.compression_model, out / "cache" / "tokens")
    assert computed == 0
    # LoRA is merged: an ordinary checkpoint whose cross-attention weights moved, the rest did not.
    tuned = MusicGen.get_pretrained(str(out), device="cpu")
    base, new = model.lm.state_dict(), tuned.lm.state_dict()
    assert not torch.equal(base["transformer.layers.0.cross_attention.in_proj_weight"],
                           new["transformer.layers.0.cross_attention.in_proj_weight"])
    assert torch.equal(base["transformer.layers.0.self_attn.in_proj_weight"],
                       new["transformer.layers.0.self_attn.in_proj_weight"])
    assert not any("lora" in k or "parametrizations" in k for k in new)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["heldout"]["ce"] == result["before"]["ce"] and log[-1]["heldout"]["ce"] == result["after"]["ce"]


def test_encoder_finetune_and_resume_after_a_crash(tiny_musicgen_dir, audio_data, tmp_path, monkeypatch):
    """The model's own T5 trains (encoder weights go into the checkpoint); a run interrupted after
    its step-3 checkpoint and resumed ends with exactly the weights of an uninterrupted run."""
    def config(out):
        return TrainConfig(mode="finetune", model=str(tiny_musicgen_dir), out=str(out), manifest=str(audio_data),
                           segment_steps=10, train_encoder=True, holdout=4, steps=6, batch_size=4, lr=1e-3,
                           save_every=3, progress=False)

    whole = train(config(tmp_path / "whole"))
    assert whole["after"]["ce"] < whole["before"]["ce"]

    original, calls = FinetuneTask.loss, {"n": 0}

    def crashing(self, idx, length):
        if torch.is_grad_enabled():  # a training step (evaluation runs without grad)
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt("simulated crash in step 5")
        return original(self, idx, length)

    monkeypatch.setattr(FinetuneTask, "loss", crashing)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "resumed"))
    monkeypatch.setattr(FinetuneTask, "loss", original)
    assert torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=True)["step"] == 3
    resumed = train(TrainConfig(**{**config(tmp_path / "resumed").__dict__, "resume": True}))
    a = torch.load(tmp_path / "whole" / STATE_FILE, weights_only=True)["params"]
    b = torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=True)["params"]
    assert any(".encoder." in k for k in a) and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["after"] == whole["after"]
    steps = [r["step"] for r in map(json.loads, (tmp_path / "resumed" / "log.jsonl").read_text().splitlines())]
    assert steps == sorted(steps)  # the lines past the checkpoint were dropped, then written again
    with pytest.raises(ValueError, match="differ from the saved run.*batch_size"):
        train(TrainConfig(**{**config(tmp_path / "resumed").__dict__, "resume": True, "batch_size": 2}))
    # The encoder's trained weights are in the checkpoint, and come back in a fresh load.
    tuned = MusicGen.get_pretrained(str(tmp_path / "whole"), device="cpu")
    cond = tuned.lm.condition_provider.conditioners["description"]
    assert cond.finetune and any(k.startswith("condition_provider.conditioners.description.encoder.")
                                 for k in tuned.lm.state_dict())
    assert torch.equal(dict(cond.named_parameters())["encoder.shared.weight"],
                       a["condition_provider.conditioners.description.encoder.shared.weight"])


def test_finetune_an_aligned_checkpoint(tiny_musicgen_dir, audio_data, tmp_path):
    """align -> finetune (its hf_adapter conditioner kept, adapter included) -> an ordinary checkpoint."""
    from audiocraft_patched.modules.conditioners import HFAdapterConditioner
    from audiocraft_patched.utils.tiny import captions

    file = tmp_path / "captions.txt"
    file.write_text("\n".join(dict.fromkeys(captions(80, seed=2))) + "\n")
    adapter = {"kind": "mlp", "hidden": 32}
    train(TrainConfig(mode="align", model=str(tiny_musicgen_dir), out=str(tmp_path / "aligned"), student=minilm_dir(),
                      adapter=adapter, captions=str(file), steps=10, batch_size=16, holdout=0.2, progress=False))
    result = train(TrainConfig(mode="finetune", model=str(tmp_path / "aligned"), out=str(tmp_path / "ft"),
                               manifest=str(audio_data), segment_steps=10, holdout=4, steps=20, batch_size=8, lr=3e-3,
                               progress=False))
    assert result["after"]["ce"] < result["before"]["ce"]
    aligned = MusicGen.get_pretrained(str(tmp_path / "aligned"), device="cpu").lm
    tuned = MusicGen.get_pretrained(str(tmp_path / "ft"), device="cpu").lm
    cond = tuned.condition_provider.conditioners["description"]
    assert isinstance(cond, HFAdapterConditioner) and cond.adapter_config == adapter
    assert tuned.cfg["conditioners"]["description"]["hf_adapter"]["adapter"] == adapter
    before, after = aligned.state_dict(), tuned.state_dict()
    key = "condition_provider.conditioners.description.adapter.net.0.weight"
    assert not torch.equal(before[key], after[key])  # the adapter trained on
    assert torch.equal(before["linears.0.weight"], after["linears.0.weight"])  # the LM did not
