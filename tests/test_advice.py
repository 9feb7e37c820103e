"""Library errors speak the library's language; the CLI alone turns hints into flags."""

from __future__ import annotations

from irv2cli.cli.advice import FLAG_ADVICE, user_message
from irv2cli.errors import Hint, OutputError


def test_every_hint_has_command_line_advice():
    assert set(FLAG_ADVICE) == set(Hint)


def test_no_hint_names_a_flag_and_every_piece_of_advice_does():
    for hint, advice in FLAG_ADVICE.items():
        assert "--" not in hint.value, hint
        assert any(mark in advice for mark in ("--", "IRV2_", "`irv2 ", "`pip ")), hint


def test_the_cli_gives_the_message_with_flag_advice():
    error = OutputError("out.csv already exists", Hint.RESUME_OR_OVERWRITE)
    assert str(error) == ("out.csv already exists; resume=True continues that run; "
                          "overwrite=True replaces it.")
    assert user_message(error) == ("out.csv already exists; pass --resume to continue that "
                                   "run, or --overwrite to replace it.")
    assert user_message(OutputError("disk on fire")) == "disk on fire"
