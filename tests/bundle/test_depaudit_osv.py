"""OSV range evaluation and severity, per the OSV schema's evaluation pseudocode."""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.depaudit.osv import evaluate, rank, rate, shown


def record(*ranges: list[dict[str, str]], versions: list[str] | None = None, **extra: Any):
    return {
        "id": "GHSA-test",
        "modified": "2024-01-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "Demo_Pkg"},
                "ranges": [{"type": "ECOSYSTEM", "events": events} for events in ranges],
                "versions": versions or [],
            }
        ],
        **extra,
    }


FIXED = [{"introduced": "0"}, {"fixed": "1.0.2"}]
TWO_WINDOWS = [
    {"introduced": "1.0.0"},
    {"fixed": "1.0.2"},
    {"introduced": "3.0.0"},
    {"fixed": "3.2.5"},
]
LAST = [{"introduced": "0"}, {"last_affected": "2.1.214"}]


@pytest.mark.parametrize(
    ("events", "version", "affected"),
    [
        (FIXED, "0.1", True),
        (FIXED, "1.0.1", True),
        (FIXED, "1.0.2", False),  # the fixed version itself is safe
        (FIXED, "1.0.2rc1", True),  # a pre-release sorts before its release
        (FIXED, "1.0.2.post1", False),
        (TWO_WINDOWS, "0.9", False),
        (TWO_WINDOWS, "1.0.0", True),
        (TWO_WINDOWS, "2.0", False),
        (TWO_WINDOWS, "3.2.4", True),
        (TWO_WINDOWS, "3.2.5", False),
        (LAST, "2.1.214", True),  # last_affected is inclusive
        (LAST, "2.1.215", False),
        ([{"introduced": "0"}], "99.0", True),  # unfixed: every version
        ([{"introduced": "1.0"}, {"limit": "2.0"}], "1.5", True),
        ([{"introduced": "1.0"}, {"limit": "2.0"}], "2.0", False),
        ([{"introduced": "1.0"}, {"limit": "*"}], "7.0", True),
        (list(reversed(FIXED)), "1.0.1", True),  # events need not arrive sorted
    ],
)
def test_ranges_follow_the_osv_evaluation(events, version, affected):
    assert evaluate(record(events), "demo-pkg", version).affected is affected


def test_versions_list_matches_by_pep440_equality():
    rec = record(versions=["1.0", "2.0.0"])
    assert evaluate(rec, "demo-pkg", "1.0.0").affected
    assert evaluate(rec, "demo-pkg", "2.0").affected
    assert not evaluate(rec, "demo-pkg", "1.0.1").affected


@pytest.mark.parametrize("name", ["demo-pkg", "Demo.Pkg", "DEMO__pkg", "demo_pkg"])
def test_names_are_pep503_normalised(name):
    assert evaluate(record(FIXED), name, "1.0").affected


@pytest.mark.parametrize("near_miss", ["demo-pkg2", "demopkg", "demo-pkg-extra", "emo-pkg"])
def test_near_miss_names_do_not_match(near_miss):
    assert not evaluate(record(FIXED), near_miss, "1.0").affected


@pytest.mark.parametrize("ecosystem", ["npm", "PyPl", "crates.io", "", None, 7])
def test_other_ecosystems_do_not_match(ecosystem):
    rec = record(FIXED)
    rec["affected"][0]["package"]["ecosystem"] = ecosystem
    assert not evaluate(rec, "demo-pkg", "1.0").affected


def test_git_ranges_are_skipped_but_versions_still_match():
    rec = record(versions=["1.0"])
    rec["affected"][0]["ranges"] = [
        {"type": "GIT", "repo": "https://x", "events": [{"introduced": "0"}]}
    ]
    assert evaluate(rec, "demo-pkg", "1.0").affected
    assert not evaluate(rec, "demo-pkg", "1.1").affected


def test_unparseable_range_is_undetermined_not_clean():
    verdict = evaluate(record([{"introduced": "0"}, {"fixed": "not a version!"}]), "demo-pkg", "1")
    assert not verdict.affected
    assert "PEP 440" in verdict.undetermined


def test_fixed_versions_are_reported_once():
    verdict = evaluate(record(FIXED, FIXED), "demo-pkg", "1.0")
    assert verdict.fixed == ("1.0.2",)


@pytest.mark.parametrize(
    "hostile",
    [
        {"affected": "PyPI"},  # a string where a list belongs must not substring-match
        {"affected": [{"package": "demo-pkg"}]},
        {"affected": [{"package": {"ecosystem": "PyPI", "name": "demo-pkg"}, "versions": "1.0"}]},
        {"affected": [{"package": {"ecosystem": "PyPI", "name": "demo-pkg"}, "ranges": "x"}]},
        {
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": "demo-pkg"},
                    "ranges": [
                        {"type": "ECOSYSTEM", "events": [{"introduced": "0", "fixed": "2"}]}
                    ],
                }
            ]
        },
    ],
)
def test_malformed_records_never_crash_or_match(hostile):
    assert not evaluate({"id": "X", **hostile}, "demo-pkg", "1.0").affected


@pytest.mark.parametrize(
    ("severity", "level", "score"),
    [
        (
            [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "critical",
            9.8,
        ),
        (
            [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H"}],
            "high",
            8.8,
        ),
        (
            [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:C/C:H/I:N/A:N"}],
            "medium",
            6.8,
        ),
        (
            [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N"}],
            "low",
            1.8,
        ),
        (
            [
                {
                    "type": "CVSS_V4",
                    "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                }
            ],
            "critical",
            9.3,
        ),
        ([{"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:C/I:C/A:C"}], "high", 10.0),
    ],
)
def test_cvss_vectors_become_levels(severity, level, score):
    rating = rate(record(FIXED, severity=severity), "demo-pkg")
    assert (rating.level, rating.score) == (level, score)


def test_database_specific_severity_is_the_fallback():
    rec = record(FIXED, database_specific={"severity": "MODERATE"})
    assert rate(rec, "demo-pkg").level == "medium"
    rec["severity"] = [{"type": "CVSS_V3", "score": "CVSS:3.1/garbage"}]
    assert rate(rec, "demo-pkg").level == "medium"  # a broken vector falls through


def test_package_level_severity_wins_and_missing_is_unknown():
    rec = record(FIXED)
    assert rate(rec, "demo-pkg").level == "unknown"
    rec["affected"][0]["severity"] = [
        {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}
    ]
    assert rate(rec, "demo-pkg").level == "critical"


def test_unknown_severity_ranks_with_critical():
    assert rank("unknown") == rank("critical") < rank("high") < rank("low")


def test_shown_strips_control_characters_and_truncates():
    assert shown("a\nb\x1b[31m\u202e") == "a?b?[31m?"
    assert len(shown("x" * 10_000)) == 80
