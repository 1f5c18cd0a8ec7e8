"""The README stays true: every setting the service reads is documented in its configuration."""

from __future__ import annotations

from pathlib import Path

from crew_platform.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_environment_variable_is_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [
        name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in text
    ]
    assert not missing, f"settings without a row in the README's configuration table: {missing}"
