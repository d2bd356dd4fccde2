"""Server settings from the environment, under the command's flags."""

from __future__ import annotations

import pytest

# -- server settings from the environment -------------------------------------------------------


def test_serve_config_from_env(tmp_path):
    from adapters_kit.server.config import ServeConfig, ServeConfigError

    env = {"ADAPTERS_KIT_STORE": str(tmp_path), "ADAPTERS_KIT_PORT": "9000",
           "ADAPTERS_KIT_MAX_WAIT_MS": "2.5", "ADAPTERS_KIT_CACHE_BYTES": "1000",
           "ADAPTERS_KIT_PRECISION": "bf16", "ADAPTERS_KIT_KEYS": ""}
    c = ServeConfig.from_env(env)
    assert (c.store, c.port, c.max_wait_ms, c.cache_bytes, c.precision, c.keys) == \
        (tmp_path, 9000, 2.5, 1000, "bf16", None)
    assert ServeConfig.from_env(env, port=9100, max_wait_ms=None).port == 9100  # given wins
    with pytest.raises(ServeConfigError, match="ADAPTERS_KIT_MAX_INPUTS='many' is not an integer"):
        ServeConfig.from_env({**env, "ADAPTERS_KIT_MAX_INPUTS": "many"})
    with pytest.raises(ServeConfigError, match="ADAPTERS_KIT_DEADLINE_S='nan' is not a finite"):
        ServeConfig.from_env({**env, "ADAPTERS_KIT_DEADLINE_S": "nan"})
    with pytest.raises(ServeConfigError) as e:  # the range check's message, naming the variable
        ServeConfig.from_env({**env, "ADAPTERS_KIT_PORT": "70000"})
    assert "port 70000 is not in 0..65535" in str(e.value) and "ADAPTERS_KIT_PORT" in str(e.value)
    with pytest.raises(ServeConfigError, match="ADAPTERS_KIT_STORE"):
        ServeConfig.from_env({})


def test_serve_command_reads_the_environment_under_its_flags(monkeypatch, tmp_path):
    pytest.importorskip("fastapi")
    import adapters_kit.server.app
    from adapters_kit import cli

    seen = []
    monkeypatch.setattr(adapters_kit.server.app, "serve", seen.append)
    monkeypatch.setenv("ADAPTERS_KIT_STORE", str(tmp_path))
    monkeypatch.setenv("ADAPTERS_KIT_PORT", "9000")
    monkeypatch.setenv("ADAPTERS_KIT_MAX_INPUTS", "7")
    assert cli.main(["serve", "--port", "9100"]) == 0
    (config,) = seen
    assert (config.store, config.port, config.max_inputs) == (tmp_path, 9100, 7)
    assert config.backbone == "embedded-distilbert" and config.host == "127.0.0.1"


