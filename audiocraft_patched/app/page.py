"""The gradio page: one prompt, up to three models (A/B/C), same seed; players, spectrograms, timings, scores.

Our own page (upstream's `demos/musicgen_app.py` shows one model at a time). Named API endpoints,
for `gradio_client` scripts: `/generate` (prompt, model, seed, duration -> WAV file) and `/models`.
Requests queue; the pool runs one generation per model at a time, so concurrent users never mix
a model's generation parameters or RNG.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from .pool import DTYPES, MAX_DURATION_S, QUANTIZATIONS, Clip, ModelPool, score_clip, spectrogram_image, write_wav

SLOTS = ("A", "B", "C")
NONE = "(none)"
INTRO = """# audiocraft-patched: hear what an encoder swap costs
Pick up to three models (e.g. the original, a naive encoder swap, the aligned swap): each generates
the same prompt with the same seed, one after another. On world models (`default`, `default-zh` and
their swaps), **score** runs the world's analyzers on each clip and shows which attributes were heard."""


def build_page(pool: ModelPool, out_dir: Path | None = None) -> gr.Blocks:
    """The page for `pool`'s models; clips are written under `out_dir` (default: a fresh temp folder)."""
    if out_dir is None:  # our own temporary folder: removed when the server exits
        out_dir = tempfile.mkdtemp(prefix="audiocraft-patched-app-")
        atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    out_dir = Path(out_dir)

    def run_slots(prompt, negative, seed, duration, top_k, cfg, dtype, quantize, melody, image, audio_prompt, *models):
        chosen = [m for m in models if m and m != NONE]
        if not chosen:
            raise gr.Error("pick at least one model")
        outputs, clips = [], []
        for slot in range(len(SLOTS)):
            name = models[slot] if slot < len(models) else NONE
            if not name or name == NONE:
                outputs += [gr.update(visible=False), None, None, ""]
                clips.append(None)
                continue
            try:
                caps = pool.capabilities(name)
                clip = pool.generate(name, prompt, seed=seed, duration=duration, top_k=top_k, cfg_coef=cfg,
                                     dtype=dtype, quantize=quantize, negative=negative or "",
                                     melody=melody if "melody" in caps else None,
                                     image=image if "image" in caps else None,
                                     audio_prompt=audio_prompt if "audio_prompt" in caps else None)
            except ValueError as exc:
                if "failed to load" not in str(exc) and "unknown model" not in str(exc):
                    raise gr.Error(str(exc))  # the request itself is wrong: say it once, for every slot
                outputs += [gr.update(visible=True), None, None, f"**{SLOTS[slot]} · {name}: error.** {exc}"]
                clips.append(None)
                continue
            path = write_wav(clip, out_dir)
            info = "\n".join([f"**{SLOTS[slot]} · {name}**", f"`{clip.timing}`", *[f"- {x}" for x in clip.encoder]])
            outputs += [gr.update(visible=True), str(path), spectrogram_image(clip.wav, clip.sample_rate), info]
            clips.append({"prompt": prompt, "path": str(path), "model": name})
        return (*outputs, clips, *[""] * len(SLOTS))

    def score(clips):
        if not clips or not any(clips):
            raise gr.Error("generate first, then score")
        from ..data.audio import audio_read

        tables = []
        for entry in clips:
            if entry is None:
                tables.append("")
                continue
            wav, sr = audio_read(entry["path"])
            try:
                rows = score_clip(entry["prompt"], Clip(entry["model"], wav.numpy(), sr, ""))
            except ValueError as exc:
                tables.append(str(exc))
                continue
            asked = [r for r in rows if r[3]]
            hits = sum(r[3] == "yes" for r in asked)
            head = f"heard {hits} of the {len(asked)} attributes asked for\n\n" if asked else ""
            tables.append(head + "| attribute | asked | heard | match |\n|---|---|---|---|\n"
                          + "\n".join(f"| {' | '.join(r)} |" for r in rows))
        return tables

    def on_models(*models):
        caps = set()
        for name in models:
            if name and name != NONE:
                try:
                    caps |= pool.capabilities(name)
                except ValueError:
                    pass  # shown when generating
        return [gr.update(visible=kind in caps) for kind in ("melody", "image", "audio_prompt")]

    def api_generate(prompt: str, model: str, seed: float, duration: float) -> str:
        try:
            clip = pool.generate(model, prompt, seed=int(seed), duration=float(duration))
        except ValueError as exc:
            raise gr.Error(str(exc))
        return str(write_wav(clip, out_dir))

    with gr.Blocks(title="audiocraft-patched") as page:
        gr.Markdown(INTRO)
        with gr.Row():
            prompt = gr.Textbox(label="prompt", lines=2, elem_id="prompt",
                                value="a loud fast trumpet melody in a high register with busy hi-hats")
            negative = gr.Textbox(label="negative prompt (replaces CFG's empty null text)", lines=2,
                                  elem_id="negative")
        with gr.Row():
            pickers = [gr.Dropdown(([NONE] if i else []) + pool.names, value=pool.names[0] if i == 0 else NONE,
                                   label=f"model {slot}", elem_id=f"model-{slot}") for i, slot in enumerate(SLOTS)]
        with gr.Row():
            duration = gr.Slider(0.2, MAX_DURATION_S, value=2.0, step=0.1, label="duration (s)", elem_id="duration")
            seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
            top_k = gr.Slider(0, 1000, value=250, step=1, label="top-k")
            cfg = gr.Slider(0.0, 10.0, value=3.0, step=0.5, label="CFG coefficient")
            dtype = gr.Radio(list(DTYPES), value="fp32", label="dtype")
            quantize = gr.Radio(list(QUANTIZATIONS), value="none", label="LM weights", elem_id="quantize")
        with gr.Row():
            melody = gr.Audio(label="melody (melody models)", type="filepath", visible=False)
            image = gr.Image(label="image (image-conditioned models)", type="filepath", visible=False)
            audio_prompt = gr.Audio(label="audio prompt (CLAP-conditioned models)", type="filepath", visible=False)
        go = gr.Button("generate", variant="primary", elem_id="generate")
        slots = []
        with gr.Row():
            for slot in SLOTS:
                with gr.Column(visible=False) as column:
                    player = gr.Audio(label=f"{slot}", type="filepath", interactive=False, elem_id=f"audio-{slot}")
                    picture = gr.Image(label="spectrogram", interactive=False, elem_id=f"spec-{slot}")
                    info = gr.Markdown(elem_id=f"info-{slot}")
                    scored = gr.Markdown(elem_id=f"score-{slot}")
                slots.append((column, player, picture, info, scored))
        score_button = gr.Button("score (world analyzers)", elem_id="score")
        state = gr.State([])

        inputs = [prompt, negative, seed, duration, top_k, cfg, dtype, quantize, melody, image, audio_prompt, *pickers]
        outputs = [x for column, player, picture, info, _ in slots for x in (column, player, picture, info)]
        go.click(run_slots, inputs, [*outputs, state, *[s[4] for s in slots]], api_name="compare")
        score_button.click(score, [state], [s[4] for s in slots], api_name="score")
        for picker in pickers:
            picker.change(on_models, pickers, [melody, image, audio_prompt], api_visibility="private")

        # API-only endpoints (no visible controls): scripts call them with gradio_client.
        with gr.Row(visible=False):
            api_in = [gr.Textbox(), gr.Textbox(), gr.Number(), gr.Number()]
            api_audio = gr.Audio(type="filepath")
            api_list = gr.JSON()
            api_go, api_models = gr.Button(), gr.Button()
        api_go.click(api_generate, api_in, api_audio, api_name="generate")
        api_models.click(lambda: list(pool.names), None, api_list, api_name="models")
    return page
