"""The stop rule and the every-N-steps validation schedule."""

from trainer.job.validation import is_learned, make_validation


def test_learned_means_two_validations_in_a_row_answered_exactly_as_taught():
    assert not is_learned([])
    assert not is_learned([1.0])
    assert not is_learned([1.0, 0.975])
    assert not is_learned([1.0, 0.5, 1.0])
    assert is_learned([0.2, 1.0, 1.0])
    assert is_learned([1.0, 1.0, 1.0], in_a_row=3) and not is_learned([0.9, 1.0, 1.0], in_a_row=3)


def test_validation_scores_every_n_steps_and_reports_learned():
    hits = iter([0.4, 1.0, 0.9, 1.0, 1.0])
    calls = []

    def score():
        calls.append(1)
        return {"val_identity_hit": 1.0, "val_identity_exact": next(hits), "val_rehearsal_loss": 0.5}

    validate = make_validation(score, every=5)
    records = {step: validate(step) for step in range(1, 26)}
    assert len(calls) == 5 and all(records[s] == {} for s in range(1, 26) if s % 5)
    assert [records[s]["val_identity_exact"] for s in (5, 10, 15, 20, 25)] == [0.4, 1.0, 0.9, 1.0, 1.0]
    assert [records[s]["learned"] for s in (5, 10, 15, 20, 25)] == [False, False, False, False, True]
    assert records[25]["val_rehearsal_loss"] == 0.5


def test_validation_every_zero_never_scores():
    validate = make_validation(lambda: (_ for _ in ()).throw(AssertionError("scored")), every=0)
    assert [validate(step) for step in range(1, 5)] == [{}] * 4
