"""Compact student backbones built from a teacher's real weights.

    report = make_student("mini-3", "embedded-distilbert", layers=3)          # DistilBERT's way
    report = make_student("shared-128", "embedded-distilbert", share_layers=True,
                          embedding_size=128)                                  # ALBERT's way

DistilBERT's way keeps evenly spaced layers of the teacher, every other one for half the depth
(layers 0, 2, 4 of six), as DistilBERT was initialised from BERT; every tensor is the teacher's.

ALBERT's way writes an ALBERT model with one layer shared at every depth (its parameters are
flat in depth), initialised from the teacher's middle layer, and factorised embeddings: the
teacher's word embeddings W [V, H] are cut by a truncated SVD, W ~ U_E S_E V_E^T, so the word
embeddings are W V_E = U_E S_E [V, E] and positions are projected with V_E too. ALBERT's
LayerNorm sits before its E->H mapping (the teacher's is after the sum, in H), so the
mapping is fitted by least squares to give the teacher's normalised embeddings back from the
student's (`mapping_fit` in the folder's info reports how close it comes).

A student is a complete local backbone folder registered under its name (`made`): it trains,
serves and compares as any backbone does, and its fingerprint is its own. Nothing here trains:
general distillation lives in `training.general_distill`.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import BackboneError
from ..files import atomic_directory, recover_directory
from .embedded import BASE_INFO, cache_root
from .loading import DEFAULT_BACKBONE, Backbone, fingerprint
from .made import check_name, read_registry, register

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "spiece.model")
DEFAULT_EMBEDDING = 128
_DB_TO_ALBERT = {"attention.q_lin": "attention.query", "attention.k_lin": "attention.key",
                 "attention.v_lin": "attention.value", "attention.out_lin": "attention.dense",
                 "sa_layer_norm": "attention.LayerNorm", "ffn.lin1": "ffn", "ffn.lin2": "ffn_output",
                 "output_layer_norm": "full_layer_layer_norm"}


@dataclass
class StudentReport:
    """A made student: where it is, how it was made, and its size against its teacher's."""

    name: str
    path: str
    teacher: str
    style: str
    """`layers` (DistilBERT's way) or `shared` (ALBERT's way)."""
    teacher_layers: list[int]
    """The teacher layers the student's layers were copied from (one, shared, for `shared`)."""
    depth: int
    embedding_size: int
    params: int
    disk_bytes: int
    memory_bytes: int
    teacher_params: int
    teacher_disk_bytes: int
    teacher_memory_bytes: int
    fingerprint: str
    mapping_fit: float | None = None
    """`shared`: relative error of the fitted embedding mapping against the teacher's."""

    def to_dict(self) -> dict:
        out = asdict(self)
        for k in ("params", "disk_bytes", "memory_bytes"):
            out[f"{k}_ratio"] = round(out[k] / max(1, out[f"teacher_{k}"]), 4)
        return out

    def summary(self) -> str:
        d = self.to_dict()
        return (f"{self.name}: {self.style} student of {self.teacher} at {self.path}\n"
                f"  depth {self.depth} (teacher layers {self.teacher_layers}), embedding size "
                f"{self.embedding_size}\n"
                f"  parameters {self.params / 1e6:.2f}M ({d['params_ratio']:.2f}x the teacher's "
                f"{self.teacher_params / 1e6:.2f}M); on disk {self.disk_bytes / 1e6:.1f} MB "
                f"({d['disk_bytes_ratio']:.2f}x); base in memory {self.memory_bytes / 1e6:.1f} MB "
                f"({d['memory_bytes_ratio']:.2f}x)")


def evenly_spaced(depth: int, keep: int) -> list[int]:
    """`keep` of `depth` layer indices, evenly spaced from the first: every other one at half."""
    return [round(i * depth / keep) for i in range(keep)]


def make_student(name: str, teacher: str = DEFAULT_BACKBONE, *, layers: int | None = None,
                 share_layers: bool = False, embedding_size: int | None = None,
                 shared_layer: int | None = None, out: str | Path | None = None,
                 overwrite: bool = False) -> StudentReport:
    """Write a student backbone folder built from `teacher`'s weights and register it as `name`.

    `layers`: keep that many of the teacher's layers (DistilBERT's way). `share_layers`: one
    ALBERT layer shared at every depth (the teacher's depth, or `layers`), initialised from
    teacher layer `shared_layer` (default: the middle one, depth // 2), with embeddings of
    size `embedding_size` (default 128) from a truncated SVD. `out`: the folder (default: in
    the cache). A name already made is refused unless `overwrite`.
    """
    check_name(name)
    if not share_layers and layers is None:
        raise BackboneError("say how to make the student: layers=N (keep N of the teacher's "
                            "layers, CLI --layers N) or share_layers=True (CLI --share-layers)")
    if embedding_size is not None and not share_layers:
        raise BackboneError(f"embedding_size={embedding_size!r} needs share_layers=True "
                            "(--share-layers): DistilBERT-style students keep the teacher's")
    if name in read_registry() and not overwrite:
        raise BackboneError(f"a student named {name!r} is already made "
                            f"({read_registry()[name]['path']}); choose another name or pass "
                            "overwrite=True (--overwrite)")
    tb = Backbone.resolve(teacher)
    config = json.loads((tb.path / "config.json").read_text())
    state = load_file(str(tb.path / "model.safetensors"))
    depth = config.get("n_layers") or config["num_hidden_layers"]
    for what, value in (("layers", layers), ("embedding_size", embedding_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise BackboneError(f"{what}={value!r} must be a whole number of at least 1")
    if layers is not None and layers > depth:
        raise BackboneError(f"layers={layers} is more than teacher {teacher!r} has ({depth}); "
                            f"give --layers between 1 and {depth}")
    if share_layers:
        if tb.arch != "distilbert":
            raise BackboneError(f"share_layers builds from a DistilBERT-architecture teacher; "
                                f"{teacher!r} is {tb.arch} (use embedded-distilbert, which holds "
                                "the same weights as embedded-albert)")
        hidden = config["dim"]
        e = embedding_size or min(DEFAULT_EMBEDDING, hidden)
        if e > hidden:
            raise BackboneError(f"embedding_size={e} is more than the teacher's hidden size "
                                f"{hidden}; give at most {hidden}")
        pick = depth // 2 if shared_layer is None else shared_layer
        if not 0 <= pick < depth:
            raise BackboneError(f"shared_layer={pick!r} is not a layer of the teacher (0 to {depth - 1})")
        new_state, new_config, fit = _shared(state, config, layers or depth, pick, e)
        kept, style = [pick], "shared"
    else:
        kept = evenly_spaced(depth, layers)
        new_state, new_config = _kept(state, config, tb.arch, kept)
        e, fit, style = config.get("embedding_size") or config.get("dim") or config["hidden_size"], None, \
            "layers"
    target = Path(out).expanduser() if out else cache_root() / "students" / name
    recover_directory(target.parent)
    description = (f"{style} student of {teacher}: " + (
        f"{len(kept)} of its {depth} layers ({kept})" if style == "layers" else
        f"one shared layer (teacher layer {pick}) at depth {layers or depth}, embeddings {e}"))
    info = {"name": name, "description": description,
            "student": {"teacher": teacher, "teacher_fingerprint": tb.fingerprint(), "style": style,
                        "teacher_layers": kept, "embedding_size": e, "mapping_fit": fit,
                        "general_distillation": None}}
    with atomic_directory(target, overwrite=overwrite) as tmp:
        save_file({k: v.contiguous().clone() for k, v in new_state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(new_config, indent=2))
        for f in TOKENIZER_FILES:
            if (tb.path / f).exists():
                shutil.copyfile(tb.path / f, tmp / f)
        (tmp / BASE_INFO).write_text(json.dumps(info, indent=2))
    register(name, {"path": str(target.resolve()), "teacher": teacher, "style": style})
    return report(name)


def report(name: str) -> StudentReport:
    """The size report of made student `name` against its teacher."""
    student = Backbone.resolve(name)
    info = json.loads((student.path / BASE_INFO).read_text())["student"]
    teacher = Backbone.resolve(info["teacher"])
    s_model, t_model = student.load_model(1), teacher.load_model(1)
    cfg = s_model.config
    return StudentReport(
        name=name, path=str(student.path), teacher=info["teacher"], style=info["style"],
        teacher_layers=info["teacher_layers"],
        depth=getattr(cfg, "n_layers", None) or cfg.num_hidden_layers,
        embedding_size=info["embedding_size"], params=base_params(s_model),
        disk_bytes=disk_bytes(student.path), memory_bytes=memory_bytes(s_model),
        teacher_params=base_params(t_model), teacher_disk_bytes=disk_bytes(teacher.path),
        teacher_memory_bytes=memory_bytes(t_model), fingerprint=fingerprint(s_model),
        mapping_fit=info.get("mapping_fit"))


def base_params(model: torch.nn.Module) -> int:
    """Parameters of a base (the task's zero output layer left out), shared ones counted once."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("classifier."))


def memory_bytes(model: torch.nn.Module) -> int:
    """Bytes of a base's tensors as held (shared storage counted once)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        key = (str(t.device), t.untyped_storage().data_ptr())
        if t.numel() and key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def disk_bytes(folder: Path) -> int:
    """The weights file of a base folder."""
    return (Path(folder) / "model.safetensors").stat().st_size


def _kept(state: dict, config: dict, arch: str, kept: list[int]) -> tuple[dict, dict]:
    """The teacher with only layers `kept`, renumbered 0.. (DistilBERT's way)."""
    if arch == "distilbert":
        prefix, depth_keys = "distilbert.transformer.layer.", ("n_layers",)
    else:
        if config["num_hidden_groups"] not in (1, config["num_hidden_layers"]):
            raise BackboneError("an ALBERT teacher with groups spanning several layers cannot be "
                                "cut by layer; use a DistilBERT teacher or one group per layer")
        prefix, depth_keys = "albert.encoder.albert_layer_groups.", ("num_hidden_layers",)
        if config["num_hidden_groups"] != 1:
            depth_keys += ("num_hidden_groups",)
    out = {k: v for k, v in state.items() if not k.startswith(prefix)}
    if arch == "albert" and config["num_hidden_groups"] == 1:  # the one shared group stays
        out.update({k: v for k, v in state.items() if k.startswith(prefix)})
    else:
        for new, old in enumerate(kept):
            src = f"{prefix}{old}."
            out.update({f"{prefix}{new}.{k[len(src):]}": v for k, v in state.items()
                        if k.startswith(src)})
    return out, {**config, **dict.fromkeys(depth_keys, len(kept))}


def _shared(state: dict, config: dict, depth: int, pick: int, e: int) -> tuple[dict, dict, float]:
    """An ALBERT state and config: one shared layer from teacher layer `pick`, embeddings of size
    `e` from the SVD of the teacher's word embeddings; and the mapping's relative fit error."""
    word = state["distilbert.embeddings.word_embeddings.weight"].double()  # [V, H]
    pos = state["distilbert.embeddings.position_embeddings.weight"].double()  # [P, H]
    gamma = state["distilbert.embeddings.LayerNorm.weight"].double()
    beta = state["distilbert.embeddings.LayerNorm.bias"].double()
    hidden = word.shape[1]
    _, _, vh = torch.linalg.svd(word, full_matrices=False)
    v_e = vh[:e].T  # [H, E]: the top-E right singular vectors
    word_e, pos_e = word @ v_e, pos @ v_e  # word_e == U_E S_E
    eps = 1e-12
    mapping, bias, fit = _fit_mapping(word, pos, word_e, pos_e, gamma, beta, eps)
    out = {"albert.embeddings.word_embeddings.weight": word_e.float(),
           "albert.embeddings.position_embeddings.weight": pos_e.float(),
           # DistilBERT has no token types (the embedded conversion folded row 0 into positions)
           "albert.embeddings.token_type_embeddings.weight": torch.zeros(2, e),
           "albert.embeddings.LayerNorm.weight": torch.ones(e),
           "albert.embeddings.LayerNorm.bias": torch.zeros(e),
           "albert.encoder.embedding_hidden_mapping_in.weight": mapping.float(),  # [H, E]
           "albert.encoder.embedding_hidden_mapping_in.bias": bias.float(),
           # the head's dense layer: the teacher's (a pass-through in the embedded backbone)
           "albert.pooler.weight": state["pre_classifier.weight"],
           "albert.pooler.bias": state["pre_classifier.bias"]}
    src = f"distilbert.transformer.layer.{pick}."
    for k, v in state.items():
        if k.startswith(src):
            module, kind = k[len(src):].rsplit(".", 1)
            out[f"albert.encoder.albert_layer_groups.0.albert_layers.0.{_DB_TO_ALBERT[module]}.{kind}"] = v
    new_config = {
        "vocab_size": config["vocab_size"], "max_position_embeddings": config["max_position_embeddings"],
        "pad_token_id": config.get("pad_token_id", 0), "model_type": "albert",
        "architectures": ["AlbertForSequenceClassification"], "embedding_size": e,
        "hidden_size": hidden, "num_hidden_layers": depth, "num_hidden_groups": 1,
        "inner_group_num": 1, "num_attention_heads": config["n_heads"],
        "intermediate_size": config["hidden_dim"], "hidden_act": config["activation"],
        "hidden_dropout_prob": config["dropout"],
        "attention_probs_dropout_prob": config["attention_dropout"], "classifier_dropout_prob": 0.1,
        "type_vocab_size": 2, "layer_norm_eps": eps, "bos_token_id": None, "eos_token_id": None}
    return out, new_config, fit


def _fit_mapping(word, pos, word_e, pos_e, gamma, beta, eps, samples: int = 40000, seed: int = 0):
    """The E->H mapping (weight [H, E], bias [H]) that best turns the student's normalised
    embeddings into the teacher's, by least squares over sampled (token, position) pairs."""
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, word.shape[0], (samples,), generator=g)
    at = torch.randint(0, min(pos.shape[0], 128), (samples,), generator=g)  # where texts sit

    def norm(x):
        x = x - x.mean(-1, keepdim=True)
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    teacher = norm(word[tok] + pos[at]) * gamma + beta  # [S, H]
    student = norm(word_e[tok] + pos_e[at])  # [S, E]: ALBERT's LayerNorm, weight 1, bias 0
    x = torch.cat([student, torch.ones(samples, 1, dtype=student.dtype)], 1)
    sol = torch.linalg.lstsq(x, teacher).solution  # [E + 1, H]
    err = (x @ sol - teacher).norm() / teacher.norm()
    return sol[:-1].T.contiguous(), sol[-1].contiguous(), round(float(err), 4) if math.isfinite(err) else None
