"""tests/parallel.py: which tests share an xdist worker."""

from __future__ import annotations

from pathlib import Path

from tests.parallel import SHARED_SESSION_FIXTURES, xdist_group

REPO = Path(__file__).resolve().parents[2]


def test_a_test_without_a_shared_fixture_stays_with_its_module() -> None:
    group = xdist_group("tests/integration/stream/test_worker.py", ["stack", "dataset"])
    assert group == "tests/integration/stream/test_worker.py"


def test_tests_sharing_an_expensive_fixture_share_a_group_across_modules() -> None:
    groups = {
        xdist_group("tests/integration/cdc/test_pipeline.py", ["stack", "cdc"]),
        xdist_group("tests/integration/stream/test_cdc_worker.py", ["cdc", "dataset"]),
    }
    assert groups == {"session-cdc"}


def test_the_first_shared_fixture_decides() -> None:
    first, second = SHARED_SESSION_FIXTURES[:2]
    assert xdist_group("m.py", [second, first]) == f"session-{first}"


def test_every_shared_fixture_exists_in_the_integration_tier() -> None:
    """The list names real session fixtures (a renamed fixture would silently ungroup)."""
    sources = "\n".join(p.read_text() for p in (REPO / "tests" / "integration").rglob("*.py"))
    for name in SHARED_SESSION_FIXTURES:
        assert f'@pytest.fixture(scope="session")\ndef {name}(' in sources, name
