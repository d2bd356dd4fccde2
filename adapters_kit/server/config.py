"""The server's settings: one typed dataclass, validated once at start."""

from __future__ import annotations

import ipaddress
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from ..adapters import store_location
from ..devices import device_problem
from ..engine.model import PRECISIONS
from ..errors import AdaptersKitError
from ..training.config import Quantize


class ServeConfigError(AdaptersKitError, ValueError):
    """A server setting is out of range or contradicts another one."""


ENV_PREFIX = "ADAPTERS_KIT_"
"""`ServeConfig.from_env` reads field `x_y` from `ADAPTERS_KIT_X_Y`."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


ServePrecision = Literal["fp32", "bf16", "auto"]
"""The engine's precisions (`engine.model.PRECISIONS`), as a type: the flag's choices."""


@dataclass
class ServeConfig:
    """How the server runs. Each field is also the flag `--field-name` of `adapters-kit serve`
    (its docstring the help) and the variable `ADAPTERS_KIT_FIELD_NAME`: flags over the
    environment over these defaults (`from_env`)."""

    store: Path | str
    """Folder of adapter directories, one per task (the name of the folder is the task's name);
    or an fsspec URL of a remote store (`s3://bucket/prefix`, `gs://...`, `file://...`)."""
    backbone: str = "embedded-distilbert"
    """The base model every adapter in the store was trained on (a name or a model folder)."""
    keys: Path | None = None
    """TOML keys file (tenants, their API keys and tasks, the admin key). Without it the server
    binds loopback only and every local caller may use every task and the admin routes."""
    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback needs a keys file."""
    port: int = 8000
    """TCP port to bind (0: any free port)."""
    max_body_bytes: int = 1 << 20
    """Largest request body accepted; a larger one gets 413 before it is parsed."""
    max_inputs: int = 64
    """Most inputs in one predict request; more gets 413."""
    max_chars: int = 20_000
    """Most characters in one input (all its texts together); more gets 422."""
    max_request_rows: int = 256
    """Most model rows one request may expand to: a long QA context becomes several windows of
    max_length word pieces, so characters alone do not bound the cost. More gets 413."""
    queue_inputs: int = 1024
    """Most inputs waiting for the engine across all requests; a request that does not fit
    gets 429 with Retry-After, so memory stays bounded under any load."""
    batch_tokens: int = 4096
    """Token budget of one engine batch (rows x longest row, padding included)."""
    max_batch_rows: int = 64
    """Most rows in one forward pass, whatever their length."""
    max_wait_ms: float = 5.0
    """How long the batcher waits for more requests once it holds one, before it runs."""
    deadline_s: float = 10.0
    """Per-request deadline from arrival; a request not answered by then gets 504."""
    retry_after_s: int = 1
    """Seconds sent in Retry-After with a 429."""
    cache_bytes: int = 512 << 20
    """Budget of what the engine holds for resident adapters (bank rows, their padding, heads);
    least recently used adapters are unloaded beyond it."""
    torch_threads: int = 0
    """Intra-op threads of the engine thread; 0: every core (on Ray: cores / replicas). The
    HTTP side needs little (a profile under load put the engine thread at 95% of the server's
    samples), and on the 2-core machine 2 threads served 1.43x the requests of 1."""
    precision: ServePrecision = "fp32"
    """The engine's matmul precision: fp32 (matches plain peft within 1e-5), bf16 (autocast;
    about 2x faster matmuls on CPUs with bf16 units, outputs move by bf16 rounding), or auto
    (bf16 on a GPU that runs it natively, else fp32)."""
    device: str = "auto"
    """Where the engine runs: auto (a GPU when one is visible, else the CPU), cpu, cuda or
    cuda:N. Only the name is checked here; the engine checks the GPU is there when it starts
    (on Ray, on the replica's machine)."""
    quantize: Quantize | None = None
    """Serve on a bitsandbytes base: `8bit` or `4bit` (NF4), or None for the full-precision base
    (README, "Quantized bases"). Adapters of either base load, with a logged note across bases."""
    capacity: int = 16
    """Initial adapter slots in the engine (it grows as needed)."""
    shutdown_grace_s: float = 30.0
    """On SIGTERM/SIGINT: how long in-flight requests may take to finish before the exit."""
    store_poll_s: float = 2.0
    """A remote store: how often the pointers of resident tasks are polled (a new version is
    served within about this long) and how long a pointer read is trusted."""
    store_cache: Path | None = None
    """A remote store: the local cache folder of fetched versions (default: the adapters_kit
    cache's `objects`)."""
    store_cache_bytes: int = 2 << 30
    """A remote store: the local cache's bound in bytes (least recently used versions go)."""
    # -- fair sharing (issue 15) --
    tenant_queue_inputs: int = 0
    """Most inputs one tenant may have waiting: its share of `queue_inputs`; past it that tenant
    alone gets 429 with Retry-After. 0: `queue_inputs` split evenly over the keys file's
    tenants (the admin key counts as one); the whole queue without a keys file."""
    tenant_rate: float = 0.0
    """Most predict requests a second per tenant (bursts of one second's worth); over it, 429
    with Retry-After. 0: no rate limit."""
    metrics_tasks: int = 32
    """Most tasks named in the per-task metrics; the others are counted as task="other"."""
    # -- training jobs (issue 15) --
    jobs: bool = False
    """Take training jobs (POST /v1/jobs) and run a trainer worker process beside the server."""
    jobs_dir: Path | None = None
    """The local folder of the job table, uploads and work in progress (default: `STORE/.jobs`
    for a folder store, `<adapters_kit cache>/jobs/<hash of the URL>` for a remote one)."""
    job_threads: int = 1
    """torch threads of the trainer worker; with `torch_threads` 0 the engine gets the rest."""
    job_lanes: int = 1
    """`train_many` lanes of the worker: groups of a run's jobs trained side by side, the
    `job_threads` divided between them (with dropout on, such a run is not bit-repeatable)."""
    job_max_bytes: int = 32 << 20
    """Largest upload of a job's labelled file; a larger one gets 413."""
    job_max_rows: int = 200_000
    """Most rows in a job's file; more gets 422."""
    tenant_queued_jobs: int = 8
    """Most queued jobs per tenant; more gets 429."""
    tenant_running_jobs: int = 2
    """Most jobs of one tenant training at once (the others wait in the queue)."""
    job_group_rows: int = 20_000
    """Most training rows the worker trains together in one run."""
    job_group_tasks: int = 8
    """Most jobs the worker trains together in one run."""

    def __post_init__(self) -> None:
        self.store = store_location(self.store)  # a URL stays a string; a folder, a Path
        remote = isinstance(self.store, str)
        if self.store_cache is not None:
            self.store_cache = Path(self.store_cache)
        if self.keys is not None:
            self.keys = Path(self.keys)
        if self.jobs_dir is not None:
            self.jobs_dir = Path(self.jobs_dir)
        problems = []
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {sorted(PRECISIONS)}; "
                            "pass --precision fp32 (exact), bf16 (faster) or auto (per device)")
        bad_device = device_problem(self.device)
        if bad_device:
            problems.append(f"{bad_device}; pass --device auto, cpu, cuda or cuda:N")
        if self.quantize not in (None, "8bit", "4bit"):
            problems.append(f"quantize {self.quantize!r} is not 8bit or 4bit; pass --quantize "
                            "8bit|4bit, or leave it out for the full-precision base")
        elif self.quantize is not None and self.precision not in ("fp32", "auto"):
            problems.append(f"precision {self.precision!r} with quantize {self.quantize!r}: a "
                            "quantized base's kernels set their own compute type; use fp32")
        if not remote and not self.store.is_dir():
            problems.append(f"store {self.store} is not a directory; pass --store DIR holding "
                            "adapter directories (adapters-kit train ... --out DIR/TASK)")
        if self.keys is not None and not self.keys.is_file():
            problems.append(f"keys file {self.keys} does not exist; pass --keys FILE.toml or "
                            "leave it out to serve loopback only")
        if self.keys is None and not is_loopback(self.host):
            problems.append(f"host {self.host!r} is not loopback, and without a keys file anyone "
                            "who reaches it could use every task; pass --keys FILE.toml or bind "
                            "127.0.0.1")
        if not 0 <= self.port <= 65535:
            problems.append(f"port {self.port} is not in 0..65535")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "port" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if value < 0 or (value == 0 and f.name not in _ZERO_MEANS):
                problems.append(f"{f.name} must be > 0, got {value}")
        if self.job_lanes > self.job_threads:
            problems.append(f"job_lanes {self.job_lanes} exceeds job_threads {self.job_threads}: "
                            "each lane trains on a thread of its own; raise job_threads or "
                            "lower job_lanes")
        if self.max_inputs > self.queue_inputs:
            problems.append(f"max_inputs {self.max_inputs} exceeds queue_inputs "
                            f"{self.queue_inputs}: such a request could never be queued")
        if problems:
            raise ServeConfigError("server settings refused:\n  " + "\n  ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> ServeConfig:
        """Settings from `ADAPTERS_KIT_<FIELD>` variables (e.g. `ADAPTERS_KIT_MAX_INPUTS=32`),
        under `overrides` (the command line's flags; None means not given), over the defaults.

        Every value is parsed as its field's type and validated as any ServeConfig is; a
        message about a value from the environment names its variable.
        """
        environ = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values, problems, named = {}, [], {}
        for f in fields(cls):
            var = ENV_PREFIX + f.name.upper()
            if var in environ:
                named[f.name] = var
                try:
                    values[f.name] = _parse(environ[var], hints[f.name])
                except ValueError as e:
                    problems.append(f"{var}={environ[var]!r} is not {e}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "store" not in values and not problems:
            problems.append(f"no store: pass --store DIR or set {ENV_PREFIX}STORE")
        if problems:
            raise ServeConfigError("server settings refused:\n  " + "\n  ".join(problems))
        try:
            return cls(**values)
        except ServeConfigError as e:
            from_env = [f"{v} (sets {k})" for k, v in named.items() if k not in overrides
                        or overrides[k] is None]
            if not from_env:
                raise
            raise ServeConfigError(f"{e}\n  set from the environment: {', '.join(from_env)}") from None

    def engine_threads(self, replicas: int = 1) -> int:
        """The torch threads of one engine: `torch_threads`, or its share of the cores (less
        the trainer worker's threads when it runs beside the engine)."""
        worker = self.job_threads if self.jobs else 0
        return self.torch_threads or max(1, ((os.cpu_count() or 1) - worker) // replicas)


_ZERO_MEANS = {"torch_threads", "tenant_queue_inputs", "tenant_rate"}
"""Fields whose 0 means 'automatic' or 'off' rather than a bad value."""


def _parse(text: str, hint):
    """`text` as a value of the (simple) field type `hint`; ValueError says what was expected."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None: empty means None
        if text.strip() == "":
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError("an integer") from None
    if hint is float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError("a number") from None
        if not math.isfinite(value):
            raise ValueError("a finite number")
        return value
    if hint is bool:
        value = text.strip().lower()
        if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError("true or false (1/0, yes/no, on/off)")
        return value in ("1", "true", "yes", "on")
    if hint is Path:
        if not text.strip():
            raise ValueError("a path")
        return Path(text)
    return text
