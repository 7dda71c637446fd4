"""Settings from the environment (shared/settings.py): every type converted by msgspec, every
value it cannot use refused with a message that names the variable and what it expects."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shared.settings import Settings, SettingsError, env_name


def test_each_type_is_converted_from_its_variable():
    settings = Settings.from_env(
        {
            "ABACUS_BATCH_SIZE": " 10",
            "ABACUS_ROLLUP": "off",
            "ABACUS_REDIS_CLUSTER": "TRUE",
            "ABACUS_CORS_ORIGINS": "https://a.example, https://b.example,",
            "ABACUS_REGISTRY_SEED": "seeds/x.json",
            "ABACUS_REDIS_URL": "redis://r:6379/0",
            "ABACUS_STREAM_SHARDS": "4",
        }
    )
    assert settings.batch_size == 10 and settings.stream_shards == 4
    assert settings.rollup is False and settings.redis_cluster is True
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.registry_seed == Path("seeds/x.json")
    assert settings.redis_url == "redis://r:6379/0"


@pytest.mark.parametrize(
    ("words", "value"),
    [(["1", "true", "True", "yes", "YES", "on", " on "], True), (["0", "false", "FALSE", "no", "off", "Off"], False)],
)
def test_bools_accept_what_they_always_did(words, value):
    for word in words:
        assert Settings.from_env({"ABACUS_ROLLUP": word}).rollup is value, word


def test_unset_and_empty_variables_keep_the_defaults():
    assert Settings.from_env({"ABACUS_BATCH_SIZE": ""}) == Settings()
    assert Settings.from_env({}, batch_size=7, redis_url=None).batch_size == 7


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("ABACUS_BATCH_SIZE", "abc", "expected a whole number >= 0"),
        ("ABACUS_BATCH_SIZE", "-1", "expected a whole number >= 0"),
        ("ABACUS_STREAM_SHARDS", "1.5", "expected a whole number >= 0"),
        ("ABACUS_ROLLUP", "maybe", "expected true or false"),
        ("ABACUS_JOBS_IN_SERVE", "2", "expected true or false"),
    ],
)
def test_a_value_that_cannot_be_used_names_its_variable(variable, raw, expected):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: raw})
    message = str(caught.value)
    assert message.startswith(f"{variable}={raw!r}: {expected}"), message


def test_every_field_has_a_variable_the_parser_reads():
    # A new field of a type the parser cannot convert fails here, not on a user's machine.
    for field in dataclasses.fields(Settings):
        default = field.default
        text = (
            ",".join(default)
            if isinstance(default, tuple)
            else str(default).lower()
            if isinstance(default, bool)
            else str(default)
        )
        if default is None or text == "":
            continue
        parsed = Settings.from_env({env_name(field.name): text})
        assert getattr(parsed, field.name) == default, field.name


def _documented_values() -> list[tuple[str, str]]:
    """Every concrete ``ABACUS_X=value`` the README shows (placeholders such as ``n`` or ``<name>``
    left out), every value of the Kubernetes ConfigMap and what docker-compose.yml sets by default."""
    import re

    import yaml

    from shared.settings import settings_doc
    from tests.conftest import REPO

    known = {variable for variable, _, _ in settings_doc()}
    found = re.findall(r"\b(ABACUS_[A-Z_]+)=([^\s`|<>$)]+)", (REPO / "README.md").read_text())
    values = [(variable, raw) for variable, raw in found if variable in known and not re.fullmatch(r"[nN]", raw)]
    config = next(
        doc for doc in yaml.safe_load_all((REPO / "deploy/k8s/base/configmap.yaml").read_text()) if doc["kind"] == "ConfigMap"
    )
    values += list(config["data"].items())
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        environment = service.get("environment") or {}
        pairs = environment.items() if isinstance(environment, dict) else (e.split("=", 1) for e in environment)
        # ${VAR:-default} as compose resolves it when VAR is unset; ${VAR:?...} needs a real value.
        resolved = [(k, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v))) for k, v in pairs]
        values += [(k, v) for k, v in resolved if k in known and "${" not in v]
    return sorted(set(values))


@pytest.mark.parametrize(("variable", "raw"), _documented_values())
def test_every_documented_example_value_parses(variable, raw):
    Settings.from_env({variable: raw})
