"""Backbones: loading DistilBERT and ALBERT, the embedded default, LoRA presets, fingerprints.

Every adapter names a *base folder*: a local `transformers` model folder from which
`AutoModelForSequenceClassification.from_pretrained(folder, num_labels=n)` rebuilds the exact
frozen base, head modules included. For the embedded backbones that is the converted folder.
For a hub name or a user's folder it is a copy written once into the cache, because the
head's dense layer (DistilBERT's `pre_classifier`, ALBERT's pooler when the checkpoint lacks
one) would otherwise be initialised at random on every load, and no adapter could be
reproduced by plain peft.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .._quiet import quiet_transformers
from ..errors import BackboneError
from ..files import atomic_directory, recover_directory
from .embedded import BASE_INFO, EMBEDDED, cache_root, embedded_dir
from .made import read_registry, student_dir

DEFAULT_BACKBONE = "embedded-distilbert"
SUPPORTED_ARCHS = ("distilbert", "albert")

# LoRA target presets per architecture, by module-name suffix (peft's matching rule).
TARGET_PRESETS: dict[str, dict[str, list[str]]] = {
    "distilbert": {
        "qv": ["q_lin", "v_lin"],
        "attention": ["q_lin", "k_lin", "v_lin", "out_lin"],
        "all-linear": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    },
    "albert": {
        "qv": ["query", "value"],
        "attention": ["query", "key", "value", "dense"],
        "all-linear": ["query", "key", "value", "dense", "ffn", "ffn_output"],
    },
}
# The dense layer between the encoder and the classifier. It stays frozen in the base and
# gets a LoRA update, so an adapter never carries a dim x dim matrix (see README, "Small files").
HEAD_DENSE_PATH = {"distilbert": "pre_classifier", "albert": "albert.pooler"}
HEAD_DENSE = {arch: path.rsplit(".", 1)[-1] for arch, path in HEAD_DENSE_PATH.items()}  # peft suffix
# The transformers heads' output layers: a task owns one of them (its kind says which), and a
# base never does (they are dropped from the cached base, see `Backbone.head_dir`).
HEAD_OUT = "classifier"
SPAN_OUT = "qa_outputs"  # the start/end layer of AutoModelForQuestionAnswering
OUTPUT_LAYERS = (HEAD_OUT, SPAN_OUT)


def target_modules(arch: str, preset: str | list[str], head: str = "lora",
                   pooled: bool = True) -> list[str]:
    """Module-name suffixes that get LoRA for `preset`.

    A `pooled` head (the sequence kinds: the first token through the head's dense layer) with
    `head == "lora"` (the small-file design): the head's dense layer and the classifier get
    LoRA too. The classifier's base is zero (see `Backbone.head_dir`), so its
    LoRA product *is* the task classifier, and no dim x dim matrix is ever saved.

    Token-level kinds (NER, QA) have no dense layer in their head, and their output layer
    (labels x dim, a few KB) is trained and saved whole, bias included: a bias-free low-rank
    output layer cannot learn the strong prior of the `O` tag, and training stalls.
    """
    if isinstance(preset, str):
        presets = TARGET_PRESETS[arch]
        if preset not in presets:
            raise BackboneError(
                f"unknown target preset {preset!r} for {arch}; choose one of {sorted(presets)}"
            )
        names = list(presets[preset])
    else:
        names = list(preset)
    if head == "lora" and pooled:
        names += [m for m in (HEAD_DENSE[arch], HEAD_OUT) if m not in names]
    return names


@quiet_transformers()
def _arch_of(name_or_path: str | Path) -> str:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:
        raise BackboneError(
            f"cannot load backbone {str(name_or_path)!r}: {e}. Give an embedded backbone "
            f"({', '.join(EMBEDDED)}), a hub name such as distilbert-base-uncased or "
            "albert-base-v2 (needs the hub), or a local model folder."
        ) from e
    if config.model_type not in SUPPORTED_ARCHS:
        raise BackboneError(
            f"backbone {str(name_or_path)!r} is a {config.model_type!r} model; adapters_kit "
            f"supports {' and '.join(SUPPORTED_ARCHS)} (e.g. distilbert-base-uncased, "
            f"albert-base-v2, or {', '.join(EMBEDDED)})"
        )
    return config.model_type


def _hidden_size(config: dict) -> int:
    return config.get("dim") or config["hidden_size"]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", name).strip("-")[:80]


@quiet_transformers()
def _materialise(name_or_path: str) -> Path:
    """Copy a hub or local backbone into a base folder with a deterministic head dense layer."""
    from transformers import AutoModelForSequenceClassification

    path = Path(name_or_path).expanduser()
    if (path / BASE_INFO).exists():
        return path  # already a base folder (ours, or a copy of one)
    arch = _arch_of(name_or_path)
    key = hashlib.sha256(str(path.resolve() if path.exists() else name_or_path).encode()).hexdigest()
    parent = cache_root() / "bases"
    target = parent / f"{_slug(name_or_path)}-{key[:12]}"
    if (target / BASE_INFO).exists():
        return target
    recover_directory(parent)
    model, info = AutoModelForSequenceClassification.from_pretrained(
        str(name_or_path), num_labels=2, output_loading_info=True
    )
    dense_name = HEAD_DENSE_PATH[arch]
    dense = model.get_submodule(dense_name)
    missing = set(info.get("missing_keys", []))
    if f"{dense_name}.weight" in missing:
        with torch.no_grad():
            dense.weight.copy_(torch.eye(dense.weight.shape[0], dense.weight.shape[1]))
            dense.bias.zero_()
    try:
        with atomic_directory(target) as tmp:
            state = {k: v.contiguous() for k, v in model.state_dict().items()
                     if not k.startswith(tuple(m + "." for m in OUTPUT_LAYERS))}
            save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
            model.config.save_pretrained(tmp)
            try:
                from transformers import AutoTokenizer

                AutoTokenizer.from_pretrained(str(name_or_path)).save_pretrained(tmp)
            except (OSError, ValueError) as e:
                raise BackboneError(f"backbone {name_or_path!r} has no loadable tokenizer: {e}") from e
            (tmp / BASE_INFO).write_text(json.dumps(
                {"name": name_or_path, "description": f"{arch} from {name_or_path}",
                 "head_dense_initialised": f"{dense_name}.weight" in missing}, indent=2))
    except FileExistsError:
        if not (target / BASE_INFO).exists():
            raise
    return target


def base_dir(name: str | Path) -> Path:
    """The local base folder for a backbone name (embedded, a made student, hub or local path)."""
    name = str(name)
    if name in EMBEDDED:
        return embedded_dir(name)
    if name.startswith("embedded-"):
        raise BackboneError(f"unknown embedded backbone {name!r}; choose one of {sorted(EMBEDDED)}")
    student = student_dir(name)
    return student if student is not None else _materialise(name)


def fingerprint(model: torch.nn.Module) -> str:
    """A sha256 over the base's config and every base tensor (the task classifier excluded)."""
    config = model.config
    h = hashlib.sha256()
    keys = ("model_type", "vocab_size", "dim", "n_layers", "hidden_size", "num_hidden_layers",
            "num_hidden_groups", "embedding_size", "intermediate_size", "hidden_dim")
    h.update(json.dumps({k: getattr(config, k, None) for k in keys}, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(tuple(m + "." for m in OUTPUT_LAYERS)) or ".lora_" in name or \
                "modules_to_save" in name:
            continue
        name = name.replace("base_model.model.", "").replace(".base_layer", "")
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class Backbone:
    """A resolved backbone: its base folder, architecture, tokenizer and description."""

    name: str
    path: Path
    arch: str
    description: str

    @classmethod
    def resolve(cls, name: str | Path = DEFAULT_BACKBONE) -> Backbone:
        path = base_dir(name)
        arch = _arch_of(path)
        info = json.loads((path / BASE_INFO).read_text()) if (path / BASE_INFO).exists() else {}
        return cls(name=str(name), path=path, arch=arch,
                   description=info.get("description", f"{arch} from {name}"))

    @quiet_transformers()
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path))

    def head_dir(self, num_labels: int, head: str = HEAD_OUT) -> Path:
        """The base folder for tasks with `num_labels` outputs: the backbone plus a zero output
        layer (`classifier`, or `qa_outputs` for extractive QA).

        A task's output layer is then exactly its adapter's LoRA product, and
        `AutoModelFor...from_pretrained(head_dir, num_labels=n)` rebuilds the whole base
        deterministically. The encoder weights are hard-linked, not copied.
        """
        target = self.path / "heads" / (f"labels-{num_labels}" if head == HEAD_OUT
                                         else f"{head}-{num_labels}")
        if (target / BASE_INFO).exists():
            return target
        from safetensors import safe_open

        with safe_open(str(self.path / "model.safetensors"), "pt") as f:
            names = list(f.keys())
        hidden = _hidden_size(json.loads((self.path / "config.json").read_text()))
        try:
            with atomic_directory(target) as tmp:
                shard1, shard2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
                try:
                    os.link(self.path / "model.safetensors", tmp / shard1)
                except OSError:
                    shutil.copyfile(self.path / "model.safetensors", tmp / shard1)
                save_file({f"{head}.weight": torch.zeros(num_labels, hidden),
                           f"{head}.bias": torch.zeros(num_labels)}, str(tmp / shard2),
                          metadata={"format": "pt"})
                weight_map = {n: shard1 for n in names}
                weight_map.update({f"{head}.weight": shard2, f"{head}.bias": shard2})
                (tmp / "model.safetensors.index.json").write_text(
                    json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
                config = json.loads((self.path / "config.json").read_text())
                config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
                config["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
                (tmp / "config.json").write_text(json.dumps(config, indent=2))
                for f in self.path.iterdir():
                    if f.is_file() and f.name not in ("model.safetensors", "config.json"):
                        shutil.copyfile(f, tmp / f.name)
        except FileExistsError:
            if not (target / BASE_INFO).exists():
                raise
        return target

    @quiet_transformers()
    def load_model(self, num_labels: int, problem_type: str | None = None,
                   auto_class: str = "AutoModelForSequenceClassification",
                   head: str = HEAD_OUT, quantize=None) -> torch.nn.Module:
        """The base with a transformers head (`auto_class`, whose output layer is `head`),
        exactly as plain peft users load it. A task's kind knows which: `Kind.load_model`.

        `quantize`: a `quantize.Quantization` (or "8bit"/"4bit") for a bitsandbytes base."""
        import transformers

        from .quantize import Quantization

        cls = getattr(transformers, auto_class)
        kwargs = {"problem_type": problem_type} if problem_type else {}
        quant = Quantization.of(quantize)
        if quant is not None:
            kwargs.update(quant.load_kwargs())
        with warnings.catch_warnings():  # the shared base folder holds the other kinds' layers
            warnings.filterwarnings("ignore", message=".*were not used when initializing.*")
            model = cls.from_pretrained(str(self.head_dir(num_labels, head)),
                                        num_labels=num_labels, **kwargs)
        if quant is not None:
            quant.finish(model)
            model._adapters_kit_quantization = quant
        return model.eval()

    def fingerprint(self) -> str:
        """The fingerprint every adapter of this base carries, whatever its task kind: taken
        over the sequence-classification model (encoder and head dense layer)."""
        return fingerprint(self.load_model(1))


def describe_backbones() -> list[dict]:
    """The embedded backbones with their trade-off, then the made students, for `adapters-kit
    backbones` and the README."""
    made = [{"name": n, "description": f"{r.get('style')} student of {r.get('teacher')} ({r['path']})"}
            for n, r in sorted(read_registry().items())]
    return [{"name": n, "description": d} for n, d in EMBEDDED.items()] + made
