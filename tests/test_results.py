from wsae_utils.run.results import combine_verdicts


def test_combine_verdicts_fail_dominates_then_undecided():
    assert combine_verdicts(["reproduced", "reproduced"]) == "reproduced"
    assert combine_verdicts(["reproduced", "not decidable here"]) == "not decidable here"
    assert combine_verdicts(["not decidable here", "not reproduced"]) == "not reproduced"
    assert combine_verdicts([]) == "not decidable here"
    assert combine_verdicts(["necessary", "necessary"], passing="necessary") == "reproduced"
    assert combine_verdicts(["necessary", "not necessary"], passing="necessary") == "not reproduced"
