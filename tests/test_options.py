"""What a run is asked to do (scorer.options): --max-errors parsed into a typed ErrorLimit."""

import pytest

from scorer.errors import DataError
from scorer.options import ErrorLimit, parse_max_errors


@pytest.mark.parametrize("text, limit", [
    (None, None),
    ("100", ErrorLimit("rows", 100)),
    (" 0 ", ErrorLimit("rows", 0)),
    ("0.01", ErrorLimit("fraction", 0.01)),
    ("1e-3", ErrorLimit("fraction", 0.001)),
    ("1%", ErrorLimit("fraction", 0.01)),
    ("100%", ErrorLimit("fraction", 1.0)),
])
def test_max_errors_is_a_row_count_or_a_fraction(text, limit):
    assert parse_max_errors(text) == limit


@pytest.mark.parametrize("text", ["lots", "1.5", "-0.1", "%"])
def test_a_max_errors_that_is_neither_is_refused(text):
    with pytest.raises(DataError, match="give a row count"):
        parse_max_errors(text)


def test_a_row_limit_is_passed_by_more_bad_rows_and_a_fraction_by_a_larger_share():
    rows = ErrorLimit("rows", 2)
    assert not rows.rows_exceeded(2) and rows.rows_exceeded(3)
    assert not rows.fraction_exceeded(8, 8)  # a row count sets no share
    share = ErrorLimit("fraction", 0.25)
    assert not share.fraction_exceeded(2, 8) and share.fraction_exceeded(3, 8)
    assert not share.fraction_exceeded(0, 0)  # no rows: no share
    assert not share.rows_exceeded(10 ** 6)  # a share sets no row count
