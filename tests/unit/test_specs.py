"""specs/ is generated from the code; a stale committed file fails here (run `make specs`)."""

from __future__ import annotations

from pathlib import Path

from reconciler.cli.specs import stale

SPECS = Path(__file__).resolve().parents[2] / "specs"


def test_committed_specs_are_up_to_date() -> None:
    assert stale(SPECS) == [], "specs/ is stale: run `make specs` and commit the result"
