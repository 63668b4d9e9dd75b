"""Lines split at newlines, the unfinished rest kept for the next block."""

import pytest

from batch_scheduler.core.lines import split_lines


@pytest.mark.parametrize("data, lines, rest", [
    (b"", [], b""), (b"abc", [], b"abc"), (b"a\n", [b"a"], b""), (b"\n", [b""], b""),
    (b"a\nb", [b"a"], b"b"), (b'{"x":1}\n\n{"y":2}\n', [b'{"x":1}', b"", b'{"y":2}'], b""),
])
def test_split_lines_gives_whole_lines_without_newlines_and_the_unfinished_rest(data, lines, rest):
    assert split_lines(data) == (lines, rest)
