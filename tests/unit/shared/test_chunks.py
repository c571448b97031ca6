from meterdesk.shared.chunks import chunks


def test_chunks_keep_the_order_and_end_with_the_rest() -> None:
    assert list(chunks([5, 1, 4, 2, 3], 2)) == [[5, 1], [4, 2], [3]]
    assert list(chunks([], 3)) == []
