from hypothesis import given, settings, strategies as st

from disamb.textsim import normalize, render_spoken, text_features


def test_typed_and_spoken_forms_meet():
    assert normalize("see u at 5 😀") == normalize("See you at five.")
    assert normalize("omw!!") == "on my way"
    assert normalize("pls call me tmrw") == "please call me tomorrow"


def test_digit_codes_agree_in_every_spelling():
    forms = ["1158", "1 1 5 8", "One, one, five, eight.", "one one five eight"]
    assert {normalize(f) for f in forms} == {"1158"}
    # Whisper's normaliser writes a lone "1" as "one"; we map it back
    assert normalize("4, 1, 7, 1.") == "4171"


def test_renderings_cover_code_styles_and_fillers():
    r = render_spoken("1158 ok")
    assert "1158 okay." in r and "1158." in r
    assert "One, one, five, eight." in r and "1, 1, 5, 8." in r
    assert render_spoken("see u at 5 😀")[0] == "See you at 5."
    assert render_spoken("😀") == ["..."]


def test_features_prefer_the_right_candidate():
    t = "The code is one, one, five, eight."
    right, wrong = text_features(t, "code 1158 ok"), text_features(t, "code 1185")
    assert right["digit_dist"] == 0.0 and wrong["digit_dist"] > 0
    assert right["cer"] < wrong["cer"]
    empty = text_features("", "anything")
    assert empty["cer"] == 1.0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_normalize_is_idempotent_and_total(text):
    once = normalize(text)
    assert normalize(once) == once
    text_features(text, once)  # never raises
    assert render_spoken(text)
