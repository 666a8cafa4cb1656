"""The pure redaction of task specs: what counts as a secret, and how it is masked."""

from __future__ import annotations

import pytest

from reconciler.core.redaction import (
    MASK,
    field_path,
    is_secret_name,
    redact,
    redact_change,
    redact_text,
    redact_url,
)


@pytest.mark.parametrize("name", [
    "DB_PASSWORD", "PASSWORD", "passwd", "DB_PASS", "PWD", "PASSPHRASE", "GPG_PASSPHRASE",
    "ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "SIGNING_KEY", "API_KEY", "apiKey", "X-Api-Key",
    "GH_PAT", "GITHUB_TOKEN", "accessToken", "CREDENTIALS", "BASIC_AUTH", "Authorization",
    "Proxy-Authorization", "Cookie", "SESSION_ID", "PRIVATE_KEY", "SENTRY_DSN", "client_secret",
    "DBPASSWORD", "X-Amz-Signature", "sig", "X-Auth-Token",
])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "PATH", "REPORT_FORMAT", "X-Trace", "AUTHOR", "KEYBOARD", "MONKEY", "HOME", "LANG",
    "Content-Type", "PATTERN", "BYPASS_CACHE", "page",
])
def test_plain_names(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://app:pw@db:5432/x", "postgresql://app:***@db:5432/x"),
    ("mysql://root:p@ss@db/x", "mysql://root:***@db/x"),  # an unescaped @ in the password
    ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
    ("amqp://guest:pw@mq/vhost", "amqp://guest:***@mq/vhost"),
    ("https://ghp_token@github.com/o/r.git", "https://***@github.com/o/r.git"),
    ("https://h/x?sv=1&sig=abc&page=2", "https://h/x?sv=1&sig=***&page=2"),
    ("https://s3/o?X-Amz-Credential=k&X-Amz-Signature=s&X-Amz-Expires=60",
     "https://s3/o?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60"),
    ("https://h/cb?code=c&state=s#access_token=t", "https://h/cb?code=***&state=s#access_token=***"),
    ("https://h/x?api_key=k&token=t&key=k", "https://h/x?api_key=***&token=***&key=***"),
    ("http://h/p?q=1", "http://h/p?q=1"),
    ("postgresql://db/x", "postgresql://db/x"),
])
def test_urls(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_free_text() -> None:
    script = ("export DB_PASSWORD=pw1 MODE=fast; curl -H 'Authorization: Bearer pw2' "
              "--user-agent x --token pw3 https://u:pw4@h/p?sig=pw5 -d "
              '\'{"password": "pw6", "user": "bob", "refresh_token": "pw7"}\'')
    shown = redact_text(script)
    assert not any(f"pw{i}" in shown for i in range(1, 8)), shown
    assert "MODE=fast" in shown and '"user": "bob"' in shown and "--user-agent x" in shown
    assert redact_text("client_secret=s&grant_type=client_credentials") == (
        "client_secret=***&grant_type=client_credentials")
    assert redact_text("owner: data@example.com") == "owner: data@example.com"


def test_document() -> None:
    doc = {"metadata": {"name": "t", "annotations": {"wiki": "https://u:a1@wiki/x"}},
           "spec": {"schedule": "@daily", "run": {
               "command": ["tool", "--password", "a2", "--user", "bob", "--api-key=a3"],
               "env": {"PLAIN": "x", "GH_PAT": "a4", "DATABASE_URL": "postgresql://a:a5@db",
                       "TOKEN_REF": {"fromEnv": "SOURCE_TOKEN"},
                       "KEY_FILE": {"fromFile": "/run/secrets/key"}},
               "http": {"url": "https://u:a6@h/x?sig=a7&page=1",
                        "headers": {"X.Token": "a8", "X-Trace": "1", "Cookie": "s=a9"},
                        "body": '{"passphrase": "b1"}'}}}}
    shown = redact(doc)
    text = repr(shown)
    assert not any(c in text for c in ("a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9",
                                       "b1")), text
    run = shown["spec"]["run"]
    assert run["env"] == {"PLAIN": "x", "GH_PAT": MASK, "DATABASE_URL": "postgresql://a:***@db",
                          "TOKEN_REF": {"fromEnv": "SOURCE_TOKEN"},
                          "KEY_FILE": {"fromFile": "/run/secrets/key"}}
    assert run["command"] == ["tool", "--password", MASK, "--user", "bob", "--api-key=***"]
    assert run["http"]["headers"] == {"X.Token": MASK, "X-Trace": "1", "Cookie": MASK}
    assert shown["spec"]["schedule"] == "@daily" and doc["spec"]["run"]["env"]["GH_PAT"] == "a4"


def test_field_paths() -> None:
    assert field_path("spec.run.http.headers.X.Token") == ("spec", "run", "http", "headers",
                                                          "X.Token")
    assert field_path("spec.run.env.A.fromEnv") == ("spec", "run", "env", "A", "fromEnv")
    assert field_path("spec.schedule") == ("spec", "schedule")


def test_changes_hide_both_sides_and_say_so() -> None:
    assert redact_change("spec.run.env.DB_PASSWORD", "old-pg", "new-pg") == (MASK, MASK, True)
    assert redact_change("spec.run.env.DATABASE_URL", "postgresql://a:o@db",
                         "postgresql://a:n@db") == ("postgresql://a:***@db",
                                                    "postgresql://a:***@db", True)
    assert redact_change("spec.run.env", None, {"API_KEY": "k", "A": "1"}) == (
        None, {"API_KEY": MASK, "A": "1"}, True)
    assert redact_change("spec.run.env.API_KEY.fromEnv", "A", "B") == ("A", "B", False)
    assert redact_change("spec.run.env.API_KEY", "lit", {"fromEnv": "B"}) == (
        MASK, {"fromEnv": "B"}, True)
    assert redact_change("spec.schedule", "@daily", "@hourly") == ("@daily", "@hourly", False)
