"""`${secret:NAME}` resolution from the environment and from files, the masked `Secret`, and
errors that name the reference but never a value."""

from __future__ import annotations

import copy
import logging
import os
import pickle

import pytest

from shipyard.errors import ConfigError
from shipyard.security.secrets import (
    MAX_FILE_BYTES,
    Resolver,
    Secret,
    references,
    resolve,
)

VALUE = "s3cr3t-Value-9f2c"


def test_environment_prefixed_name_wins_over_the_bare_name(tmp_path):
    environ = {"SHIPYARD_SECRET_DB_PASSWORD": VALUE, "DB_PASSWORD": "other"}
    resolved = resolve("${secret:DB_PASSWORD}", environ=environ, default_folder=None)
    assert isinstance(resolved, Secret)
    assert resolved.reveal() == VALUE
    assert resolve("${secret:DB_PASSWORD}", environ={"DB_PASSWORD": VALUE},
                   default_folder=None).reveal() == VALUE  # fmt: skip


def test_an_empty_environment_variable_counts_as_unset(tmp_path):
    (tmp_path / "TOKEN").write_text(VALUE + "\n")
    resolved = resolve(
        "${secret:TOKEN}", environ={"SHIPYARD_SECRET_TOKEN": "", "TOKEN": ""},
        folders=[tmp_path], default_folder=None,
    )  # fmt: skip
    assert resolved.reveal() == VALUE  # read from the file, trailing newline dropped


def test_files_are_read_from_configured_folders_then_the_default(tmp_path):
    first, default = tmp_path / "first", tmp_path / "run-secrets"
    first.mkdir()
    default.mkdir()
    (default / "api-key.txt").write_text("from-default\r\n")
    (default / "SHARED").write_text("default-wins-not")
    (first / "SHARED").write_text("first-wins")
    resolver = Resolver(environ={}, folders=(first,), default_folder=default)
    assert resolver.lookup("api-key.txt").reveal() == "from-default"
    assert resolver.lookup("SHARED").reveal() == "first-wins"


def test_a_symlinked_secret_file_is_followed(tmp_path):
    # Kubernetes mounts each secret as a symlink into a `..data` folder.
    data = tmp_path / "..data"
    data.mkdir()
    (data / "PW").write_text(VALUE)
    (tmp_path / "PW").symlink_to(data / "PW")
    assert resolve("${secret:PW}", environ={}, default_folder=tmp_path).reveal() == VALUE


def test_resolve_walks_dicts_and_lists_and_keeps_other_values():
    config = {
        "database": {"url": "postgres://ana:${secret:PW}@db/x", "pool": 5},
        "hosts": ["a", "${secret:PW}", ("${secret:PW}",)],
        "plain": "no reference here",
        "flag": True,
    }
    resolved = resolve(config, environ={"PW": VALUE}, default_folder=None)
    url = resolved["database"]["url"]
    assert isinstance(url, Secret) and url.reveal() == f"postgres://ana:{VALUE}@db/x"
    assert resolved["hosts"][1].reveal() == VALUE
    assert resolved["hosts"][2][0].reveal() == VALUE
    assert resolved["plain"] == "no reference here" and not isinstance(resolved["plain"], Secret)
    assert resolved["database"]["pool"] == 5 and resolved["flag"] is True
    assert config["database"]["url"] == "postgres://ana:${secret:PW}@db/x"  # input untouched
    assert references(config) == ["PW", "PW", "PW"]


def test_a_secret_shows_as_stars_everywhere_it_is_shown(caplog):
    secret = Secret(VALUE)
    assert str(secret) == "***"
    assert repr(secret) == "***"
    assert f"{secret}" == "***" and f"{secret:>5}" == "  ***"
    assert "%s" % secret == "***"  # noqa: UP031 - the old formatting path too
    assert VALUE not in repr({"password": secret})
    with caplog.at_level(logging.INFO):
        logging.getLogger("shipyard.test").info("connecting with %s", secret)
    assert VALUE not in caplog.text
    # ...and still behaves as the string for the code that needs the value.
    assert secret == VALUE and "x" + secret == "x" + VALUE
    assert secret.encode() == VALUE.encode() and len(secret) == len(VALUE)
    assert copy.deepcopy(secret) is secret
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_an_unresolvable_reference_names_it_and_where_it_is(tmp_path):
    with pytest.raises(ConfigError) as caught:
        resolve({"db": {"password": "${secret:MISSING_PW}"}}, environ={"OTHER": VALUE},
                folders=[tmp_path], default_folder=None)  # fmt: skip
    error = caught.value
    assert "${secret:MISSING_PW}" in error.message
    assert "db.password" in error.message
    assert "SHIPYARD_SECRET_MISSING_PW" in error.hint and str(tmp_path) in error.hint
    assert VALUE not in str(error.to_dict())


@pytest.mark.parametrize(
    "text",
    [
        "${secret:}",
        "${secret:../etc/passwd}",
        "${secret:a/b}",
        "${secret:.hidden}",
        "${secret:DB_PW",  # unterminated
        "${secret:bad name}",
        "${secret:" + "x" * 200 + "}",
        "${secret:ünï}",
        "${secret:A\nB}",
    ],
)
def test_a_malformed_reference_is_a_config_error_that_does_not_echo_it(text):
    with pytest.raises(ConfigError) as caught:
        resolve({"field": f"prefix {text}"}, environ={}, default_folder=None)
    message = str(caught.value)
    assert "malformed" in message and "field" in message
    assert text not in message


def test_a_dotted_name_cannot_climb_out_of_the_folder(tmp_path):
    (tmp_path / "outside").write_text(VALUE)
    inner = tmp_path / "inner"
    inner.mkdir()
    with pytest.raises(ConfigError):
        Resolver(environ={}, folders=(inner,), default_folder=None).lookup("..outside")


@pytest.mark.parametrize("problem", ["folder", "huge", "binary", "unreadable"])
def test_a_bad_secret_file_is_a_config_error_without_its_content(tmp_path, problem):
    path = tmp_path / "PW"
    if problem == "folder":
        path.mkdir()
    elif problem == "huge":
        path.write_text(VALUE * (MAX_FILE_BYTES // len(VALUE) + 1))
    elif problem == "binary":
        path.write_bytes(b"\xff\xfe" + VALUE.encode())
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads a file whatever its mode; this case needs a normal user")
        path.write_text(VALUE)
        path.chmod(0)
    with pytest.raises(ConfigError) as caught:
        resolve("${secret:PW}", environ={}, default_folder=tmp_path)
    assert str(path) in caught.value.message
    assert VALUE not in str(caught.value)


def test_the_environment_is_read_when_resolving_not_at_import(monkeypatch):
    monkeypatch.setenv("SHIPYARD_SECRET_LATE", VALUE)
    assert resolve("${secret:LATE}", default_folder=None).reveal() == VALUE
