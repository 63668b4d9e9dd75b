"""Lines split at newlines, the unfinished rest kept for the next block."""

import pytest

from batch_scheduler.core.lines import split_lines


@pytest.mark.parametrize("data, lines, rest", [
    (b"", [], b""), (b"abc", [], b"abc"), (b"a\n", [b"a"], b""), (b"\n", [b""], b""),
    (b"a\nb", [b"a"], b"b"), (b'{"x":1}\n\n{"y":2}\n', [b'{"x":1}', b"", b'{"y":2}'], b""),
])
def test_split_lines_gives_whole_lines_without_newlines_and_the_unfinished_rest(data, lines, rest):
    assert split_lines(data) == (lines, rest)


def test_a_download_split_block_by_block_gives_the_lines_of_the_whole():
    """`split_after` carries the unfinished line of one block into the next without joining the blocks: over
    any cut of the bytes into blocks, the lines are those of the whole and the rest is what follows them."""
    import random

    from batch_scheduler.core.lines import split_after

    rng = random.Random(7)
    for _ in range(300):
        whole = b"".join(rng.choice([b"\n", b"a", b"bc", b'{"k":1}', b"\r"]) for _ in range(rng.randrange(0, 60)))
        cuts = sorted(rng.sample(range(len(whole) + 1), min(len(whole) + 1, rng.randrange(0, 8))))
        got, tail = [], b""
        for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True):
            lines, tail = split_after(tail, whole[a:b])
            got += lines
        assert (got, tail) == split_lines(whole)
