"""`secret-in-bundle`: a bundle's text files are scanned for secrets; the finding names the
file and line, never the secret."""

from __future__ import annotations

import random
import string

from shipyard.bundle.check import (
    MAX_SECRET_FINDINGS,
    SCAN_CHARS,
    SCAN_OVERLAP,
    check_secrets,
    is_fragile,
    static_findings,
)
from shipyard.bundle.manifest import Manifest


def _token(length: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(length))


# Assembled at run time so this test file holds no secret-shaped literal of its own.
AWS = "AKIA" + "Q3EGRTZ7WJ4MXK2P"
GITHUB = "ghp" + "_" + _token(36)
PEM = "-----BEGIN PRIVATE KEY-----\n" + _token(64) + "\n-----END PRIVATE KEY-----\n"


def _secret_findings(folder):
    manifest = Manifest.read(folder)
    return check_secrets(folder, manifest)


def test_a_clean_bundle_has_no_secret_findings(make_bundle):
    code = b"import os\npassword = os.environ['DB_PASSWORD']\ntoken: str = '${secret:API}'\n"
    folder = make_bundle(files={"code/predict.py": code, "config.yaml": b"api_key: ${secret:K}\n"})
    assert _secret_findings(folder) == []


def test_a_secret_in_code_is_named_by_file_and_line_but_never_shown(make_bundle):
    code = f"import boto3\n\nclient = boto3.client('s3', aws_access_key_id='{AWS}')\n".encode()
    folder = make_bundle(files={"code/predict.py": code})
    _manifest, findings = static_findings(folder)
    (found,) = [f for f in findings if f.code == "secret-in-bundle"]
    assert found.severity == "error" and is_fragile(findings)
    assert found.where == "code/predict.py:3"
    assert "AWS access key" in found.message and "${secret:NAME}" in found.hint
    assert AWS not in str(found.to_dict())


def test_each_text_format_is_scanned(make_bundle):
    folder = make_bundle(
        files={
            "config/app.env": f"GITHUB_TOKEN={GITHUB}\n".encode(),
            "config/settings.json": b'{"db": {"password": "hunter2-prod"}}',
            "keys/deploy.pem": PEM.encode(),
            "notes.txt": b"connect with postgres://ml:Pa55word@db.internal/x\n",
            "unknown.ext": b"line one\nSLACK=xoxb-1234567890-" + _token(24).encode() + b"\n",
        }
    )
    where = sorted(f.where for f in _secret_findings(folder))
    assert where == [
        "config/app.env:1",
        "config/settings.json:1",
        "keys/deploy.pem:1",
        "notes.txt:1",
        "unknown.ext:2",
    ]


def test_the_manifest_itself_is_scanned(make_bundle):
    folder = make_bundle(description=f"Reads S3 with key {AWS}.")
    (found,) = _secret_findings(folder)
    assert found.where.startswith("shipyard.yaml:")
    assert AWS not in found.message


def test_a_binary_file_is_not_scanned(make_bundle):
    # Weights are binary: random bytes there would otherwise match by chance.
    folder = make_bundle(content=b"\x00\x01weights" + AWS.encode())
    assert _secret_findings(folder) == []


def test_personal_data_is_not_a_secret_finding(make_bundle):
    csv = b"email,card\nana@example.com,4111111111111111\n"
    folder = make_bundle(files={"data/sample.csv": csv})
    assert _secret_findings(folder) == []


def test_secrets_past_the_first_window_and_across_a_window_edge_are_found(make_bundle):
    filler = ("x" * 99 + "\n") * (SCAN_CHARS // 100)  # 1 Mi characters, 10485 lines
    lines_before = filler.count("\n")
    # Put the key so it straddles the point where the first window stops reporting.
    edge = SCAN_CHARS - SCAN_OVERLAP - 10
    text = filler[:edge] + AWS + filler[edge:] + filler + "tail " + GITHUB + "\n"
    folder = make_bundle(files={"data/big.txt": text.encode()})
    found = {f.where for f in _secret_findings(folder)}
    edge_line = filler[:edge].count("\n") + 1
    assert f"data/big.txt:{edge_line}" in found
    assert f"data/big.txt:{2 * lines_before + 1}" in found
    assert len(found) == 2


def test_many_secrets_in_one_file_are_capped_and_counted(make_bundle):
    lines = "".join(f"key{i} = AKIA{_token(16, i).upper()}\n" for i in range(12))
    folder = make_bundle(files={"leaked.py": lines.encode()})
    findings = _secret_findings(folder)
    assert len(findings) == MAX_SECRET_FINDINGS + 1
    assert findings[-1].message == "leaked.py holds 7 more lines that look like secrets."


def test_a_missing_listed_file_is_left_to_the_files_check(make_bundle):
    folder = make_bundle(files={"code/predict.py": b"print('hi')\n"})
    (folder / "code" / "predict.py").unlink()
    _manifest, findings = static_findings(folder)
    assert [f.code for f in findings if f.code == "files-invalid"] == ["files-invalid"]
    assert not [f for f in findings if f.code == "secret-in-bundle"]


def test_undecodable_text_and_odd_characters_do_not_break_the_scan(make_bundle):
    data = b"\xff\xfe not utf-8 \xc3\x28 " + "ünï\u202e\r\n".encode() + f"k={GITHUB}".encode()
    folder = make_bundle(files={"odd.txt": data})
    (found,) = _secret_findings(folder)
    assert found.where == "odd.txt:2"
