"""``caseless``: a needle that case folding cannot touch is found in a text exactly when it is
found in the text's case folding — the grid's search skips the fold for such needles."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meterdesk.db.functions import caseless, python_casefold

# Characters around case folding's corners: ASCII, Latin-1, ß/ſ/K/ﬁ/İ, Greek, full-width, CJK.
ALPHABET = st.sampled_from([*"aA0 %_/-ßſKﬁİi\u0307σΣςÉéＡａ１赵李", "ss", "fi"])
TEXT = st.lists(ALPHABET, max_size=12).map("".join)


@settings(max_examples=3000)
@given(needle=TEXT, text=TEXT)
def test_a_caseless_needle_matches_with_or_without_folding(needle: str, text: str) -> None:
    if caseless(needle):
        assert (needle in text.casefold()) == (needle in text)


def test_which_needles_are_caseless() -> None:
    assert caseless("0512") and caseless("赵") and caseless("%1-/") and caseless("")
    # letters, and what other letters fold into (ß → ss, K → k, İ → i + U+0307)
    for needle in ("a", "A", "li", "s", "k", "\u0307", "σ", "ａ", "Ａ"):
        assert not caseless(needle), needle


def test_python_casefold_keeps_null() -> None:
    assert python_casefold(None) is None
    assert python_casefold("Straße ΣΟΦΙΑ") == "strasse σοφια"
