"""Backbones: loading DistilBERT and ALBERT by hub name or folder, the embedded default (the
converted all-MiniLM-L6-v2), LoRA target presets, the base fingerprint, and the encoder as the
heads read it (`encoder`); compact students made from a teacher's weights (`students`, registered
by name in `made`). Nothing here knows about tasks."""

from .loading import (
    DEFAULT_BACKBONE,
    EMBEDDED,
    HEAD_DENSE,
    HEAD_DENSE_PATH,
    HEAD_OUT,
    OUTPUT_LAYERS,
    SPAN_OUT,
    TARGET_PRESETS,
    Backbone,
    base_dir,
    describe_backbones,
    fingerprint,
    target_modules,
)
from .students import StudentReport, make_student

__all__ = ["DEFAULT_BACKBONE", "EMBEDDED", "HEAD_DENSE", "HEAD_DENSE_PATH", "HEAD_OUT",
           "OUTPUT_LAYERS", "SPAN_OUT", "TARGET_PRESETS", "Backbone", "base_dir",
           "StudentReport", "describe_backbones", "fingerprint", "make_student", "target_modules"]
