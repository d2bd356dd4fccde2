"""Who may call what: API keys, tenants, the task globs each tenant may use, the admin key.

A keys file (TOML):

    admin_key = "adm-7f3c..."          # admin routes; optional (no admin routes without it)

    [tenants.acme]
    keys = ["ak-acme-1", "ak-acme-2"]  # several keys, so one can be rotated out
    tasks = ["acme_*", "sst2"]         # task names or fnmatch globs

    [tenants.globex]
    keys = ["ak-globex"]
    tasks = ["globex_*"]

Keys are sent as `Authorization: Bearer KEY` (or `X-API-Key: KEY`). Without a keys file
every caller is the local tenant with every task and admin rights (the server then binds
loopback only).
"""

from __future__ import annotations

import fnmatch
import hmac
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AdaptersKitError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


class KeysFileError(AdaptersKitError, ValueError):
    """The keys file is unreadable or malformed."""


@dataclass(frozen=True)
class Tenant:
    name: str
    tasks: tuple[str, ...]
    """Task names or fnmatch globs this tenant may use."""
    admin: bool = False

    def may_use(self, task: str) -> bool:
        return any(fnmatch.fnmatchcase(task, pattern) for pattern in self.tasks)


LOCAL = Tenant(name="local", tasks=("*",), admin=True)


@dataclass
class Tenants:
    """API key -> tenant; `None` keys mean open loopback mode."""

    by_key: dict[str, Tenant] | None = None
    names: list[str] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.by_key is None

    def identify(self, key: str | None) -> Tenant | None:
        """The tenant of `key`, or None (unknown or missing key)."""
        if self.by_key is None:
            return LOCAL
        if not key:
            return None
        found = None
        # compare with every key in constant time, so timing does not tell how much matched
        for known, tenant in self.by_key.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                found = tenant
        return found

    @classmethod
    def load(cls, path: Path | None) -> Tenants:
        if path is None:
            return cls()
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise KeysFileError(f"keys file {path} cannot be read ({e}); it must be TOML like "
                                "the example in the README (section HTTP server)") from e
        problems: list[str] = []
        by_key: dict[str, Tenant] = {}
        unknown = sorted(set(data) - {"admin_key", "tenants"})
        if unknown:
            problems.append(f"unknown top-level entries {unknown}; expected admin_key and "
                            "[tenants.NAME] tables")
        admin_key = data.get("admin_key")
        if admin_key is not None:
            if not isinstance(admin_key, str) or len(admin_key) < 16:
                problems.append("admin_key must be a string of at least 16 characters")
            else:
                by_key[admin_key] = Tenant(name="admin", tasks=("*",), admin=True)
        tenants = data.get("tenants", {})
        if not isinstance(tenants, dict) or not tenants:
            problems.append("no [tenants.NAME] tables; add at least one with keys and tasks")
            tenants = {}
        for name, entry in tenants.items():
            if not isinstance(entry, dict):
                problems.append(f"tenants.{name} must be a table with keys and tasks")
                continue
            keys, tasks = entry.get("keys"), entry.get("tasks")
            extra = sorted(set(entry) - {"keys", "tasks"})
            if extra:
                problems.append(f"tenants.{name} has unknown entries {extra}; only keys and tasks")
            if not (isinstance(keys, list) and keys and all(isinstance(k, str) and len(k) >= 16
                                                             for k in keys)):
                problems.append(f"tenants.{name}.keys must be a non-empty list of strings of at "
                                "least 16 characters")
                continue
            if not (isinstance(tasks, list) and all(isinstance(t, str) and t for t in tasks)):
                problems.append(f"tenants.{name}.tasks must be a list of task names or globs")
                continue
            tenant = Tenant(name=name, tasks=tuple(tasks))
            for k in keys:
                if k in by_key:
                    problems.append(f"key {k[:4]}... of tenants.{name} is also given to "
                                    f"{by_key[k].name}; every key must name one tenant")
                by_key[k] = tenant
        if problems:
            raise KeysFileError(f"keys file {path} refused:\n  " + "\n  ".join(problems))
        return cls(by_key=by_key, names=sorted(tenants))
