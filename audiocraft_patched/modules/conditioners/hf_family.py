"""Encoder families: how to find, load and run each kind of Hugging Face text model.

No upstream counterpart: upstream's `T5Conditioner` (`audiocraft/modules/conditioners.py`, 1.3.0)
knows one family. Here `HFEncoderConditioner` asks the family registry which `EncoderFamily`
handles a model (by its config's `model_type`, or by files such as sentence-transformers'
`modules.json`), and the family loads the tokenizer and the text model and turns token ids into
hidden states. To support a new kind of model, write a short file with a subclass decorated by
`@register_family` and import it in `hf_encoder.py` (see `hf_clip.py` for a small example).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import ClassVar

import torch

POOLINGS = ("none", "mean", "cls", "last", "max")
FAMILIES: list[type["EncoderFamily"]] = []


def register_family(cls: type["EncoderFamily"]) -> type["EncoderFamily"]:
    """Class decorator: make `find_family` consider this family (higher `priority` first)."""
    if any(f.name == cls.name for f in FAMILIES):
        raise KeyError(f"encoder family {cls.name!r} already registered")
    FAMILIES.append(cls)
    FAMILIES.sort(key=lambda f: -f.priority)
    return cls


def offline_help(name: str) -> str:
    return ("Without network access, either pass a local folder (one written by `save_pretrained` for the model and "
            "its tokenizer), or fill the Hugging Face cache beforehand on a machine online, e.g. "
            f"`huggingface-cli download {name}`, and set HF_HUB_OFFLINE=1.")


def resolve_pretrained(name: str, loader, **kwargs):
    """`loader.from_pretrained(name)` with an error that says how to get the files offline."""
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        if os.path.isdir(name):
            raise OSError(f"could not load {loader.__name__} from folder {name!r}: {exc}") from exc
        raise OSError(f"could not find the Hugging Face model {name!r} ({exc.__class__.__name__}: {exc}).\n"
                      + offline_help(name)) from exc


def find_model_file(name: str, filename: str, subfolder: str = "") -> Path | None:
    """Path of `filename` in a local folder or in the cached hub repo `name`; None if absent."""
    folder = Path(name).expanduser() / subfolder
    if folder.is_dir():
        return folder / filename if (folder / filename).is_file() else None
    from transformers.utils import cached_file

    try:
        found = cached_file(name, filename, subfolder=subfolder, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
    except OSError:
        return None
    return Path(found) if found else None


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports and progress bars; we check what matters ourselves.

    Loading a text tower from a full CLIP checkpoint lists every vision weight as unexpected, and
    a missing weight is turned into a clear error or warning by `check_loaded_weights`.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def check_loaded_weights(name: str, model: torch.nn.Module, missing: set[str] | list[str]) -> None:
    """Refuse a model whose body was not in the checkpoint; warn about a few missing weights.

    transformers fills missing weights with random values and only logs it, so a folder holding
    e.g. a causal LM head alone would otherwise "work" and condition on noise.
    """
    import warnings

    missing = set(missing)
    if not missing:
        return
    tensors = dict(model.named_parameters())
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    embedding_names = {n for n, p in tensors.items() if embeddings is not None and p is embeddings.weight}
    lacking = missing & set(tensors)
    if embedding_names & missing or len(lacking) > len(tensors) // 2:
        example = sorted(lacking or missing)[:3]
        raise ValueError(
            f"{name!r} has no usable text encoder: the checkpoint lacks {len(lacking)} of the {len(tensors)} weights "
            f"of {type(model).__name__} (e.g. {example}), so they would be random. This happens with a folder that "
            "holds only a head (such as a causal LM head) or a model of another kind; pass the folder of the whole "
            "model as saved by `save_pretrained`.")
    warnings.warn(f"{name!r}: {sorted(missing)} are not in the checkpoint and were initialised at random by "
                  "transformers; conditioning is unaffected unless the family uses them")


def config_width(config) -> int | None:
    """Hidden width from a transformers config (`d_model`, `hidden_size`, `n_embd`, `dim`)."""
    for key in ("d_model", "hidden_size", "n_embd", "dim"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def config_num_layers(config) -> int | None:
    for key in ("num_hidden_layers", "num_layers", "n_layer", "n_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


class EncoderFamily:
    """One kind of Hugging Face text model, as `HFEncoderConditioner` uses it.

    The defaults fit encoders with a `last_hidden_state` (BERT-like models); subclasses override
    what differs. A family never holds the model: it tells how to load and run it.

    Args:
        name: hub id or local folder.
        config: the folder's transformers config (`AutoConfig.from_pretrained(name)`).
        subfolder: where the transformers model lives inside `name` (sentence-transformers).
    """

    name: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    priority: ClassVar[int] = 0  # higher is tried first: folder formats before model types
    poolings: ClassVar[tuple[str, ...]] = POOLINGS  # what `pooling` may be for this family

    def __init__(self, name: str, config, subfolder: str = ""):
        self.source = name
        self.config = config
        self.subfolder = subfolder

    @classmethod
    def matches(cls, name: str, config) -> bool:
        return config.model_type in cls.model_types

    # -- defaults for options the user leaves at None ---------------------------------------------
    def default_pooling(self) -> str:
        return "none"

    def default_normalize(self, pooling: str) -> bool:
        return False

    def default_max_length(self) -> int | None:
        return None

    def position_limit(self, model) -> int | None:
        """Longest token sequence the model accepts (learned absolute positions), None if unbounded."""
        limit = getattr(model.config, "max_position_embeddings", None)
        return limit if isinstance(limit, int) else None

    # -- loading -----------------------------------------------------------------------------------
    def load_tokenizer(self):
        from transformers import AutoTokenizer

        with quiet_transformers():
            tokenizer = resolve_pretrained(self.source, AutoTokenizer, subfolder=self.subfolder)
        if tokenizer.pad_token is None:
            raise ValueError(f"the tokenizer of {self.source!r} has no padding token; batches cannot be padded")
        return tokenizer

    def model_class(self, pooling: str):
        """The transformers class to load (default: the text-encoding or base model of the config)."""
        from transformers import AutoModel, AutoModelForTextEncoding
        from transformers.models.auto.modeling_auto import MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES

        # For seq2seq families AutoModelForTextEncoding is the encoder alone: AutoModel would build
        # the whole model (and a random decoder when the folder holds only an encoder).
        if self.config.model_type in MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES:
            return AutoModelForTextEncoding
        return AutoModel

    def load_model(self, pooling: str, dtype: torch.dtype, **kwargs) -> torch.nn.Module:
        import transformers

        loader = self.model_class(pooling)
        # transformers < 4.56 calls the argument `torch_dtype`; 5.x loads in the saved dtype unless told.
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        kwargs["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = dtype
        with quiet_transformers():
            model, info = resolve_pretrained(self.source, loader, subfolder=self.subfolder, output_loading_info=True,
                                             **kwargs)
        check_loaded_weights(self.source, model, info.get("missing_keys", ()))
        return model

    def width(self, model, pooling: str) -> int:
        """Width of what `encode` returns for this pooling."""
        width = config_width(model.config)
        if width is None:
            raise ValueError(f"cannot read the hidden width of {self.source!r} from its config "
                             "(no d_model / hidden_size / n_embd / dim)")
        return width

    def num_layers(self, model) -> int | None:
        return config_num_layers(model.config)

    # -- running ----------------------------------------------------------------------------------
    def prepare_text(self, text: str) -> str:
        """Per-text preprocessing the model was trained with (e.g. lower-casing)."""
        return text

    def input_names(self, model, tokenizer) -> set[str]:
        """Tokenizer outputs to pass to the model: those its forward takes, and the tokenizer means it to."""
        import inspect

        accepted = set(inspect.signature(model.forward).parameters)
        return accepted & ({"input_ids", "attention_mask"} | set(tokenizer.model_input_names))

    def encode(self, model, inputs: dict[str, torch.Tensor], layer: int | None, pooling: str) -> torch.Tensor:
        """Hidden states [B, T, D] of `layer` (None: the model's `last_hidden_state`)."""
        if layer is None:
            return model(**inputs).last_hidden_state
        return model(**inputs, output_hidden_states=True).hidden_states[layer]


def find_family(name: str, config) -> type[EncoderFamily]:
    """The registered family that handles `name` (its config already loaded)."""
    for family in FAMILIES:
        if family.matches(name, config):
            return family
    architectures = getattr(config, "architectures", None) or []
    raise ValueError(
        f"{name!r} is a {config.model_type!r} model ({', '.join(architectures) or 'no architecture given'}), which is "
        f"not a text encoder audiocraft_patched knows how to use. Known families: "
        f"{', '.join(f.name for f in FAMILIES)}. To add one, write a short `EncoderFamily` subclass "
        "(see audiocraft_patched/modules/conditioners/hf_family.py).")


class FrozenEncoderMixin:
    """A conditioner's Hugging Face model that stays out of `state_dict()` unless fine-tuned.

    A frozen model is not a registered submodule (as upstream's `self.__dict__['t5']`), so only
    the projection (and adapter) is saved; it still follows the conditioner's device moves but
    keeps its dtype (upstream's T5 stays float32 under `lm.half()`), and never runs dropout.
    Mix in before `nn.Module`; call `_attach_encoder` in `__init__`.
    """

    def _attach_encoder(self, encoder: torch.nn.Module, finetune: bool, device) -> None:
        encoder = encoder.to(device).train(finetune)
        encoder.requires_grad_(finetune)
        self.finetune = finetune
        self.projection_origin = "new"  # 'checkpoint' once output_proj is loaded from a state dict
        if finetune:
            self.encoder = encoder
        else:
            self.__dict__["encoder"] = encoder

    def _apply(self, fn, *args, **kwargs):
        if not self.finetune:
            def move_only(t: torch.Tensor) -> torch.Tensor:
                out = fn(t)
                return t.to(out.device) if out.dtype != t.dtype else out

            self.__dict__["encoder"] = self.__dict__["encoder"]._apply(move_only, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def set_dtype(self, dtype: torch.dtype) -> None:
        """Cast the projection and the encoder too: a frozen one keeps its dtype under `.to()`."""
        self.to(dtype)
        self.encoder.to(dtype)
        self.dtype = dtype

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.finetune:
            self.__dict__["encoder"].eval()
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "output_proj.weight" in state_dict:
            self.projection_origin = "checkpoint"
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device
