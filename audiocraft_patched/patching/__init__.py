"""Our change as a patch series on upstream audiocraft: generation, drift check and rebase.

`patches/` holds `git format-patch` files against audiocraft 1.3.0 that add `model: hf` (any
Hugging Face text encoder) to upstream itself. They are generated from this package, never
edited by hand:

    python -m audiocraft_patched.patching regenerate [--upstream PATH]   # rewrite patches/
    python -m audiocraft_patched.patching check [--upstream PATH]        # exit 1 if patches/ is stale
    audiocraft-patched rebase --onto 1.2.0 -o new-patches                # carry them onto another upstream
"""
from .copies import CopyError, make_upstream_copy  # noqa: F401
from .rebase import PatchResult, RebaseError, RebaseReport, add_rebase_parser, rebase  # noqa: F401
from .series import PATCHES_DIR, SPECS, SeriesError, edit_builders, read_series, regenerate  # noqa: F401
