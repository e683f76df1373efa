from hypothesis import given, settings, strategies as st

from disamb.textsim import correct_spelling, normalize, render_spoken, text_features


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


def test_spaced_codes_are_also_rendered_merged():
    assert "2273 okay." in render_spoken("2 2 7 3 ok") and "2273." in render_spoken("2 2 7 3 ok")


def test_misspelt_candidates_get_a_corrected_rendering_as_well():
    r = render_spoken("dont forget ur umberlla")
    assert r == ["Don't forget your umberlla.", "Don't forget your umbrella."]
    assert render_spoken("running 30 mins ltae")[1] == "Running 30 minutes late."
    # known words, short words and digits stay; a correct text gets no second rendering
    assert correct_spelling("see you at the gym at 5") == "see you at the gym at 5"
    assert render_spoken("see you at the gym") == ["See you at the gym."]
    assert correct_spelling("Hoome") == "Home"


def test_contractions_typed_without_apostrophe_render_as_spoken():
    assert render_spoken("im driving")[0] == "I'm driving."
    assert render_spoken("dont wait")[0] == "Don't wait."
    assert normalize("im late") == normalize("I'm late") == normalize("I am late")


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


def test_renderings_are_punctuated_as_whisper_writes():
    # a space before a mark and a doubled "!" are typing habits nobody pronounces
    assert render_spoken("code 255 !!")[0] == "Code 255!"
    assert "255!" in render_spoken("code 255 !!")
    assert render_spoken("wait , what ??")[0] == "Wait, what?"
    assert render_spoken("really?!")[0] == "Really?"


def test_units_after_a_number_are_said_in_the_plural():
    # "10 min" is said, and written by Whisper, as "10 minutes": rendered so, and one class key
    assert render_spoken("be there in 10 min")[0] == "Be there in 10 minutes."
    assert render_spoken("back in 1 min")[0] == "Back in 1 minute."
    assert normalize("wait 5secs") == normalize("wait five seconds")
    assert normalize("in a min") == "in a minute"  # no number: the word as before
    from disamb.classes import class_key
    assert class_key("ill be there in 10 min") == class_key("I'll be there in 10 minutes.")


def test_an_answers_its_before_a_number_is_a_filler():
    # "its 4712" is typed for "the code is 4712" or just the number: rendered without it too,
    # charged as one filler, and keyed as the number; a message opens with "It's", not "Its"
    from disamb.classes import class_key
    from disamb.textsim import filler_count

    r = render_spoken("its 4712")
    assert r[0] == "It's 4712." and "4712." in r and "Four, seven, one, two." in r
    assert filler_count("its 4712") == filler_count("it's 4712 ok") - 1 == 1
    assert class_key("its 4712") == class_key("4712") == class_key("It's 4712!")
    assert render_spoken("its so hot") == ["It's so hot."]  # no number: nothing dropped
    assert class_key("its so hot") != class_key("so hot")
    assert render_spoken("is its tail long")[0] == "Is its tail long."


def test_a_trailing_kiss_is_typed_not_said():
    # "its 668 x" lost to "667 👍" on the codes-phone family: its renderings all ended in " x."
    from disamb.classes import class_key

    assert render_spoken("see you soon x") == ["See you soon."]
    assert render_spoken("code 257 xx")[0] == "Code 257."
    assert class_key("love you xxx") == class_key("love you") and normalize("love you X!") == "love you"
    assert render_spoken("xx") == ["Xx."]  # a message of kisses only is kept as typed
    assert normalize("plan x for today") == "plan x for today"  # only at the end


def test_a_question_typed_without_its_mark_is_also_rendered_with_one():
    # Whisper writes "?" for what was asked; typists drop it
    assert render_spoken("did you lock the door") == ["Did you lock the door.", "Did you lock the door?"]
    assert "What do you want for dinner?" in render_spoken("what do you want for dinner")
    assert render_spoken("where are you?") == ["Where are you?"]  # typed with its mark: nothing added
    assert render_spoken("see you at 5") == ["See you at 5."]  # not a question
