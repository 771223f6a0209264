"""`audiocraft-patched app`: a local web page to hear models side by side (install with `pip install -e ".[app]"`).

    audiocraft-patched app                               # the embedded default (and default-zh if installed)
    audiocraft-patched app ./small-minilm ./small-minilm-aligned --port 7860

`pool.py` loads and runs the models (no gradio); `page.py` is the gradio page. gradio is imported
only when the app starts, so the rest of the package never needs it.
"""
from __future__ import annotations

import argparse
import os

from .pool import Clip, ModelPool  # noqa: F401


def add_app_parser(sub) -> None:
    """Register the `app` verb on the CLI's subparsers."""
    app = sub.add_parser("app", help="web page: generate with up to three models side by side (needs .[app])",
                         description="app [MODEL ...]: serve a local page offering 'default' plus the given models "
                                     "(checkpoint folders or hub ids in the local Hugging Face cache), each loaded "
                                     "on first use")
    app.add_argument("models", nargs="*", metavar="MODEL")
    app.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    app.add_argument("--port", type=int, default=7860)
    app.add_argument("--device", default="cpu")
    app.add_argument("--max-upload-mb", type=float, default=20.0, help="largest melody/image/audio upload accepted")
    app.set_defaults(func=cmd_app)


def cmd_app(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise ValueError('the app needs gradio: pip install -e ".[app]" (or pip install gradio)') from exc
    from .page import build_page

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    names = ["default", *[m for m in args.models if m != "default"]]
    page = build_page(ModelPool(names, device=args.device))
    page.queue(default_concurrency_limit=2, max_size=64)
    print(f"serving {names} on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    page.launch(server_name=args.host, server_port=args.port, max_file_size=int(args.max_upload_mb * 2**20),
                show_error=True, ssr_mode=False, quiet=True)
    return 0
