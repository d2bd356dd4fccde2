"""The serving engine: one frozen base, many resident adapters in LoRA banks (`lora_bank`),
batches that mix tasks (`model`), a byte-budgeted cache over a store (`cache`), and scoring an
adapter through it (`evaluation`). `adapters_kit.serving` gathers its public names."""
