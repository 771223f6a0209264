"""Image conditioning: Hugging Face vision towers (CLIP, SigLIP, ViT-like) as MusicGen conditioners.

No upstream counterpart: audiocraft 1.3.0 conditions on text, chroma and (through the laion_clap
package) CLAP embeddings. `HFImageConditioner` (`model: hf_image`, alias `clip_image`) reads
`ConditioningAttributes.image` and returns `(embeddings [B, L, output_dim], mask [B, L])` like
every conditioner: the patch-token sequence (`pooling='none'`, for cross-attention), or one
vector per image (`'mean'`, `'pooled'`, or `'projected'`: the joint image-text space of CLIP
and SigLIP). A row whose image is None is the null condition (all-zero mask) of classifier-free
guidance. As with the text encoders, the frozen tower stays out of `state_dict()`: a checkpoint
holds `output_proj` (and an adapter, if any) and names the tower folder in its config:

    conditioners:
      image: {model: hf_image, hf_image: {name: <CLIP/SigLIP folder or hub id>, pooling: none}}
    fuser: {cross: [description, image], ...}

Which modes need training:
- a new image conditioner on a released (text-trained) MusicGen has a random `output_proj`:
  the LM has never seen image embeddings, so it must be trained (fine-tuned on images with
  music) before it means anything;
- zero-shot (`cross_modal.add_cross_modal_conditioner`) needs no image or audio training: it reuses the
  adapter and projection of a text conditioner that works in the same joint space (a CLIP text
  tower with `pooling='projected'`, aligned with `align` or trained with the model), and feeds
  it the image embedding instead. It inherits the joint model's modality gap (image and text
  embeddings of the same content are close but not equal), so it is an approximation.

`TowerConditioner` is the part shared with the CLAP audio conditioner (`audio_embed.py`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import BaseConditioner, ConditionType, ImageConditioner
from .hf_family import FrozenEncoderMixin, quiet_transformers, resolve_pretrained
from .registry import register_encoder

IMAGE_POOLINGS = ("none", "mean", "pooled", "projected")
# Largest image accepted (width x height), checked from the header before decoding: a 140 KB PNG
# can declare 12000 x 12000 pixels and take GBs to decode, while the towers see 224-384 pixels.
# Raise it here (vision.MAX_IMAGE_PIXELS = ...) for larger inputs.
MAX_IMAGE_PIXELS = 64 * 2**20

# model_type -> (tower class, tower class with the joint-space projection or None when the
# pooled output already is the joint embedding, as in SigLIP).
VISION_TOWERS: dict[str, tuple[str, str | None]] = {
    "clip": ("CLIPVisionModel", "CLIPVisionModelWithProjection"),
    "clip_vision_model": ("CLIPVisionModel", "CLIPVisionModelWithProjection"),
    "siglip": ("SiglipVisionModel", None),
    "siglip_vision_model": ("SiglipVisionModel", None),
}


def tower_config(name: str, sub_config: str):
    """(outer config, the tower's config): a joint model's `<sub_config>` with its projection width."""
    from transformers import AutoConfig

    config = resolve_pretrained(name, AutoConfig)
    tower = getattr(config, sub_config, None) or config
    # A joint model keeps its projection width on the outer config (the sub-config holds a default).
    if tower is not config and isinstance(getattr(config, "projection_dim", None), int):
        tower.projection_dim = config.projection_dim
    return config, tower


def load_tower(name: str, cls, config, purpose: str) -> nn.Module:
    """`cls.from_pretrained(name, config=config)`, refusing a checkpoint that lacks some of its weights.

    transformers would fill missing weights at random and only log it; a tower loaded like that
    conditions on noise.
    """
    with quiet_transformers():
        model, info = resolve_pretrained(name, cls, config=config, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ValueError(f"{name!r} lacks {len(missing)} weights of {cls.__name__} (e.g. {missing[:3]}), which would "
                         f"be random. {purpose}")
    return model.eval()


class TowerConditioner(FrozenEncoderMixin, BaseConditioner):
    """A frozen Hugging Face tower whose per-input features go through an optional adapter and `output_proj`.

    Subclasses load the tower and implement `tokenize` (returning `{'inputs': {...} for the rows
    that have an input, 'present': [B] bool}`), `run_tower` (tower inputs -> features [n, L, dim])
    and `blank_inputs` (tower inputs for one empty example, to learn L when a batch has none).

    Args:
        name: hub id or folder of the tower (recorded in checkpoints).
        output_dim: LM width.
        encoder: the loaded tower.
        width: width of what `encode` returns.
        pooling: how features are pooled (recorded; the subclass applies it in `encode`).
        normalize: L2-normalize pooled vectors.
        adapter: `{'kind': 'linear' | 'mlp' | 'resampler', **options}` (`adapters.py`), or None.
        finetune: train the tower too (its weights then go into checkpoints).
        device: where the tower runs.
    """

    def __init__(self, name: str, output_dim: int, encoder: nn.Module, width: int, pooling: str, normalize: bool,
                 adapter: dict | None, finetune: bool, device: str | torch.device):
        super().__init__(width, output_dim)
        if normalize and pooling == "none":
            raise ValueError("normalize=True applies to one vector per input; choose a pooling other than 'none'")
        self.name = str(name)
        self.pooling = pooling
        self.normalize = normalize
        self.layer: int | None = None
        self.set_adapter(adapter)
        self._num_tokens: int | None = None  # L of a present input, learned on the first forward
        self._attach_encoder(encoder, finetune, device)

    def options(self) -> dict[str, Any]:
        """Constructor options as recorded in a checkpoint config (besides output_dim and device)."""
        return {"name": self.name, "pooling": self.pooling, "normalize": self.normalize,
                "adapter": self.adapter_config, "finetune": self.finetune}

    def describe(self) -> dict[str, str]:
        out = super().describe()
        n = sum(p.numel() for p in self.encoder.parameters())
        out["source"] = self.name
        out["summary"] = (f"{type(self).__name__}, encoder {self.name!r} ({type(self.encoder).__name__}, width "
                          f"{self.dim}, {n / 1e6:.2f}M params, {'fine-tuned' if self.finetune else 'frozen'}, pooling "
                          f"{self.pooling}, layer {'last' if self.layer is None else self.layer})")
        return out

    def run_tower(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def blank_inputs(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tower features [n, L, dim] of the present rows, L2-normalized if asked."""
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            hidden = self.run_tower(inputs)
        return F.normalize(hidden, dim=-1) if self.normalize else hidden

    def num_tokens(self) -> int:
        """L of one input's features (null rows of an all-null batch get as many zero tokens)."""
        if self.pooling != "none":
            return 1  # one vector per input
        if self._num_tokens is None:  # learn it once from an empty input (a blank image, silence)
            with torch.no_grad():
                blank = {k: v.to(self.device) for k, v in self.blank_inputs().items()}
                self._num_tokens = self.run_tower(blank).shape[1]
        return self._num_tokens

    def encode(self, tokenized: dict[str, Any]) -> ConditionType:
        """Tokenized inputs -> (features [B, L, dim], zero in null rows; mask [B, L], 1 where there is an input)."""
        present = tokenized["present"]  # [B] bool
        batch = present.shape[0]
        if bool(present.any()):
            feats = self.features(tokenized["inputs"])  # [n, L, dim]
            self._num_tokens = feats.shape[1]
            hidden = feats.new_zeros(batch, feats.shape[1], feats.shape[2])
            hidden[present] = feats
        else:
            hidden = torch.zeros(batch, self.num_tokens(), self.dim, device=present.device)
        mask = present[:, None].expand(batch, hidden.shape[1]).long()  # [B, L]
        return hidden, mask

    @classmethod
    def from_text_conditioner(cls, text_conditioner: BaseConditioner, name: str | None = None,
                              device: str | torch.device | None = None) -> "TowerConditioner":
        """Zero-shot: a conditioner on the other tower of a joint model, sharing the text side's adapter + projection.

        The text conditioner must embed texts in the joint space (`pooling='projected'` on a CLIP
        or CLAP text tower); its `output_proj` (and adapter) map that space to the LM and are
        copied here, so an image / audio whose joint embedding equals a text's gets exactly
        that text's condition. No training is done here; the text side must have been aligned
        or trained for the result to mean anything.

        Args:
            text_conditioner: an `hf` / `hf_adapter` conditioner with `pooling='projected'`.
            name: the joint model's folder or hub id, when the text side was loaded from a
                text-tower-only folder (default: the text conditioner's).
            device: where the tower runs (default: the text conditioner's device).
        """
        entry = text_conditioner.config()
        options = entry[entry["model"]]
        if options.get("pooling") != "projected":
            raise ValueError("zero-shot cross-modal conditioning needs a text conditioner in the joint space: "
                             f"pooling='projected' on a CLIP/CLAP text tower, got pooling="
                             f"{options.get('pooling')!r} ({type(text_conditioner).__name__})")
        if options.get("finetune"):
            raise ValueError("the text conditioner fine-tunes its encoder, so its joint space has moved away from the "
                             "joint model's other tower; zero-shot transfer needs a frozen text tower")
        weight = text_conditioner.output_proj.weight
        device = weight.device if device is None else device
        cond = cls(name or options["name"], text_conditioner.output_dim, pooling="projected",
                   normalize=bool(options.get("normalize")), adapter=options.get("adapter"), device=device)
        if cond.dim != text_conditioner.dim:
            raise ValueError(f"{cond.name!r}: the {cls.__name__} joint embedding has width {cond.dim} but the text "
                             f"conditioner's has {text_conditioner.dim}; both towers must come from one joint model")
        shared = {k: v for k, v in text_conditioner.state_dict().items() if k.startswith(("output_proj.", "adapter."))}
        cond.load_state_dict(shared)
        cond.projection_origin = "zero-shot"
        return cond.to(device=weight.device, dtype=weight.dtype)


def load_image(image: Any, where: str = "image"):
    """A path, PIL image or tensor [C, H, W] / [1, C, H, W] -> an RGB PIL image.

    Tensors are uint8 in [0, 255] or floating point in [0, 1]; 1 channel means grayscale.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise ImportError("image conditioning needs Pillow: pip install pillow") from exc
    if isinstance(image, (str, Path)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{where}: no such image file: {str(path)!r}")
        try:
            with Image.open(path) as opened:  # reads the header only
                _check_pixels(opened.size, where, f" ({str(path)!r})")
                opened.load()  # decode now: a truncated or corrupt file fails here, not later
                return opened.convert("RGB")
        except ImageTooLargeError:
            raise
        except Image.DecompressionBombError as exc:  # past Pillow's own limit, raised while opening
            raise ValueError(f"{where}: {str(path)!r} is too large to decode safely ({exc}); the limit is "
                             f"{MAX_IMAGE_PIXELS} pixels: downscale the image") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"{where}: cannot read {str(path)!r} as an image ({exc.__class__.__name__}: {exc}); "
                             "give a PNG, JPEG, WebP, BMP, GIF or TIFF file that Pillow can open") from exc
    if isinstance(image, Image.Image):
        _check_pixels(image.size, where, "")
        return image.convert("RGB")  # drops alpha, expands grayscale and palettes
    if isinstance(image, torch.Tensor):
        return _tensor_to_pil(image, where)
    raise TypeError(f"{where}: expected a file path, a PIL image or a tensor [C, H, W], got {type(image).__name__}")


class ImageTooLargeError(ValueError):
    """An image with more than MAX_IMAGE_PIXELS pixels."""


def _check_pixels(size: tuple[int, int], where: str, what: str) -> None:
    """Refuse a (width, height) over MAX_IMAGE_PIXELS, before any pixel is decoded."""
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(f"{where}{what}: {size[0]} x {size[1]} = {size[0] * size[1]} pixels, the limit "
                                 f"is {MAX_IMAGE_PIXELS}: downscale the image (the encoder sees a few hundred pixels "
                                 "a side), or raise audiocraft_patched.modules.conditioners.vision.MAX_IMAGE_PIXELS")


def _tensor_to_pil(image: torch.Tensor, where: str):
    from PIL import Image

    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3:
        raise ValueError(f"{where}: an image tensor must be [C, H, W] (or [1, C, H, W]), got shape "
                         f"{tuple(image.shape)}")
    channels = image.shape[0]
    if channels not in (1, 3):
        hint = ""
        if image.shape[-1] in (1, 3, 4):
            hint = " It looks channels-last [H, W, C]: pass image.permute(2, 0, 1)."
        elif channels == 4:
            hint = " For RGBA, drop the alpha channel: image[:3]."
        raise ValueError(f"{where}: an image tensor needs 3 (RGB) or 1 (grayscale) channels first, [C, H, W]; got "
                         f"shape {tuple(image.shape)} ({channels} channels).{hint}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{where}: the image tensor is empty, shape {tuple(image.shape)}")
    _check_pixels((image.shape[2], image.shape[1]), where, "")
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        pixels = image
    elif image.dtype.is_floating_point:
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 1:
            raise ValueError(f"{where}: a floating-point image tensor must hold values in [0, 1], got [{low:.3g}, "
                             f"{high:.3g}]; divide 0-255 values by 255, or undo the normalization")
        pixels = (image.float() * 255).round().to(torch.uint8)
    else:
        raise ValueError(f"{where}: image tensors must be uint8 (0-255) or floating point (0-1), got {image.dtype}")
    pixels = pixels.expand(3, -1, -1)  # grayscale -> RGB
    return Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def as_image_list(images: Any) -> list[Any]:
    """The per-sample list behind `images=`: a list as is, a [B, C, H, W] tensor split, one image wrapped."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


@register_encoder("hf_image", "clip_image")
class HFImageConditioner(TowerConditioner, ImageConditioner):
    """Image conditioner on a Hugging Face vision tower (CLIP, SigLIP; other `AutoModel` vision models).

    Loads only the vision tower from a joint model's folder (`CLIPModel`, `SiglipModel`) or a
    tower folder (`CLIPVisionModel(WithProjection)`, `SiglipVisionModel`, ViT, ...), and the
    image processor saved beside it (`preprocessor_config.json`).

    Args:
        name: hub id or folder.
        output_dim: LM width.
        pooling: 'none' (all tokens [B, L, D]: CLIP's class token + patches, SigLIP's patches),
            'mean' (their mean), 'pooled' (the tower's pooled output: CLIP's class token after
            its last norm, SigLIP's attention-pooling head) or 'projected' (the joint image-text
            embedding: CLIP's `image_embeds`, SigLIP's pooled output); the last three give [B, 1, D].
        layer: hidden state for 'none' / 'mean' (0: embeddings, -2: the one before last);
            None: the last.
        normalize: L2-normalize the pooled vector (not for 'none'); None: False.
        adapter: optional `adapters.py` config (`{'kind': 'mlp', 'hidden': 512}`, ...)
            between the features and `output_proj`.
        finetune: train the tower too (its weights then go into checkpoints).
        device: where the tower runs.
    """

    def __init__(self, name: str, output_dim: int, pooling: str = "none", layer: int | None = None,
                 normalize: bool | None = None, adapter: dict | None = None, finetune: bool = False,
                 device: str | torch.device = "cpu"):
        import transformers

        if pooling not in IMAGE_POOLINGS:
            raise ValueError(f"pooling must be one of {IMAGE_POOLINGS}, got {pooling!r}")
        if layer is not None and pooling not in ("none", "mean"):
            raise ValueError(f"layer applies to the token states ('none' or 'mean' pooling), not to {pooling!r}")
        name = str(name)
        config, vision = tower_config(name, "vision_config")
        plain, projected = VISION_TOWERS.get(config.model_type, (None, None))
        if plain is None and (vision is not config or getattr(config, "text_config", None) is not None):
            raise ValueError(f"{name!r} is a {config.model_type!r} joint model, whose vision tower this conditioner "
                             f"does not know how to load (known: {sorted(VISION_TOWERS)}); pass a folder holding "
                             "the vision tower alone, or add its classes to VISION_TOWERS")
        if plain is None:  # a vision model of its own (ViT, DINOv2, ...): no joint space
            if pooling == "projected":
                raise ValueError(f"{name!r} is a {config.model_type!r} model without a joint image-text space; "
                                 f"pooling='projected' needs CLIP or SigLIP (use 'none', 'mean' or 'pooled')")
            cls = transformers.AutoModel
        else:
            cls = getattr(transformers, projected if pooling == "projected" and projected else plain)
        encoder = load_tower(name, cls, vision if plain is not None else config,
                             "Pass the folder of the whole model (or of its vision tower, with its projection for "
                             "pooling='projected') as written by `save_pretrained`.")
        has_projection = pooling == "projected" and projected is not None
        width = vision.projection_dim if has_projection else vision.hidden_size
        with quiet_transformers():
            try:
                processor = resolve_pretrained(name, transformers.AutoImageProcessor)
            except OSError as exc:
                raise OSError(f"{name!r} has no usable image processor ({exc}); the folder needs the "
                              "preprocessor_config.json that the model's processor writes (save_pretrained)") from exc
        super().__init__(name, output_dim, encoder, width, pooling, bool(normalize), adapter, finetune, device)
        self.layer = layer
        self.processor = processor
        self._has_projection = has_projection
        num_layers = getattr(vision, "num_hidden_layers", None)
        if layer is not None and isinstance(num_layers, int) and not -(num_layers + 1) <= layer <= num_layers:
            raise ValueError(f"layer={layer} is out of range: {name!r} has {num_layers} layers, so hidden states "
                             f"{-(num_layers + 1)}..{num_layers} (0 = embeddings)")

    def options(self) -> dict[str, Any]:
        return {**super().options(), "layer": self.layer}

    def tokenize(self, x: list[Any]) -> dict[str, Any]:
        """Images (path, PIL image, tensor [C, H, W], or None) -> pixel values of the present ones."""
        present = [image is not None for image in x]
        images = [load_image(image, f"image {i}") for i, image in enumerate(x) if image is not None]
        inputs = {}
        if images:
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]  # [n, 3, H, W]
            inputs["pixel_values"] = pixels.to(self.device)
        return {"inputs": inputs, "present": torch.tensor(present, dtype=torch.bool, device=self.device)}

    def blank_inputs(self) -> dict[str, torch.Tensor]:
        from PIL import Image

        blank = self.processor(images=[Image.new("RGB", (64, 64))], return_tensors="pt")
        return {"pixel_values": blank["pixel_values"]}

    def run_tower(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pixel values [n, 3, H, W] -> features [n, L, dim] (L = 1 unless pooling is 'none')."""
        pixels = inputs["pixel_values"].to(next(self.encoder.parameters()).dtype)
        out = self.encoder(pixel_values=pixels, output_hidden_states=self.layer is not None)
        if self.pooling in ("none", "mean"):
            hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
            return hidden.mean(1, keepdim=True) if self.pooling == "mean" else hidden
        if self._has_projection:
            return out.image_embeds.unsqueeze(1)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            raise ValueError(f"{self.name!r} ({type(self.encoder).__name__}) has no pooled output; use pooling "
                             "'none' or 'mean'")
        return pooled.unsqueeze(1)
