"""Campaign input rules (daemon/campaigns/rules.py): segments, parameters, defaults, message,
CSV URL."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.campaigns.rules import (
    check_csv_url,
    host_is_allowed,
    normalise_segment,
    validate_audience,
    validate_campaign,
    validate_message,
)
from daemon.core.errors import CampaignInputError
from daemon.domain.campaigns import Audience, CsvUrl

HOSTS = ("files.example.com", ".supabase.co")


def _campaign(**fields: Any) -> dict[str, Any]:
    return {"message_text": "Hello {first_name|friend}!", "segment": "ALL", **fields}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"segment": "ALL"}, Audience("ALL")),
        ({"segment": None}, Audience("ALL")),
        ({"segment": " vip "}, Audience("VIP", min_tier_points=1000)),
        ({"segment": "VIP", "min_tier_points": 0}, Audience("VIP", min_tier_points=0)),
        ({"segment": "WHALE"}, Audience("WHALE", min_points=500)),
        ({"segment": "WHALE", "min_points": 800}, Audience("WHALE", min_points=800)),
        ({"segment": "SLUMBER"}, Audience("SLUMBER", inactive_days=30)),
        ({"segment": "SLUMBER", "inactive_days": 3650}, Audience("SLUMBER", inactive_days=3650)),
        (
            {"segment": "LOCAL", "zip_codes": [" 90210", "90210", "", "10001"]},
            Audience("LOCAL", zip_codes=("90210", "10001")),
        ),
        (
            {"segment": "CSV", "member_ids": ["M-1", " M-2 ", "M-1", " "]},
            Audience("CSV", member_ids=("M-1", "M-2")),
        ),
        (
            {"segment": "CSV", "member_ids": [], "csv_upload_url": "https://x.supabase.co/a.csv"},
            Audience("CSV", csv_url=CsvUrl("https://x.supabase.co/a.csv")),
        ),
        # Parameters of other segments are ignored, whatever they hold.
        ({"segment": "ALL", "min_points": -5, "zip_codes": []}, Audience("ALL")),
    ],
)
def test_segment_parameters_are_validated_with_defaults(
    fields: dict[str, Any], expected: Audience
) -> None:
    assert validate_audience(fields, HOSTS) == expected


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"segment": "GOLD"}, "unknown segment 'GOLD'; use one of ALL, VIP"),
        ({"segment": ""}, "unknown segment ''"),
        ({"segment": 3}, "unknown segment 3"),
        (
            {"segment": "VIP", "min_tier_points": -1},
            "min_tier_points must be a whole number from 0 to 2147483647",
        ),
        ({"segment": "WHALE", "min_points": 1.5}, "min_points must be a whole number"),
        ({"segment": "WHALE", "min_points": True}, "min_points must be a whole number"),
        ({"segment": "SLUMBER", "inactive_days": 0}, "inactive_days must be a whole number from 1"),
        ({"segment": "SLUMBER", "inactive_days": 3651}, "from 1 to 3650"),
        ({"segment": "LOCAL"}, "the LOCAL segment needs at least one zip code"),
        ({"segment": "LOCAL", "zip_codes": ["", " "]}, "needs at least one zip code"),
        ({"segment": "LOCAL", "zip_codes": "90210"}, "zip_codes must be a list of text values"),
        ({"segment": "LOCAL", "zip_codes": ["9" * 21]}, "is not a zip code (too long)"),
        ({"segment": "CSV"}, "the CSV segment needs member ids"),
        ({"segment": "CSV", "member_ids": [], "csv_upload_url": " "}, "needs member ids"),
        (
            {"segment": "CSV", "member_ids": ["M-1"], "csv_upload_url": "https://x.supabase.co/"},
            "takes member_ids or csv_upload_url, not both",
        ),
        ({"segment": "CSV", "member_ids": ["x" * 201]}, "longer than 200 characters"),
        ({"segment": "CSV", "csv_upload_url": "http://x.supabase.co/a.csv"}, "must be an https"),
    ],
)
def test_bad_segment_parameters_are_refused_with_a_readable_reason(
    fields: dict[str, Any], error: str
) -> None:
    with pytest.raises(CampaignInputError) as caught:
        validate_audience(fields, HOSTS)
    assert error in str(caught.value)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (None, "the message is empty"),
        ("", "the message is empty"),
        ("  \n ", "the message is empty"),
        ("x" * 501, "the message is 501 characters long; the limit is 500"),
        ("Hi {firstname}!", "unknown placeholder {firstname}"),
        ("Hi {first_name", "unbalanced { or }"),
    ],
)
def test_bad_messages_are_refused_with_a_readable_reason(text: object, error: str) -> None:
    with pytest.raises(CampaignInputError) as caught:
        validate_message(text)
    assert error in str(caught.value)


def test_a_500_character_message_with_surrounding_blanks_is_accepted() -> None:
    assert validate_message("  " + "x" * 500 + "\n").placeholders == frozenset()


def test_every_problem_of_a_campaign_is_reported_at_once() -> None:
    with pytest.raises(CampaignInputError) as caught:
        validate_campaign(_campaign(message_text="{nope}", segment="LOCAL"), HOSTS)
    message = str(caught.value)
    assert "unknown placeholder {nope}" in message
    assert "needs at least one zip code" in message


def test_a_valid_campaign_yields_its_template_and_audience() -> None:
    plan = validate_campaign(_campaign(segment="WHALE", min_points=900), HOSTS)
    assert plan.audience == Audience("WHALE", min_points=900)
    assert plan.template.render({"first_name": None}) == "Hello friend!"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://files.example.com/a.csv", "must be an https:// URL"),
        ("ftp://files.example.com/a.csv", "must be an https:// URL"),
        ("files.example.com/a.csv", "must be an https:// URL"),
        ("https:///a.csv", "has no host"),
        ("https://user:pw@files.example.com/a.csv", "must not carry a user name or password"),
        ("https://evil.example.org/a.csv", "host 'evil.example.org' is not allowed"),
        ("https://files.example.com.evil.org/a.csv", "is not allowed"),
        ("https://notsupabase.co/a.csv", "is not allowed"),
        ("https://[::1/a.csv", "is not a URL"),
    ],
)
def test_csv_urls_must_be_https_on_an_allowed_host(url: str, error: str) -> None:
    with pytest.raises(CampaignInputError) as caught:
        check_csv_url(url, HOSTS)
    assert error in str(caught.value)


def test_no_allowed_hosts_says_how_to_allow_one() -> None:
    with pytest.raises(CampaignInputError, match="set LOYALTYD_CSV_ALLOWED_HOSTS"):
        check_csv_url("https://files.example.com/a.csv", ())


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("files.example.com", True),
        ("FILES.example.com", True),
        ("files.example.com.", True),
        ("abc.supabase.co", True),
        ("a.b.supabase.co", True),
        ("supabase.co", True),
        ("example.com", False),
        ("xsupabase.co", False),
    ],
)
def test_allowed_hosts_match_exactly_or_by_leading_dot_suffix(host: str, allowed: bool) -> None:
    assert host_is_allowed(host, HOSTS) is allowed


def test_url_keeps_its_path_and_query_once_checked() -> None:
    url = " https://abc.supabase.co/storage/v1/object/sign/a.csv?token=x "
    assert check_csv_url(url, HOSTS) == url.strip()


def test_segment_names_are_case_and_blank_insensitive() -> None:
    assert normalise_segment(" slumber\n") == "SLUMBER"


def test_sql_arguments_follow_the_function_signature() -> None:
    audience = Audience("LOCAL", zip_codes=("1", "2"))
    assert (audience.min_tier_points, audience.min_points, audience.inactive_days) == (
        1000,
        500,
        30,
    )
    assert Audience("CSV", csv_url=CsvUrl("https://x")).with_member_ids(["a"]) == Audience(
        "CSV", member_ids=("a",)
    )
