"""Redaction at its edges: quoting, a colon in a password, fromFile paths, odd shapes.

tests/unit/test_redaction.py holds the rules; these hold the details a mutation run
showed unpinned: the quotes around a masked value are kept (and not taken from the
secret), everything after the first colon of a URL's userinfo is the password, a
``fromFile`` path is a name and stays visible, a secret-looking key outside ``env`` and
``headers`` does not hide its whole value, and lists outside ``command`` are walked.
"""

from __future__ import annotations

import pytest

from reconciler.core.redaction import MASK, redact, redact_change, redact_text, redact_url


@pytest.mark.parametrize(("text", "shown"), [
    ('PASSWORD="hunter2"', f'PASSWORD="{MASK}"'),
    ("PASSWORD='hunter2'", f"PASSWORD='{MASK}'"),
    ('PASSWORD=""', f'PASSWORD="{MASK}"'),
    ("TOKEN=Xyz1", f"TOKEN={MASK}"),
    ('--password "a b"', f'--password "{MASK}"'),
])
def test_quotes_around_a_masked_value_are_kept(text: str, shown: str) -> None:
    assert redact_text(text) == shown


def test_everything_after_the_first_colon_of_the_userinfo_is_the_password() -> None:
    assert redact_url("postgresql://app:p:w@db/x") == f"postgresql://app:{MASK}@db/x"


def test_a_from_file_path_is_a_name_and_stays_visible() -> None:
    path = "spec.run.env.DB_PASSWORD.fromFile"
    assert redact_change(path, "/run/a", "/run/b") == ("/run/a", "/run/b", False)


def test_a_secret_looking_key_elsewhere_masks_only_what_looks_secret() -> None:
    doc = {"metadata": {"annotations": {"token-owner": "team-a", "note": "PASSWORD=x y"}}}
    assert redact(doc) == {
        "metadata": {"annotations": {"token-owner": "team-a", "note": f"PASSWORD={MASK} y"}}
    }


def test_lists_are_walked_and_odd_items_kept() -> None:
    # A stored row of an older, looser version: not every item is a string.
    doc = {"spec": {"run": {"command": [1, "--token", "abc", "PASSWORD=x"]},
                    "extra": ["API_KEY=k", 2]}}
    assert redact(doc) == {"spec": {"run": {"command": [1, "--token", MASK, f"PASSWORD={MASK}"]},
                                    "extra": [f"API_KEY={MASK}", 2]}}
