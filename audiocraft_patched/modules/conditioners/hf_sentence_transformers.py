"""sentence-transformers folders: the transformer inside, with the folder's own pooling by default.

No upstream counterpart. A sentence-transformers model (e.g. all-MiniLM-L6-v2) is a
transformers model plus `modules.json`, which lists its modules: `Transformer` (where the
model lives), `Pooling` (`1_Pooling/config.json`: cls / mean / max / last token) and optionally
`Normalize`. By default the conditioner pools and normalizes as the folder says, and truncates to
its `max_seq_length`, so the pooled condition equals the sentence embedding the model was
trained for; `pooling='none'` gives its token states instead.
"""
from __future__ import annotations

import json
import warnings

from .hf_bert import EncoderOnlyFamily
from .hf_family import find_model_file, register_family

_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
# pooling_mode_* keys of 1_Pooling/config.json -> our pooling names
_ST_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
             "pooling_mode_lasttoken": "last"}


def read_modules(name: str) -> list[dict] | None:
    """The entries of a sentence-transformers `modules.json`, or None when `name` has none."""
    path = find_model_file(name, "modules.json")
    if path is None:
        return None
    modules = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(modules, list):
        raise ValueError(f"{path} is not a sentence-transformers modules.json (expected a list of modules)")
    return modules


@register_family
class SentenceTransformersFamily(EncoderOnlyFamily):
    """A sentence-transformers folder around an encoder-only transformer."""

    name = "sentence-transformers"
    priority = 10  # the folder format decides before the model type (a BERT inside)

    def __init__(self, name: str, config, subfolder: str = ""):
        modules = read_modules(name) or []
        kinds = {m.get("type"): m for m in modules}
        if _ST_TRANSFORMER not in kinds:
            raise ValueError(f"{name!r}: modules.json has no {_ST_TRANSFORMER} module; found {sorted(kinds)}")
        ignored = sorted(set(kinds) - {_ST_TRANSFORMER, _ST_POOLING, _ST_NORMALIZE})
        if ignored:  # e.g. Dense: the condition is then the vector before them, which the user should know
            warnings.warn(f"{name!r}: modules.json lists {ignored}, which audiocraft_patched does not run; the "
                          "condition is taken before them")
        super().__init__(name, config, subfolder=kinds[_ST_TRANSFORMER].get("path", "") or subfolder)
        self._pooling, self._pooling_problem = self._read_pooling(name, kinds.get(_ST_POOLING))
        self._normalize = _ST_NORMALIZE in kinds
        settings = find_model_file(name, "sentence_bert_config.json", self.subfolder)
        settings = json.loads(settings.read_text(encoding="utf-8")) if settings is not None else {}
        self._max_length = settings.get("max_seq_length")
        self._lowercase = bool(settings.get("do_lower_case", False))

    @classmethod
    def matches(cls, name: str, config) -> bool:
        return read_modules(name) is not None and super().matches(name, config)

    @staticmethod
    def _read_pooling(name: str, module: dict | None) -> tuple[str, str | None]:
        """(the folder's pooling in our names, None), or ('none', why it has no equivalent)."""
        if module is None:
            return "none", None
        path = find_model_file(name, "config.json", module.get("path", ""))
        config = json.loads(path.read_text(encoding="utf-8")) if path is not None else {}
        modes = [ours for key, ours in _ST_MODES.items() if config.get(key)]
        other = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in _ST_MODES]
        if other or len(modes) != 1:
            # An error only if the user leaves the pooling to the folder (see default_pooling).
            return "none", (f"{name!r}: the sentence-transformers pooling {other or modes} has no equivalent here "
                            f"(one of {sorted(set(_ST_MODES.values()))} is supported); pass pooling=... explicitly")
        return modes[0], None

    def default_pooling(self) -> str:
        if self._pooling_problem is not None:
            raise ValueError(self._pooling_problem)
        return self._pooling

    def default_normalize(self, pooling: str) -> bool:
        return self._normalize and pooling == self._pooling

    def default_max_length(self) -> int | None:
        return self._max_length

    def prepare_text(self, text: str) -> str:
        return text.lower() if self._lowercase else text
