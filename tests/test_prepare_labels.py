"""30-day readmission labels on hand-built admissions (no Ray)."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from medmplm.data.labels import readmission_labels


def labels(admissions: list[tuple]) -> tuple[list, list]:
    """admissions: (subject_id, admittime, dischtime, admission_type, hospital_death), ISO times."""
    subject, admit, disch, kind, death = zip(*admissions)
    all_30d, nonelective = readmission_labels(
        pa.array(subject, pa.int64()),
        pa.array([datetime.fromisoformat(t) for t in admit], pa.timestamp("s")),
        pa.array([datetime.fromisoformat(t) for t in disch], pa.timestamp("s")),
        pa.array(kind, pa.string()),
        pa.array(death, pa.bool_()),
    )
    return all_30d.to_pylist(), nonelective.to_pylist()


def test_exactly_30_days_counts_and_one_minute_more_does_not() -> None:
    readmitted, _ = labels(
        [
            (1, "2101-01-01 00:00:00", "2101-01-10 12:00:00", "EMERGENCY", False),
            (1, "2101-02-09 12:00:00", "2101-02-12 00:00:00", "EMERGENCY", False),
            (2, "2101-01-01 00:00:00", "2101-01-10 12:00:00", "EMERGENCY", False),
            (2, "2101-02-09 12:01:00", "2101-02-12 00:00:00", "EMERGENCY", False),
        ]
    )
    assert readmitted == [1, 0, 0, 0]


def test_last_admission_is_zero_and_death_is_null() -> None:
    readmitted, nonelective = labels(
        [
            (1, "2101-01-01 00:00:00", "2101-01-03 00:00:00", "EMERGENCY", False),
            (2, "2101-01-01 00:00:00", "2101-01-03 00:00:00", "EMERGENCY", True),
        ]
    )
    assert readmitted == [0, None]
    assert nonelective == [0, None]


def test_death_after_a_readmission_still_labels_the_earlier_stay() -> None:
    readmitted, _ = labels(
        [
            (1, "2101-01-01 00:00:00", "2101-01-03 00:00:00", "EMERGENCY", False),
            (1, "2101-01-10 00:00:00", "2101-01-12 00:00:00", "EMERGENCY", True),
        ]
    )
    assert readmitted == [1, None]


def test_overlapping_stay_counts_as_readmission() -> None:
    readmitted, _ = labels(
        [
            (1, "2101-01-01 00:00:00", "2101-01-10 00:00:00", "EMERGENCY", False),
            (1, "2101-01-05 00:00:00", "2101-01-20 00:00:00", "URGENT", False),
        ]
    )
    assert readmitted == [1, 0]


def test_newborn_is_null_and_never_the_next_admission() -> None:
    readmitted, _ = labels(
        [
            (1, "2101-01-01 00:00:00", "2101-01-03 00:00:00", "NEWBORN", False),
            (1, "2101-01-10 00:00:00", "2101-01-12 00:00:00", "EMERGENCY", False),
            # A NEWBORN row after an admission (bad data) is not a readmission of it.
            (2, "2101-01-01 00:00:00", "2101-01-03 00:00:00", "EMERGENCY", False),
            (2, "2101-01-05 00:00:00", "2101-01-06 00:00:00", " newborn ", False),
        ]
    )
    assert readmitted == [None, 0, 0, None]


def test_non_elective_variant_skips_elective_next_admissions() -> None:
    readmitted, nonelective = labels(
        [
            (1, "2101-01-01 00:00:00", "2101-01-03 00:00:00", "EMERGENCY", False),
            (1, "2101-01-10 00:00:00", "2101-01-11 00:00:00", "ELECTIVE", False),
            (1, "2101-01-20 00:00:00", "2101-01-21 00:00:00", "URGENT", False),
            (1, "2101-06-20 00:00:00", "2101-06-21 00:00:00", "EMERGENCY", False),
        ]
    )
    assert readmitted == [1, 1, 0, 0]
    # The first stay's next non-elective admission (Jan 20) is 17 days after discharge.
    assert nonelective == [1, 1, 0, 0]


def test_elective_only_readmission_is_zero_in_non_elective_variant() -> None:
    readmitted, nonelective = labels(
        [
            (1, "2101-01-01 00:00:00", "2101-01-03 00:00:00", "EMERGENCY", False),
            (1, "2101-01-10 00:00:00", "2101-01-11 00:00:00", "ELECTIVE", False),
        ]
    )
    assert readmitted == [1, 0]
    assert nonelective == [0, 0]


def test_same_admittime_is_not_next_and_patients_do_not_mix() -> None:
    readmitted, _ = labels(
        [
            (1, "2101-01-01 00:00:00", "2101-01-03 00:00:00", "EMERGENCY", False),
            (1, "2101-01-01 00:00:00", "2101-01-02 00:00:00", "EMERGENCY", False),
            (2, "2101-01-04 00:00:00", "2101-01-05 00:00:00", "EMERGENCY", False),
        ]
    )
    assert readmitted == [0, 0, 0]
