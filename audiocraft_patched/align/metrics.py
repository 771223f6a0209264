"""How close a new encoder (or aligned conditioner) is to the original: representation and LM metrics.

No upstream counterpart. For a set of captions, compares a teacher (a MusicGen's conditioner, or a
bare encoder) with one or more students:

- linear CKA between the two spaces (Kornblith et al. 2019), one mean vector per caption;
- mean cosine after a least-squares map student -> teacher, fitted on half the captions and
  measured on the other half;
- retrieval@1/@5: does the mapped student vector of a held-out caption find that caption's
  teacher vector among all held-out ones?
- with a MusicGen: KL(teacher || student) and top-1 agreement of the LM's next-token
  distributions under teacher vs student conditioning, on code sequences, for held-out captions;
  plain and with classifier-free guidance.

A student given as a bare encoder (no checkpoint) is compared in its raw hidden space, and for the
LM metrics it is plugged in with a fresh, untrained projection: the "just swapped" baseline.
"""
from __future__ import annotations

import importlib.util
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils.export import atomic_write, write_text
from .data import random_codes
from .features import conditions, encoder_states, lm_outputs
from .losses import next_token_kl, top1_agreement

COLUMNS = ("cka", "cosine", "r@1", "r@5", "kl", "top1", "kl_cfg", "top1_cfg")


def _centered(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x - x.mean(0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of x [n, d1] and y [n, d2] (rows: the same n items); 1 = same geometry up to rotation/scale."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"CKA needs the same n >= 2 rows on both sides, got {x.shape[0]} and {y.shape[0]}")
    x, y = _centered(x), _centered(y)
    cross = (y.T @ x).norm() ** 2
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()).clamp(min=1e-30))


def least_squares_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """W [d1 + 1, d2] minimising ||[x, 1] W - y|| (the minimum-norm solution when underdetermined)."""
    xa = torch.cat([x.double(), x.new_ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
    return torch.linalg.lstsq(xa, y.double(), driver="gelsd").solution


def apply_map(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.double(), x.new_ones(x.shape[0], 1, dtype=torch.float64)], dim=1) @ w


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean())


def retrieval(query: torch.Tensor, keys: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k by cosine: row i of `query` [n, d] should find row i of `keys` [n, d]."""
    q = torch.nn.functional.normalize(query.double(), dim=-1)
    k = torch.nn.functional.normalize(keys.double(), dim=-1)
    sims = q @ k.T  # [n, n]
    # Rank of the right key: how many keys score strictly higher (ties count for the item).
    rank = (sims > sims.diagonal().unsqueeze(1)).sum(1)
    return {f"r@{n}": float((rank < n).double().mean()) for n in ks}


def lm_agreement(teacher_lm, teacher_attribute: str, teacher_conds: list[torch.Tensor], student_lm,
                 student_attribute: str, student_conds: list[torch.Tensor], codes: torch.Tensor,
                 cfg_coef: float | None = None, teacher_null: torch.Tensor | None = None,
                 student_null: torch.Tensor | None = None, batch_size: int = 64) -> dict[str, float]:
    """KL(teacher || student) and top-1 agreement of next-token distributions, per valid position.

    Args:
        teacher_lm, student_lm: LMs (the same one when only the conditioner changed).
        teacher_attribute, student_attribute: their text attributes.
        teacher_conds, student_conds: each text's condition [L_i, D] (unpadded).
        codes: [N, K, T] code sequences the LMs read (teacher forcing).
        cfg_coef: with the null conditions, also compare the classifier-free-guided distributions.
        teacher_null, student_null: each side's null condition [L, D] (the empty text's).
    Returns:
        {'kl', 'top1'} and, with CFG, {'kl_cfg', 'top1_cfg'}.
    """
    t = lm_outputs(teacher_lm, teacher_attribute, teacher_conds, codes, batch_size=batch_size)
    s = lm_outputs(student_lm, student_attribute, student_conds, codes, batch_size=batch_size)
    mask = t["mask"]
    result = {"kl": float(next_token_kl(t["logprobs"], s["logprobs"], mask)),
              "top1": float(top1_agreement(t["logprobs"], s["logprobs"], mask))}
    if cfg_coef is not None and teacher_null is not None and student_null is not None:
        n = len(teacher_conds)
        tu = lm_outputs(teacher_lm, teacher_attribute, [teacher_null] * n, codes, batch_size=batch_size)["logprobs"]
        su = lm_outputs(student_lm, student_attribute, [student_null] * n, codes, batch_size=batch_size)["logprobs"]
        # Mixing log-probabilities equals mixing logits up to a per-position constant: same softmax.
        t_cfg = (tu + cfg_coef * (t["logprobs"] - tu)).log_softmax(-1)
        s_cfg = su + cfg_coef * (s["logprobs"] - su)
        result.update(kl_cfg=float(next_token_kl(t_cfg, s_cfg, mask)),
                      top1_cfg=float(top1_agreement(t_cfg, s_cfg, mask)))
    return result


@dataclass
class Side:
    """One encoder / conditioner under comparison.

    `cond` gives the vectors compared (its conditions, or with `raw` its encoder's states); `lm`
    and `attribute` (when known) give the LM metrics.
    """

    label: str
    cond: torch.nn.Module
    lm: torch.nn.Module | None = None
    attribute: str | None = None
    raw: bool = False

    def vectors(self, texts: list[str], batch_size: int) -> torch.Tensor:
        """[n, D] mean over tokens of each text's conditions (or encoder states)."""
        seqs = encoder_states(self.cond, texts, batch_size) if self.raw else conditions(self.cond, texts, batch_size)
        return torch.stack([s.mean(0) for s in seqs])

    def null(self) -> torch.Tensor:
        """The condition of the empty text (classifier-free guidance's null), [L, D]."""
        with torch.no_grad():
            return self.cond(self.cond.tokenize([None]))[0][0].float().cpu()


def load_side(spec: str, device: str = "cpu", teacher: Side | None = None, seed: int = 0,
              pooling: str | None = "none") -> Side:
    """A MusicGen checkpoint (folder / cached hub id) or, failing that, a bare encoder (hub id / folder).

    A bare encoder compared with a MusicGen teacher gets a fresh projection to the teacher's LM
    (seeded), for the LM metrics of the untrained swap. `pooling` applies to bare encoders: 'none'
    (default, token states, as `align` trains them) or a pooling of `HFEncoderConditioner`; None
    takes the encoder family's default.
    """
    from ..models.loaders import LM_FILE, CheckpointError, load_lm_model, resolve_file
    from ..modules.conditioners import HFEncoderConditioner
    from .tasks import text_attribute

    from ..models.musicgen import IN_MEMORY_MODELS, checkpoint_location

    if spec == "default" or spec in IN_MEMORY_MODELS:
        spec = checkpoint_location(spec)  # the names generate takes ('default-zh', 'debug': a clear error)
    try:
        resolve_file(spec, LM_FILE)
    except CheckpointError:
        output_dim = teacher.lm.dim if teacher is not None and teacher.lm is not None else 1
        torch.manual_seed(seed)
        cond = HFEncoderConditioner(spec, output_dim, device=device, pooling=pooling).eval()
        if output_dim == 1:
            return Side(spec, cond, raw=True)
        return Side(f"{spec} (untrained projection)", cond, teacher.lm, teacher.attribute, raw=True)
    lm = load_lm_model(spec, device=device)
    attribute = text_attribute(lm)
    return Side(spec, lm.condition_provider.conditioners[attribute], lm, attribute)


def compare(teacher: Side, students: list[Side], texts: list[str], fit_fraction: float = 0.5, code_steps: int = 16,
            seed: int = 0, cfg_coef: float | None = None, batch_size: int = 64) -> dict:
    """Every metric for each student against the teacher (see the module docstring).

    Returns `{'teacher', 'n_texts', 'n_fit', 'n_eval', 'rows': [{'student', 'space', 'cka', ...}]}`.
    """
    texts = list(dict.fromkeys(t for t in texts if t))
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_fit = int(len(texts) * fit_fraction)
    fit, held = sorted(order[:n_fit]), sorted(order[n_fit:])
    if len(fit) < 2 or len(held) < 5:
        raise ValueError(f"{len(texts)} distinct captions give {len(fit)} to fit the map and {len(held)} to "
                         "evaluate; give at least ~20 captions")
    teacher_vecs = teacher.vectors(texts, batch_size)
    use_lm = teacher.lm is not None
    if use_lm:
        held_texts = [texts[i] for i in held]
        lm = teacher.lm
        codes = random_codes(len(held), lm.num_codebooks, code_steps, lm.card, seed)
        teacher_conds = conditions(teacher.cond, held_texts, batch_size)
        coef = lm.cfg_coef if cfg_coef is None else cfg_coef
    rows = []
    for student in students:
        vecs = student.vectors(texts, batch_size)
        w = least_squares_map(vecs[fit], teacher_vecs[fit])
        mapped = apply_map(vecs[held], w)
        row = {"student": student.label, "space": "encoder" if student.raw else "condition",
               "cka": linear_cka(vecs, teacher_vecs), "cosine": mean_cosine(mapped, teacher_vecs[held]),
               **retrieval(mapped, teacher_vecs[held])}
        if use_lm and student.lm is not None:
            row.update(lm_agreement(lm, teacher.attribute, teacher_conds, student.lm, student.attribute,
                                    conditions(student.cond, held_texts, batch_size), codes, coef, teacher.null(),
                                    student.null(), batch_size))
        rows.append(row)
    return {"teacher": teacher.label, "n_texts": len(texts), "n_fit": len(fit), "n_eval": len(held),
            "cfg_coef": coef if use_lm else None, "rows": rows}


def format_table(result: dict) -> str:
    """The comparison as an aligned text table (KL: lower is better; the others: higher)."""
    header = ["student", "space", *COLUMNS]
    lines = [[_short(row["student"]), row["space"], *(f"{row[c]:.4f}" if c in row else "-" for c in COLUMNS)]
             for row in result["rows"]]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    title = (f"teacher: {result['teacher']} | {result['n_texts']} captions ({result['n_fit']} fit the map, "
             f"{result['n_eval']} evaluated) | KL lower is better, the rest higher")
    return "\n".join([title, fmt.format(*header), *(fmt.format(*line) for line in lines)])


def _short(label: str, width: int = 48) -> str:
    """Long folder paths keep their informative end in the table (the JSON keeps them whole)."""
    return label if len(label) <= width else "..." + label[-(width - 3):]


def write_json(result: dict, path: str | Path, overwrite: bool = False) -> None:
    write_text(path, json.dumps(result, indent=2) + "\n", overwrite=overwrite)


def png_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_png(result: dict, path: str | Path, overwrite: bool = False) -> None:
    """Bar chart of every metric per student (needs matplotlib, an optional dependency)."""
    if not png_available():
        raise RuntimeError("writing a PNG plot needs matplotlib, which is not installed: `pip install matplotlib`, "
                           "or use --json and plot it elsewhere")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in COLUMNS if any(c in row for row in result["rows"])]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.2 * len(shown), 3.2), squeeze=False)
    labels = [row["student"] for row in result["rows"]]
    for ax, column in zip(axes[0], shown):
        ax.bar(range(len(labels)), [row.get(column, float("nan")) for row in result["rows"]],
               color=[f"C{i}" for i in range(len(labels))])
        ax.set_title(column + (" (lower better)" if column.startswith("kl") else ""), fontsize=8)
        ax.set_xticks([])
    fig.legend([plt.Rectangle((0, 0), 1, 1, color=f"C{i}") for i in range(len(labels))], labels,
               loc="lower center", fontsize=7, ncol=1)
    fig.suptitle(f"vs teacher {result['teacher']}", fontsize=9)
    fig.tight_layout(rect=(0, 0.08 + 0.05 * len(labels), 1, 1))
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"), overwrite=overwrite)
    finally:
        plt.close(fig)
