"""tests/parallel.py: which tests share an xdist worker."""

from __future__ import annotations

from pathlib import Path

from tests.parallel import (
    GROUP_SECONDS,
    SHARED_SESSION_FIXTURES,
    longest_first,
    read_group_seconds,
    xdist_group,
)

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


def test_groups_are_handed_out_longest_first_whatever_their_number_of_tests() -> None:
    units = {"many-quick.py": ["t"] * 50, "one-long.py": ["t"], "middle.py": ["t"] * 3}
    seconds = {"many-quick.py": 20.0, "one-long.py": 240.0, "middle.py": 60.0}
    assert longest_first(units, seconds) == ["one-long.py", "middle.py", "many-quick.py"]


def test_a_group_without_a_figure_is_reckoned_at_the_measured_mean_per_test() -> None:
    # Measured: 100 s over 10 tests, so 10 s a test; the new group's 7 tests reckon 70 s.
    units = {"a.py": ["t"] * 5, "b.py": ["t"] * 5, "new.py": ["t"] * 7}
    seconds = {"a.py": 90.0, "b.py": 10.0}
    assert longest_first(units, seconds) == ["a.py", "new.py", "b.py"]


def test_without_any_figure_the_most_tests_go_first_then_by_name() -> None:
    units = {"b.py": ["t"], "c.py": ["t"] * 3, "a.py": ["t"]}
    assert longest_first(units, {}) == ["c.py", "a.py", "b.py"]


def test_the_figures_name_groups_that_exist() -> None:
    """A renamed module or shared fixture leaves a figure that orders nothing: measure again
    (docs/testing.md, "Handing out the groups")."""
    seconds = read_group_seconds(GROUP_SECONDS)
    assert seconds, f"{GROUP_SECONDS} is missing or empty"
    shared = {f"session-{name}" for name in SHARED_SESSION_FIXTURES}
    for group in seconds:
        assert group in shared or (REPO / group).is_file(), group
