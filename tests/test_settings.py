from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.errors import ConfigError
from shipyard.settings import Settings


def test_rising_weight_defaults_file_environment_flags(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text("db_timeout_s: 3\nactor: from-file\npoll_s: 5\n")
    env = {"SHIPYARD_HOME": str(home), "SHIPYARD_ACTOR": "from-env", "SHIPYARD_POLL_S": "2"}
    settings = Settings.load({"poll_s": 0.5}, environ=env)
    assert settings.home == home
    assert settings.db_timeout_s == 3  # file
    assert settings.actor == "from-env"  # environment beats file
    assert settings.poll_s == 0.5  # flag beats environment
    assert settings.resolved_database_url == f"sqlite:///{home / 'registry.db'}"


def test_bad_values_name_the_setting(tmp_path: Path):
    with pytest.raises(ConfigError, match="db_timeout_s"):
        Settings.load({"home": tmp_path}, environ={"SHIPYARD_DB_TIMEOUT_S": "-1"})
    (tmp_path / "config.yaml").write_text("[not: a mapping")
    with pytest.raises(ConfigError, match="config.yaml"):
        Settings.load({"home": tmp_path}, environ={})
    (tmp_path / "config.yaml").write_text("- a\n- list\n")
    with pytest.raises(ConfigError, match="mapping"):
        Settings.load({"home": tmp_path}, environ={})
    (tmp_path / "config.yaml").write_text("no_such_setting: 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        Settings.load({"home": tmp_path}, environ={})


def test_repr_hides_credentials(tmp_path: Path):
    settings = Settings.load(
        {
            "home": tmp_path,
            "database_url": "postgresql+psycopg://u:hunter2@db/x",
            "store_url": "s3://key:secret@bucket/x",
        },
        environ={},
    )
    assert "hunter2" not in repr(settings) and "secret" not in repr(settings)
    assert "hunter2" not in str(settings)


def test_trusted_keys_from_environment_split_on_pathsep(tmp_path: Path):
    settings = Settings.load({"home": tmp_path}, environ={"SHIPYARD_TRUSTED_KEYS": "/a.pem:/b.pem"})
    assert settings.trusted_keys == [Path("/a.pem"), Path("/b.pem")]


def test_secret_references_resolve_at_the_edge_and_never_print(tmp_path: Path) -> None:
    from shipyard.errors import ConfigError
    from shipyard.security.secrets import plain_settings

    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{tmp_path / 'hidden.db'}"
    (home / "config.yaml").write_text("database_url: ${secret:REGISTRY_DB}\n")
    settings = Settings.load({"home": home}, environ={"SHIPYARD_SECRET_REGISTRY_DB": url},
                             secrets=plain_settings)
    assert settings.database_url == url
    assert "hidden.db" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        Settings.load({"home": home}, environ={}, secrets=plain_settings)
    assert "REGISTRY_DB" in caught.value.message and "hidden" not in caught.value.message
    # Without a resolver the reference stays as written (nothing is looked up by surprise).
    raw = Settings.load({"home": home}, environ={})
    assert raw.database_url == "${secret:REGISTRY_DB}"
