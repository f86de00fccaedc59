"""The latent patient model: one patient's health state, life events and admissions.

A patient has latent disease factors (``catalogue.conditions.FACTORS``), frailty, a utilisation
propensity and a social profile. Factors and age drive which chronic conditions the patient has;
conditions, social risks and the visit's non-adherence drive why they are admitted; the reason,
severity and conditions drive codes, procedures, drugs and labs. Between admissions the factors
drift, new chronic conditions appear, and past procedures become history codes, so a visit depends
on the ones before it.

Whether the next admission comes within 30 days of a discharge is drawn from
``unplanned_readmission_logit``, which mixes facts the codes carry (conditions, severity,
complications), facts only the notes carry (non-adherence, living alone, homelessness, substance
use, leaving against advice) and their interactions (heart failure x non-adherence, living alone x
age), so a model that reads both codes and text can beat one that reads either.

Codes come from the real ICD-9-CM system (``catalogue.icd9cm``) with MIMIC's long tail
(``medmplm.synthetic.tail``): a modelled condition's curated code often gives way to a sibling in
its category (heart failure may be coded 4280, 42832 or the rarer 42830), incidental diagnoses and
procedures are drawn from the whole book, chapter first and tilted by the latent factors, and some
of a patient's tail diagnoses last and are coded again later. The tail never draws from a modelled
condition's category, so a code in category 428 always means heart failure: rare leaves carry their
condition's signal through their ontology parent, where a one-hot model sees them too seldom to learn
it. Medications have many NDCs each (``formulary``). Measured against the MIMIC-III demo with
``benchmarks/synthetic_realism.py``.

Everything is drawn from one ``random.Random`` per patient, so a patient's record does not depend
on which other patients are generated with it.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from medmplm.ontology import icd9_chapter
from medmplm.synthetic.catalogue.conditions import (
    ADMISSION_REASONS,
    ADMISSION_REASONS_BY_KEY,
    CHRONIC_BY_KEY,
    CHRONIC_CONDITIONS,
    COMPLICATIONS,
    COMPLICATIONS_BY_KEY,
    FACTORS,
    HISTORIES,
    HISTORIES_BY_KEY,
    INCIDENTAL_CODES,
    MINOR_CONDITIONS,
    AdmissionReason,
)
from medmplm.synthetic.catalogue.drugs import DRUGS, DRUGS_BY_KEY
from medmplm.synthetic.catalogue.icd9cm import diagnosis_category, diagnosis_titles, procedure_titles
from medmplm.synthetic.catalogue.labs import LAB_ITEMS, LAB_PANELS
from medmplm.synthetic.formulary import build_formulary
from medmplm.synthetic.tail import (
    DIAGNOSIS_CHAPTER_SHARES,
    NEWBORN_CHAPTER_SHARES,
    PROCEDURE_CHAPTER_SHARES,
    ChapterTail,
    CodeFamilies,
    diagnosis_exclusions,
    diagnosis_family,
    procedure_chapter,
    procedure_family,
)

FIRST_YEAR = 2100
LAST_YEAR = 2200
MAX_ADMISSIONS = 42
NEWBORN_SHARE = 0.045
# Ages above 89 are hidden in MIMIC by moving DOB 300 years before the first admission.
AGE_SHIFT_YEARS = 300

# Hospital-wide orders most stays get, whatever the reason: (drug, probability).
_HOSPITAL_DRUGS: tuple[tuple[str, float], ...] = (
    ("sodium_chloride_flush", 0.85),
    ("heparin_sc", 0.55),
    ("docusate", 0.6),
    ("senna", 0.5),
    ("acetaminophen", 0.7),
    ("bisacodyl", 0.35),
    ("insulin_regular", 0.3),
    ("potassium_chloride", 0.35),
    ("magnesium_sulfate", 0.3),
    ("ondansetron", 0.3),
    ("pantoprazole", 0.3),
    ("morphine", 0.25),
    ("oxycodone", 0.2),
    ("lorazepam", 0.1),
    ("zolpidem", 0.1),
    ("dextrose_5_water", 0.3),
    ("sodium_chloride_bag", 0.35),
    ("famotidine", 0.15),
    ("potassium_chloride_additive", 0.15),
    ("calcium_gluconate", 0.1),
)
# Orders repeat: rows per hospital day beyond the first order, by dosing pattern.
_REORDER_RATE_BY_FREQUENCY = {"ONCE": 0.8, "ASDIR": 0.6, "TITRATE": 0.5}
_DEFAULT_REORDER_RATE = 0.46

_DRUG_INDEX = {drug.key: index for index, drug in enumerate(DRUGS)}
_REORDER_RATE = np.array([_REORDER_RATE_BY_FREQUENCY.get(drug.frequency, _DEFAULT_REORDER_RATE) for drug in DRUGS])
_DOSE_COUNT = np.array([len(drug.doses) for drug in DRUGS])

# The code tail (see medmplm.synthetic.tail). Shares of draws that leave a curated code for a sibling
# in its family, by where the code comes from; codes that flag a fact other parts read (DNR, tobacco,
# external causes) are never varied.
FAMILY_VARIATION = {"principal": 0.4, "secondary": 0.45, "chronic": 0.4, "procedure": 0.2}
# Incidental diagnoses per stay: Poisson with mean base + per unit of frailty, severity and hospital day;
# this share of them comes from the curated common codes, the rest from the whole hierarchy.
INCIDENTAL_BASE = 3.2
INCIDENTAL_CURATED_SHARE = 0.45
# Share of a patient's tail diagnoses that are lasting problems, and the chance one is coded again at a
# later admission (coders re-code chronic problems, so a patient's rare codes recur).
LASTING_TAIL_SHARE = 0.4
LASTING_TAIL_RECODED = 0.6
# How strongly a latent factor pulls incidental codes and procedures toward its chapter (log-share per SD).
CHAPTER_TILT = 0.6
# Codes from the whole procedure book per stay: Poisson with this mean, plus more for ICU and long stays.
TAIL_PROCEDURES_BASE = 1.2
# Zipf exponents (see ChapterTail and CodeFamilies).
DIAGNOSIS_CATEGORY_EXPONENT = 1.15
DIAGNOSIS_LEAF_EXPONENT = 1.3
PROCEDURE_CATEGORY_EXPONENT = 1.8
PROCEDURE_LEAF_EXPONENT = 1.9
FAMILY_EXPONENT = 0.8
# Share of a stay's orders of a drug that use the product (NDC) first dispensed in the stay.
SAME_PRODUCT_IN_STAY = 0.75
_FIXED_CODES = frozenset({"V4986", "3051", "V1582", "V600", "V1581", "V5861", "E8790", "E8788", "V3000", "V3001"})


@dataclass(frozen=True)
class CodeTails:
    """The diagnosis and procedure tails, built once per process from the ICD-9-CM source."""

    diagnosis_families: CodeFamilies
    procedure_families: CodeFamilies
    diagnoses: dict[tuple[str, bool], ChapterTail]  # by (sex, newborn)
    procedures: ChapterTail


def modelled_codes() -> tuple[frozenset[str], frozenset[str]]:
    """Diagnosis and procedure codes the catalogue's conditions, reasons, complications and histories emit."""
    diagnoses: set[str] = set()
    procedures: set[str] = {"3893", "9604", "9671", "9672", "3995"}
    for condition in CHRONIC_CONDITIONS:
        diagnoses.update(code for code, _ in condition.codes + condition.extra_codes)
    for reason in ADMISSION_REASONS:
        diagnoses.update(code for code, _ in reason.codes + reason.extra_codes)
        procedures.update(code for code, _ in reason.procedures)
    for complication in COMPLICATIONS:
        diagnoses.update(code for code, _ in complication.codes)
        procedures.update(code for code, _ in complication.procedures)
    diagnoses.update(history.code for history in HISTORIES)
    diagnoses.update(minor.code for minor in MINOR_CONDITIONS if minor.code)
    return frozenset(diagnoses), frozenset(procedures)


@functools.cache
def code_tails() -> CodeTails:
    """Build the tails (about a second; cached for the process)."""
    modelled_diagnoses, modelled_procedures = modelled_codes()
    diagnoses, procedures = diagnosis_titles(), procedure_titles()
    # The tail never draws from a modelled condition's category or a modelled procedure's subcategory, so
    # among the catalogue's codes only the incidental ones rank within it.
    modelled_categories = frozenset(diagnosis_category(code) for code in modelled_diagnoses | _FIXED_CODES)
    modelled_procedure_families = frozenset(procedure_family(code) for code in modelled_procedures)
    incidental_weights = dict(INCIDENTAL_CODES)
    # A family variant is never a code the catalogue emits by name.
    named_diagnoses = modelled_diagnoses | frozenset(incidental_weights)
    tails = {}
    for sex, newborn in itertools.product(("M", "F"), (False, True)):
        tails[sex, newborn] = ChapterTail(
            diagnoses,
            icd9_chapter,
            diagnosis_category,
            NEWBORN_CHAPTER_SHARES if newborn else DIAGNOSIS_CHAPTER_SHARES,
            incidental_weights,
            DIAGNOSIS_CATEGORY_EXPONENT,
            DIAGNOSIS_LEAF_EXPONENT,
            exclude=diagnosis_exclusions(sex, newborn),
            exclude_categories=modelled_categories,
        )
    return CodeTails(
        diagnosis_families=CodeFamilies(diagnoses, diagnosis_family, named_diagnoses, FAMILY_EXPONENT),
        procedure_families=CodeFamilies(procedures, procedure_family, modelled_procedures, FAMILY_EXPONENT),
        diagnoses=tails,
        procedures=ChapterTail(
            procedures,
            procedure_chapter,
            procedure_family,
            PROCEDURE_CHAPTER_SHARES,
            {},
            PROCEDURE_CATEGORY_EXPONENT,
            PROCEDURE_LEAF_EXPONENT,
            exclude_categories=modelled_procedure_families,
        ),
    )


def _product_cumulative() -> np.ndarray:
    """Normalised cumulative product weights per drug, padded with 1.0 (drugs without NDCs: all 1.0)."""
    formulary = build_formulary()
    widths = [len(formulary.product_cumulative[drug.key]) for drug in DRUGS]
    table = np.ones((len(DRUGS), max(widths)))
    for row, drug in enumerate(DRUGS):
        weights = np.array(formulary.product_cumulative[drug.key])
        if len(weights):
            table[row, : len(weights)] = weights / weights[-1]
    return table


_PRODUCT_CUMULATIVE = _product_cumulative()
_INCIDENTAL_CODE_VALUES = [code for code, _ in INCIDENTAL_CODES]
_INCIDENTAL_CUM_WEIGHTS = list(itertools.accumulate(weight for _, weight in INCIDENTAL_CODES))

_LAB_POSITION = {item.itemid: position for position, item in enumerate(LAB_ITEMS)}
_PANEL_POSITIONS = {panel: [_LAB_POSITION[itemid] for itemid in items] for panel, items in LAB_PANELS.items()}
_PANELS_OF_ITEM = {
    item.itemid: {panel for panel, items in LAB_PANELS.items() if item.itemid in items} for item in LAB_ITEMS
}
_LAB_CENTER = np.array([item.center for item in LAB_ITEMS])
_LAB_LOG_CENTER = np.log(np.maximum(_LAB_CENTER, 1e-9))
_LAB_SPREAD = np.array([item.spread for item in LAB_ITEMS])
_LAB_IS_LOG = np.array([item.log_scale for item in LAB_ITEMS])
_LAB_LEVELS = np.array([len(item.categories) for item in LAB_ITEMS])

_ETHNICITIES = (
    ("WHITE", 0.70),
    ("BLACK/AFRICAN AMERICAN", 0.09),
    ("UNKNOWN/NOT SPECIFIED", 0.08),
    ("HISPANIC OR LATINO", 0.03),
    ("ASIAN", 0.03),
    ("OTHER", 0.025),
    ("UNABLE TO OBTAIN", 0.015),
    ("HISPANIC/LATINO - PUERTO RICAN", 0.01),
    ("ASIAN - CHINESE", 0.01),
    ("BLACK/CAPE VERDEAN", 0.01),
    ("WHITE - RUSSIAN", 0.01),
    ("PATIENT DECLINED TO ANSWER", 0.005),
)
_RELIGIONS = (
    ("CATHOLIC", 0.35),
    ("NOT SPECIFIED", 0.2),
    ("UNOBTAINABLE", 0.14),
    ("PROTESTANT QUAKER", 0.12),
    ("JEWISH", 0.09),
    ("OTHER", 0.04),
    (None, 0.03),
    ("EPISCOPALIAN", 0.01),
    ("GREEK ORTHODOX", 0.005),
    ("CHRISTIAN SCIENTIST", 0.005),
    ("BUDDHIST", 0.005),
    ("MUSLIM", 0.005),
    ("JEHOVAH'S WITNESS", 0.003),
)
_LANGUAGES = (
    ("ENGL", 0.62),
    (None, 0.285),
    ("SPAN", 0.04),
    ("RUSS", 0.02),
    ("PTUN", 0.01),
    ("CANT", 0.01),
    ("PORT", 0.01),
    ("HAIT", 0.005),
)


@dataclass
class SocialProfile:
    """Facts about a patient's life that notes describe and codes rarely carry."""

    smoking: str  # "current", "former", "never"
    pack_years: int
    alcohol: str  # "heavy", "social", "none"
    drug_use: str  # "ivdu", "cocaine", "none"
    living: str  # "alone", "spouse", "family", "facility", "homeless"
    nonadherence_propensity: float  # log-odds offset of skipping medications before a visit

    def risk_keys(self) -> set[str]:
        """The social risk keys (``smoker``, ``heavy_alcohol``, ...) this profile sets."""
        keys = set()
        if self.smoking == "current" or (self.smoking == "former" and self.pack_years >= 20):
            keys.add("smoker")
        if self.alcohol == "heavy":
            keys.add("heavy_alcohol")
        if self.drug_use != "none":
            keys.add("drug_use")
        if self.living == "alone":
            keys.add("lives_alone")
        if self.living == "homeless":
            keys.add("homeless")
        return keys


@dataclass
class PrescriptionBatch:
    """A stay's PRESCRIPTIONS orders as parallel arrays, in STARTDATE order.

    ``drug`` indexes ``catalogue.drugs.DRUGS``; days are offsets from the admission date
    (``end_day`` -1: null ENDDATE); ``dose`` indexes the drug's ``doses``; ``product`` indexes the
    drug's products in the formulary (-1: the row has no NDC).
    """

    drug: np.ndarray
    start_day: np.ndarray
    end_day: np.ndarray
    dose: np.ndarray
    product: np.ndarray

    def __len__(self) -> int:
        return len(self.drug)

    def drug_keys(self) -> list[str]:
        """Distinct drug keys, in order of first order."""
        return [DRUGS[index].key for index in dict.fromkeys(self.drug.tolist())]


@dataclass
class LabBatch:
    """LABEVENTS rows as parallel arrays: ``item`` indexes ``catalogue.labs.LAB_ITEMS``.

    ``draw`` indexes ``times``; ``value`` is the drawn value (for categorical items, the level).
    """

    times: list[datetime]
    draw: np.ndarray
    item: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return len(self.item)


@dataclass
class Admission:
    """Every fact about one hospital stay that tables and notes are rendered from."""

    hadm_id: int
    index: int
    reason: AdmissionReason
    admission_type: str
    admittime: datetime
    dischtime: datetime
    deathtime: datetime | None
    edregtime: datetime | None
    edouttime: datetime | None
    admission_location: str
    discharge_location: str
    insurance: str
    marital_status: str | None
    diagnosis_text: str
    age: float
    severity: float
    icu: bool
    icustay_id: int | None
    chronic: tuple[str, ...]
    histories: tuple[str, ...]
    home_medications: tuple[str, ...]  # drug keys taken at home going into the stay
    complications: list[str]
    nonadherent: bool
    left_ama: bool
    diagnoses: list[str]
    procedures: list[str]
    prescriptions: PrescriptionBatch | None
    labs: LabBatch | None
    has_chartevents: bool
    # Probability this discharge is followed by an unplanned admission within 30 days (None when
    # the patient died here or is a newborn). Kept for diagnostics; never written to the tables.
    readmission_probability: float | None = None
    # Diagnoses drawn from the whole hierarchy's tail rather than a modelled condition (notes name some).
    tail_diagnoses: tuple[str, ...] = ()

    @property
    def died(self) -> bool:
        """Whether the patient died during this stay."""
        return self.deathtime is not None

    @property
    def los_days(self) -> float:
        """Length of stay in days (negative on the rare MIMIC rows with DISCHTIME before ADMITTIME)."""
        return (self.dischtime - self.admittime).total_seconds() / 86400.0


@dataclass
class Patient:
    """A simulated patient and their admissions, in time order."""

    subject_id: int
    gender: str
    dob: datetime  # as written to PATIENTS (shifted for ages above 89)
    clinical_dob: datetime
    first_admit: datetime  # midnight of the day the record starts
    newborn: bool
    factors: dict[str, float]
    frailty: float
    utilization: float
    social: SocialProfile
    ethnicity: str
    religion: str | None
    language: str | None
    chronic: list[str] = field(default_factory=list)
    minors: list[str] = field(default_factory=list)
    histories: list[str] = field(default_factory=list)
    family_history: int = 0
    admissions: list[Admission] = field(default_factory=list)
    outpatient_labs: list[LabBatch] = field(default_factory=list)
    dod: datetime | None = None
    dod_hosp: datetime | None = None
    dod_ssn: datetime | None = None
    # Per-condition choices that stay fixed for the patient (coding variant, home drugs, doses).
    code_variant: dict[str, str] = field(default_factory=dict)
    regimen: dict[str, tuple[str, ...]] = field(default_factory=dict)
    doses: dict[str, int] = field(default_factory=dict)
    # Tail diagnoses that are the patient's lasting problems, re-coded at later admissions.
    lasting_tail: list[str] = field(default_factory=list)

    def age_at(self, when: datetime) -> float:
        """Age in years on ``when`` (the real age, not the shifted one)."""
        return (when - self.clinical_dob).days / 365.25


class PatientRandom(random.Random):
    """``random.Random`` with integer draws taken from one ``random()`` call.

    CPython's ``choice``/``randrange``/``shuffle`` draw integers by rejection sampling on
    ``getrandbits``, several times slower than ``int(random() * n)``; the generator makes millions of
    such draws. For the small ``n`` used here (< 2**20) the float method's bias is below 2**-33.
    """

    def _randbelow(self, n: int) -> int:
        return int(self.random() * n)

    def choice(self, seq):  # noqa: ANN001, ANN201 - same signature as random.Random.choice
        """An element of the non-empty sequence ``seq``."""
        return seq[int(self.random() * len(seq))]

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:  # type: ignore[override]
        """An int from ``range(start, stop, step)`` (or ``range(start)``)."""
        if stop is None:
            return int(self.random() * start)
        if step == 1:
            return start + int(self.random() * (stop - start))
        return start + step * int(self.random() * ((stop - start + step - 1) // step))


def sigmoid(x: float) -> float:
    """Logistic function."""
    return 1.0 / (1.0 + math.exp(-x))


def weighted_choice(rng: random.Random, options: Iterable[tuple[object, float]]) -> object:
    """Draw one value from ``(value, weight)`` pairs."""
    options = list(options)
    total = sum(weight for _, weight in options)
    point = rng.random() * total
    for value, weight in options:
        point -= weight
        if point <= 0:
            return value
    return options[-1][0]


def unplanned_readmission_logit(patient: Patient, admission: Admission) -> float:
    """Log-odds that this discharge is followed by an unplanned admission within 30 days."""
    chronic = set(admission.chronic)
    risks = patient.social.risk_keys()
    age = admission.age
    coded = sum(CHRONIC_BY_KEY[key].readmission_weight for key in chronic)
    coded += 0.25 * admission.severity + sum(
        COMPLICATIONS_BY_KEY[key].readmission_weight for key in admission.complications
    )
    coded += 0.05 * min(len(chronic), 10)
    # Frailty shows in codes (malnutrition, pressure ulcers, DNR, many incidental diagnoses) more
    # than in the note's words.
    coded += 0.45 * max(min(patient.frailty, 3.0), -2.0)
    text_only = (
        1.0 * admission.nonadherent
        + 0.55 * ("lives_alone" in risks)
        + 1.1 * ("homeless" in risks)
        + 0.45 * ("heavy_alcohol" in risks)
        + 0.55 * ("drug_use" in risks)
        + 0.9 * admission.left_ama
        - 0.35 * (patient.social.living == "spouse")
    )
    interactions = (
        1.2 * ("heart_failure" in chronic and admission.nonadherent)
        + 0.9 * ("lives_alone" in risks and age >= 75)
        + 0.7 * ("cirrhosis" in chronic and "heavy_alcohol" in risks)
        + 0.6 * ("copd" in chronic and patient.social.smoking == "current")
    )
    return -5.15 + coded + text_only + interactions


class PatientSimulator:
    """Simulates one patient at a time; ids come from the caller so they are unique across patients."""

    def __init__(self, next_hadm_id: Callable[[], int], next_icustay_id: Callable[[], int]) -> None:
        self._next_hadm_id = next_hadm_id
        self._next_icustay_id = next_icustay_id

    def simulate(self, subject_id: int, rng: random.Random, bulk: np.random.Generator) -> Patient:
        """Draw a patient's state and every admission of their record."""
        patient = self._new_patient(subject_id, rng)
        first_admit = patient.first_admit + timedelta(minutes=rng.randrange(0, 24 * 60))
        if not patient.newborn:
            self._initial_conditions(patient, first_admit, rng)
            self._outpatient_labs(
                patient,
                first_admit - timedelta(minutes=rng.randrange(3 * 1440, 60 * 1440)),
                rng,
                bulk,
                probability=0.25,
            )
        admit = first_admit
        planned = False
        previous_reason: str | None = None
        while True:
            admission = self._admission(patient, admit, rng, bulk, planned=planned, previous_reason=previous_reason)
            patient.admissions.append(admission)
            if admission.died:
                patient.dod_hosp = _midnight(admission.deathtime)
                patient.dod = patient.dod_hosp
                if rng.random() < 0.7:
                    patient.dod_ssn = patient.dod_hosp
                break
            if patient.newborn or len(patient.admissions) >= MAX_ADMISSIONS:
                break
            gap_days, planned = self._next_admission_gap(patient, admission, rng)
            if gap_days is None:
                break
            next_admit = _to_minute(admission.dischtime + timedelta(days=gap_days, minutes=rng.randrange(0, 24 * 60)))
            if next_admit.year > LAST_YEAR:
                break
            self._outpatient_labs(
                patient, _to_minute(admission.dischtime + timedelta(days=gap_days / 2)), rng, bulk, probability=0.3
            )
            self._progress(patient, gap_days / 365.25, next_admit, rng)
            previous_reason = admission.reason.key
            admit = next_admit
        return patient

    # Patient-level state -------------------------------------------------------------------

    def _new_patient(self, subject_id: int, rng: random.Random) -> Patient:
        newborn = rng.random() < NEWBORN_SHARE
        gender = "M" if rng.random() < 0.56 else "F"
        general = rng.gauss(0, 1)
        factors = {name: 0.5 * general + 0.866 * rng.gauss(0, 1) for name in FACTORS}
        if newborn:
            age = 0.0
        elif rng.random() < 0.045:
            age = 90 + rng.random() * 9
        else:
            age = min(89.9, max(18.0, rng.gauss(63, 17)))
        first_year = rng.randrange(FIRST_YEAR, LAST_YEAR - 4)
        first_admit = datetime(first_year, 1, 1) + timedelta(days=rng.randrange(0, 365))
        dob = _midnight(first_admit - timedelta(days=int(age * 365.25)))
        recorded_dob = dob
        if age >= 90:
            recorded_dob = datetime(first_admit.year - AGE_SHIFT_YEARS, 1, 1) + timedelta(days=rng.randrange(0, 365))
        social = self._social_profile(age, gender, newborn, general, rng)
        patient = Patient(
            subject_id=subject_id,
            gender=gender,
            dob=recorded_dob,
            clinical_dob=dob,
            first_admit=first_admit,
            newborn=newborn,
            factors=factors,
            frailty=0.5 * general + 0.03 * (age - 65) + rng.gauss(0, 0.75),
            utilization=math.exp(rng.gauss(0, 1.1)),
            social=social,
            ethnicity=weighted_choice(rng, _ETHNICITIES),
            religion=weighted_choice(rng, _RELIGIONS),
            language=weighted_choice(rng, _LANGUAGES),
            family_history=rng.randrange(10_000),
        )
        return patient

    def _social_profile(
        self, age: float, gender: str, newborn: bool, general: float, rng: random.Random
    ) -> SocialProfile:
        if newborn:
            return SocialProfile("never", 0, "none", "none", "family", -3.0)
        smoking = weighted_choice(rng, (("current", 0.22 if age < 70 else 0.1), ("former", 0.33), ("never", 0.45)))
        pack_years = 0 if smoking == "never" else int(rng.uniform(5, 80))
        heavy = (0.12 if gender == "M" else 0.05) * (1.6 if age < 60 else 0.7)
        alcohol = weighted_choice(rng, (("heavy", heavy), ("social", 0.4), ("none", 0.6 - heavy)))
        drug_weight = 0.06 if age < 55 else 0.015
        drug_use = weighted_choice(
            rng, (("ivdu", drug_weight * 0.6), ("cocaine", drug_weight * 0.4), ("none", 1 - drug_weight))
        )
        homeless = 0.015 + 0.08 * (drug_use != "none") + 0.05 * (alcohol == "heavy")
        facility = 0.02 + (0.2 if age >= 80 else 0.0)
        alone = 0.2 + (0.12 if age >= 75 else 0.0)
        living = weighted_choice(
            rng, (("homeless", homeless), ("facility", facility), ("alone", alone), ("spouse", 0.4), ("family", 0.25))
        )
        propensity = rng.gauss(0, 0.8) - 0.3 * general
        return SocialProfile(smoking, pack_years, alcohol, drug_use, living, propensity)

    def _initial_conditions(self, patient: Patient, when: datetime, rng: random.Random) -> None:
        age = patient.age_at(when)
        risks = patient.social.risk_keys()
        for condition in CHRONIC_CONDITIONS:
            if condition.requires and condition.requires not in patient.chronic:
                continue
            if rng.random() < sigmoid(self._onset_logit(patient, condition.key, age, risks)):
                self._acquire(patient, condition.key, rng)
        for minor in MINOR_CONDITIONS:
            if minor.sex and minor.sex != patient.gender:
                continue
            if rng.random() < minor.prevalence * (0.5 + age / 80):
                patient.minors.append(minor.key)
        history_odds = {
            "cabg": 0.22 if "coronary_artery_disease" in patient.chronic else 0.0,
            "pci": 0.3 if "coronary_artery_disease" in patient.chronic else 0.0,
            "stroke_history": 0.03 + 0.03 * (age > 70) + 0.04 * ("atrial_fibrillation" in patient.chronic),
            "dvt_history": 0.035,
            "breast_cancer_history": 0.05 if patient.gender == "F" and age > 50 else 0.0,
            "prostate_cancer_history": 0.06 if patient.gender == "M" and age > 60 else 0.0,
        }
        for key, probability in history_odds.items():
            if rng.random() < probability:
                self._add_history(patient, key, rng)

    def _onset_logit(self, patient: Patient, key: str, age: float, risks: set[str]) -> float:
        condition = CHRONIC_BY_KEY[key]
        logit = condition.intercept + condition.age_slope * (age - 60) / 10
        logit += sum(weight * patient.factors[name] for name, weight in condition.loadings)
        logit += sum(weight for name, weight in condition.risk_shifts if name in risks)
        if patient.gender == "F":
            logit += condition.female_shift
        return logit

    def _acquire(self, patient: Patient, key: str, rng: random.Random) -> None:
        condition = CHRONIC_BY_KEY[key]
        patient.chronic.append(key)
        patient.code_variant[key] = code_tails().diagnosis_families.vary(
            weighted_choice(rng, condition.codes), FAMILY_VARIATION["chronic"], rng
        )
        patient.regimen[key] = tuple(drug for drug, probability in condition.drugs if rng.random() < probability)

    def _add_history(self, patient: Patient, key: str, rng: random.Random) -> None:
        if key in patient.histories:
            return
        patient.histories.append(key)
        history = HISTORIES_BY_KEY[key]
        patient.regimen["history:" + key] = tuple(
            drug for drug, probability in history.drugs if rng.random() < probability
        )

    def _progress(self, patient: Patient, years: float, when: datetime, rng: random.Random) -> None:
        """Age the patient by ``years``: factors drift up and new chronic conditions may start."""
        for name in FACTORS:
            patient.factors[name] += 0.06 * years + rng.gauss(0, 0.05 * math.sqrt(years + 0.01))
        patient.frailty += 0.08 * years
        age = patient.age_at(when)
        risks = patient.social.risk_keys()
        for condition in CHRONIC_CONDITIONS:
            if condition.key in patient.chronic:
                continue
            if condition.requires and condition.requires not in patient.chronic:
                continue
            annual = 0.12 * sigmoid(self._onset_logit(patient, condition.key, age, risks))
            if rng.random() < 1 - (1 - annual) ** max(years, 0.05):
                self._acquire(patient, condition.key, rng)

    # Admissions ------------------------------------------------------------------------------

    def _choose_reason(
        self, patient: Patient, keys: set[str], rng: random.Random, planned: bool, previous_reason: str | None
    ) -> AdmissionReason:
        options = []
        for reason in ADMISSION_REASONS:
            if reason.newborn:
                continue
            if planned != (reason.admission_type == "ELECTIVE"):
                continue
            if any(required not in keys for required in reason.requires):
                continue
            weight = reason.base_weight
            for key, multiplier in reason.boosts:
                if key in keys:
                    weight *= multiplier
            if reason.key == previous_reason:
                weight *= 2.0
            options.append((reason, weight))
        if not options:
            return self._choose_reason(patient, keys, rng, planned=False, previous_reason=previous_reason)
        return weighted_choice(rng, options)

    def _elective_first(self, patient: Patient, keys: set[str], rng: random.Random) -> bool:
        """Whether a record opens with a scheduled admission; likelier when the patient has a reason for one."""
        if patient.admissions:
            return False
        available = sum(
            reason.base_weight
            for reason in ADMISSION_REASONS
            if reason.admission_type == "ELECTIVE" and all(required in keys for required in reason.requires)
        )
        return rng.random() < min(0.5, 0.12 * available)

    def _admission(
        self,
        patient: Patient,
        admit: datetime,
        rng: random.Random,
        bulk: np.random.Generator,
        planned: bool,
        previous_reason: str | None,
    ) -> Admission:
        age = patient.age_at(admit)
        chronic = tuple(patient.chronic)
        risks = patient.social.risk_keys()
        depressed = "depression" in chronic
        nonadherent = (not patient.newborn) and rng.random() < sigmoid(
            -2.3
            + patient.social.nonadherence_propensity
            + 1.0 * ("homeless" in risks)
            + 0.7 * ("heavy_alcohol" in risks)
            + 0.6 * ("drug_use" in risks)
            + 0.4 * depressed
        )
        keys = set(chronic) | set(patient.histories) | risks
        if nonadherent:
            keys.add("nonadherent")
        if patient.newborn:
            reason = ADMISSION_REASONS_BY_KEY["newborn"]
        else:
            reason = self._choose_reason(
                patient, keys, rng, planned or self._elective_first(patient, keys, rng), previous_reason
            )
        admission_type = reason.admission_type
        if admission_type == "EMERGENCY" and rng.random() < 0.05:
            admission_type = "URGENT"

        severity = reason.severity + 0.35 * patient.frailty + rng.gauss(0, 0.7)
        complications = self._complications(reason, keys, severity, rng)
        los_median = reason.los_median_days * (6.0 if "prematurity" in complications else 1.0)
        los_days = max(0.15, math.exp(math.log(los_median) + 0.22 * severity + rng.gauss(0, 0.55)))
        icu = rng.random() < min(0.99, reason.icu_prob * math.exp(0.35 * severity))
        death_logit = (
            -4.1
            + reason.mortality_shift
            + 0.85 * severity
            + 0.025 * (age - 65)
            + 0.5 * ("metastatic_cancer" in chronic)
            + 0.4 * ("cirrhosis" in chronic)
            + 0.6 * icu
        )
        died = rng.random() < sigmoid(death_logit)
        if died:
            los_days *= rng.uniform(0.3, 1.0)
        dischtime = admit + timedelta(minutes=max(30, int(los_days * 1440)))
        deathtime = dischtime if died else None
        if died and rng.random() < 0.015:
            # MIMIC quirk: deaths in the ED are recorded with DISCHTIME before ADMITTIME.
            dischtime = admit - timedelta(minutes=rng.randrange(20, 600))
            deathtime = dischtime
        edregtime = edouttime = None
        admission_location = self._admission_location(admission_type, patient, rng)
        if admission_location == "EMERGENCY ROOM ADMIT":
            edregtime = admit - timedelta(minutes=rng.randrange(90, 720))
            edouttime = admit + timedelta(minutes=rng.randrange(5, 120))
        left_ama = (
            (not died)
            and (not patient.newborn)
            and rng.random()
            < (0.012 + 0.06 * ("drug_use" in risks) + 0.04 * ("homeless" in risks) + 0.03 * ("heavy_alcohol" in risks))
        )
        admission = Admission(
            hadm_id=self._next_hadm_id(),
            index=len(patient.admissions),
            reason=reason,
            admission_type=admission_type,
            admittime=admit,
            dischtime=dischtime,
            deathtime=deathtime,
            edregtime=edregtime,
            edouttime=edouttime,
            admission_location=admission_location,
            discharge_location=self._discharge_location(patient, age, died, left_ama, severity, rng),
            insurance=self._insurance(patient, age, rng),
            marital_status=self._marital_status(patient, age, rng),
            diagnosis_text=rng.choice(reason.admit_diagnosis),
            age=age,
            severity=severity,
            icu=icu,
            icustay_id=self._next_icustay_id() if icu else None,
            chronic=chronic,
            histories=tuple(patient.histories),
            home_medications=tuple(key for key in self._home_drugs(patient) if DRUGS_BY_KEY[key].home_med),
            complications=complications,
            nonadherent=nonadherent,
            left_ama=left_ama,
            diagnoses=[],
            procedures=[],
            prescriptions=None,
            labs=None,
            has_chartevents=rng.random() < (0.97 if icu else 0.9),
        )
        admission.diagnoses = self._diagnoses(patient, admission, rng)
        admission.procedures = self._procedures(patient, admission, rng)
        admission.prescriptions = self._prescriptions(patient, admission, rng, bulk)
        admission.labs = self._labs(admission, rng, bulk)
        for history in reason.adds_history:
            if not died:
                self._add_history(patient, history, rng)
        return admission

    def _complications(self, reason: AdmissionReason, keys: set[str], severity: float, rng: random.Random) -> list[str]:
        scale = math.exp(0.35 * severity)
        chosen = []
        for key, probability in reason.complications:
            if rng.random() < min(0.95, probability * scale):
                chosen.append(key)
        if reason.newborn:
            return chosen
        for complication in COMPLICATIONS:
            if complication.base_prob <= 0 or complication.key in chosen:
                continue
            probability = complication.base_prob * scale
            for key, multiplier in complication.boosts:
                if key in keys:
                    probability *= multiplier
            if rng.random() < min(0.9, probability):
                chosen.append(complication.key)
        return chosen

    def _admission_location(self, admission_type: str, patient: Patient, rng: random.Random) -> str:
        if admission_type == "NEWBORN":
            return weighted_choice(
                rng,
                (
                    ("PHYS REFERRAL/NORMAL DELI", 0.6),
                    ("CLINIC REFERRAL/PREMATURE", 0.3),
                    ("** INFO NOT AVAILABLE **", 0.1),
                ),
            )
        if admission_type == "ELECTIVE":
            return weighted_choice(rng, (("PHYS REFERRAL/NORMAL DELI", 0.95), ("CLINIC REFERRAL/PREMATURE", 0.05)))
        if admission_type == "URGENT":
            return weighted_choice(rng, (("TRANSFER FROM HOSP/EXTRAM", 0.8), ("CLINIC REFERRAL/PREMATURE", 0.2)))
        facility = 0.5 if patient.social.living == "facility" else 0.02
        return weighted_choice(
            rng,
            (
                ("EMERGENCY ROOM ADMIT", 0.7),
                ("TRANSFER FROM HOSP/EXTRAM", 0.14),
                ("CLINIC REFERRAL/PREMATURE", 0.1),
                ("TRANSFER FROM SKILLED NUR", facility),
                ("TRANSFER FROM OTHER HEALT", 0.01),
            ),
        )

    def _discharge_location(
        self, patient: Patient, age: float, died: bool, left_ama: bool, severity: float, rng: random.Random
    ) -> str:
        if died:
            return "DEAD/EXPIRED"
        if left_ama:
            return "LEFT AGAINST MEDICAL ADVI"
        if patient.newborn:
            return "HOME"
        if patient.social.living == "facility":
            return weighted_choice(
                rng,
                (
                    ("SNF", 0.6),
                    ("LONG TERM CARE HOSPITAL", 0.15),
                    ("REHAB/DISTINCT PART HOSP", 0.15),
                    ("HOSPICE-MEDICAL FACILITY", 0.1),
                ),
            )
        frail = sigmoid(0.06 * (age - 75) + 0.6 * severity)
        return weighted_choice(
            rng,
            (
                ("HOME", 1.2 - frail),
                ("HOME HEALTH CARE", 0.6),
                ("SNF", 0.9 * frail),
                ("REHAB/DISTINCT PART HOSP", 0.5 * frail),
                ("LONG TERM CARE HOSPITAL", 0.08 * frail),
                ("HOSPICE-HOME", 0.04 * frail),
                ("SHORT TERM HOSPITAL", 0.03),
                ("HOME WITH HOME IV PROVIDR", 0.02),
            ),
        )

    def _insurance(self, patient: Patient, age: float, rng: random.Random) -> str:
        if patient.newborn:
            return weighted_choice(rng, (("Private", 0.7), ("Medicaid", 0.3)))
        if age >= 65:
            return weighted_choice(rng, (("Medicare", 0.88), ("Private", 0.1), ("Government", 0.02)))
        poor = patient.social.living == "homeless" or patient.social.drug_use != "none"
        return weighted_choice(
            rng,
            (
                ("Private", 0.2 if poor else 0.58),
                ("Medicaid", 0.6 if poor else 0.2),
                ("Medicare", 0.12),
                ("Self Pay", 0.04),
                ("Government", 0.04),
            ),
        )

    def _marital_status(self, patient: Patient, age: float, rng: random.Random) -> str | None:
        if patient.newborn:
            return None
        living = patient.social.living
        if living == "spouse":
            return weighted_choice(rng, (("MARRIED", 0.93), ("LIFE PARTNER", 0.02), (None, 0.05)))
        if living in ("alone", "homeless"):
            widowed = 0.5 if age >= 70 else 0.05
            return weighted_choice(
                rng,
                (
                    ("SINGLE", 0.45),
                    ("WIDOWED", widowed),
                    ("DIVORCED", 0.25),
                    ("SEPARATED", 0.04),
                    ("UNKNOWN (DEFAULT)", 0.01),
                    (None, 0.05),
                ),
            )
        return weighted_choice(
            rng,
            (
                ("MARRIED", 0.35),
                ("SINGLE", 0.3),
                ("WIDOWED", 0.2 if age >= 70 else 0.02),
                ("DIVORCED", 0.08),
                (None, 0.07),
            ),
        )

    def _diagnoses(self, patient: Patient, admission: Admission, rng: random.Random) -> list[str]:
        reason = admission.reason
        tails = code_tails()

        def secondary(code: str) -> str:
            if code in _FIXED_CODES:
                return code
            return tails.diagnosis_families.vary(code, FAMILY_VARIATION["secondary"], rng)

        chronic_variant = dict(patient.code_variant)
        codes: list[str] = []
        if reason.key == "heart_failure_exacerbation":
            # The acute-on-chronic code replaces the patient's chronic heart failure code.
            variant = chronic_variant.get("heart_failure", "4280")
            codes.append("42823" if variant in ("42822", "4254") else "42833" if variant == "42832" else "4280")
        else:
            principal = weighted_choice(rng, reason.codes)
            if principal not in _FIXED_CODES:
                principal = tails.diagnosis_families.vary(principal, FAMILY_VARIATION["principal"], rng)
            codes.append(principal)
        for code, probability in reason.extra_codes:
            if rng.random() < probability:
                codes.append(secondary(code))
        for key in admission.complications:
            complication = COMPLICATIONS_BY_KEY[key]
            codes.append(secondary(weighted_choice(rng, complication.codes)))
        for key in admission.chronic:
            condition = CHRONIC_BY_KEY[key]
            if rng.random() < condition.coded_prob:
                codes.append(chronic_variant[key])
            for code, probability in condition.extra_codes:
                if rng.random() < probability:
                    codes.append(secondary(code))
        for minor in MINOR_CONDITIONS:
            if minor.key in patient.minors and minor.code and rng.random() < minor.coded_prob:
                codes.append(minor.code)
        for key in admission.histories:
            history = HISTORIES_BY_KEY[key]
            if rng.random() < history.coded_prob:
                codes.append(history.code)
        social = patient.social
        if social.smoking == "current" and rng.random() < 0.55:
            codes.append("3051")
        elif social.smoking == "former" and rng.random() < 0.3:
            codes.append("V1582")
        if social.living == "homeless" and rng.random() < 0.2:
            codes.append("V600")
        if admission.nonadherent and rng.random() < 0.12:
            codes.append("V1581")
        if "warfarin" in self._home_drugs(patient) and rng.random() < 0.5:
            codes.append("V5861")
        if (
            admission.age > 80 or "metastatic_cancer" in admission.chronic or patient.frailty > 1.5
        ) and rng.random() < 0.2:
            codes.append("V4986")
        if "cath_complication" in admission.complications:
            codes.append("E8790")
        if (
            reason.key in ("coronary_bypass", "aortic_valve_replacement", "hip_fracture")
            and admission.complications
            and rng.random() < 0.2
        ):
            codes.append("E8788")
        frailty = max(patient.frailty, 0.0)
        if rng.random() < 0.07 * frailty:
            codes.append("2639")
        if rng.random() < 0.04 * frailty:
            codes.append(rng.choice(("70703", "70722")))
        incidental = _poisson(
            rng,
            INCIDENTAL_BASE
            + 1.2 * frailty
            + 0.35 * max(admission.severity, 0.0)
            + 0.08 * min(max(admission.los_days, 0.0), 20),
        )
        curated = sum(rng.random() < INCIDENTAL_CURATED_SHARE for _ in range(incidental))
        codes.extend(
            secondary(code)
            for code in rng.choices(_INCIDENTAL_CODE_VALUES, cum_weights=_INCIDENTAL_CUM_WEIGHTS, k=curated)
        )
        tail = [code for code in patient.lasting_tail if rng.random() < LASTING_TAIL_RECODED]
        diagnosis_tail = tails.diagnoses[patient.gender, patient.newborn]
        fresh = diagnosis_tail.draw(
            rng, diagnosis_tail.chapter_weights(patient.factors, CHAPTER_TILT), incidental - curated
        )
        patient.lasting_tail.extend(code for code in fresh if rng.random() < LASTING_TAIL_SHARE)
        tail.extend(fresh)
        unique = list(dict.fromkeys(codes + tail))[:39]
        admission.tail_diagnoses = tuple(code for code in dict.fromkeys(tail) if code in unique)
        return unique

    def _procedures(self, patient: Patient, admission: Admission, rng: random.Random) -> list[str]:
        tails = code_tails()

        def vary(code: str) -> str:
            return tails.procedure_families.vary(code, FAMILY_VARIATION["procedure"], rng)

        procedures = [vary(code) for code, probability in admission.reason.procedures if rng.random() < probability]
        for key in admission.complications:
            for code, probability in COMPLICATIONS_BY_KEY[key].procedures:
                if rng.random() < probability:
                    procedures.append(vary(code))
        if admission.icu and not admission.reason.newborn:
            if rng.random() < 0.3:
                procedures.append("3893")
            if admission.severity > 1.3 and rng.random() < 0.5:
                procedures.extend(("9604", "9671" if admission.los_days < 5 else "9672"))
        if "end_stage_renal_disease" in admission.chronic and rng.random() < 0.75:
            procedures.append("3995")
        if not admission.reason.newborn:
            extra = _poisson(
                rng,
                TAIL_PROCEDURES_BASE
                + 0.6 * admission.icu
                + 0.3 * max(admission.severity, 0.0)
                + 0.05 * min(max(admission.los_days, 0.0), 20),
            )
            weights = tails.procedures.chapter_weights(patient.factors, CHAPTER_TILT)
            procedures.extend(tails.procedures.draw(rng, weights, extra))
        return list(dict.fromkeys(procedures))

    def _home_drugs(self, patient: Patient) -> list[str]:
        drugs: list[str] = []
        for key in patient.chronic:
            drugs.extend(patient.regimen.get(key, ()))
        for key in patient.histories:
            drugs.extend(patient.regimen.get("history:" + key, ()))
        for minor in MINOR_CONDITIONS:
            if minor.key in patient.minors:
                drugs.extend(drug for drug, probability in minor.drugs if probability >= 0.5)
        return list(dict.fromkeys(drugs))

    def _prescriptions(
        self, patient: Patient, admission: Admission, rng: random.Random, bulk: np.random.Generator
    ) -> PrescriptionBatch:
        reason = admission.reason
        wanted: list[str] = []
        wanted.extend(drug for drug, probability in reason.drugs if rng.random() < probability)
        for key in admission.complications:
            wanted.extend(drug for drug, probability in COMPLICATIONS_BY_KEY[key].drugs if rng.random() < probability)
        continued = 0.55 if admission.nonadherent else 0.9
        wanted.extend(drug for drug in self._home_drugs(patient) if rng.random() < continued)
        if not reason.newborn:
            wanted.extend(drug for drug, probability in _HOSPITAL_DRUGS if rng.random() < probability)
            if patient.social.smoking == "current" and rng.random() < 0.5:
                wanted.append("nicotine_patch")
            if "diabetes" in admission.chronic:
                wanted.append("insulin_regular")
        keys = list(dict.fromkeys(wanted))
        hospital_days = max(1, int(math.ceil(max(admission.los_days, 0.1))))
        drug_index = np.fromiter((_DRUG_INDEX[key] for key in keys), dtype=np.int64, count=len(keys))
        usual_dose = np.empty(len(keys), dtype=np.int64)
        for position, key in enumerate(keys):
            drug = DRUGS_BY_KEY[key]
            if drug.home_med and key in patient.doses:
                usual_dose[position] = patient.doses[key]
            else:
                usual_dose[position] = rng.randrange(len(drug.doses))
                if drug.home_med:
                    patient.doses[key] = int(usual_dose[position])
        orders = 1 + bulk.poisson(_REORDER_RATE[drug_index] * min(hospital_days, 25))
        row_drug = np.repeat(drug_index, orders)
        rows = len(row_drug)
        start = bulk.integers(0, hospital_days, rows)
        end = np.minimum(hospital_days, start + 1 + bulk.poisson(1.5, rows))
        end[bulk.random(rows) < 0.01] = -1
        dose_count = _DOSE_COUNT[row_drug]
        dose = np.where(
            bulk.random(rows) < 0.8, np.repeat(usual_dose, orders), (bulk.random(rows) * dose_count).astype(np.int64)
        )
        # Orders pick a drug's NDCs Zipf-distributed, and a stay's reorders mostly keep the product the
        # pharmacy first dispensed; about 0.4% of rows carry no NDC at all (a MIMIC quirk).
        cumulative = _PRODUCT_CUMULATIVE[row_drug]
        fresh_pick = (cumulative < bulk.random(rows)[:, None]).sum(axis=1)
        stay_pick = (_PRODUCT_CUMULATIVE[drug_index] < bulk.random(len(keys))[:, None]).sum(axis=1)
        product_pick = np.where(bulk.random(rows) < SAME_PRODUCT_IN_STAY, np.repeat(stay_pick, orders), fresh_pick)
        product = np.where(bulk.random(rows) < 0.004, -1, product_pick)
        order = np.argsort(start, kind="stable")
        return PrescriptionBatch(row_drug[order], start[order], end[order], dose[order], product[order])

    def _lab_shifts(self, admission: Admission) -> tuple[dict[int, float], dict[int, float], set[str]]:
        chronic_shift: dict[int, float] = {}
        acute_shift: dict[int, float] = {}
        panels = {"chem7", "cbc"}
        for key in admission.chronic:
            condition = CHRONIC_BY_KEY[key]
            for itemid, shift in condition.labs:
                chronic_shift[itemid] = chronic_shift.get(itemid, 0.0) + shift
            panels.update(condition.panels)
        intensity = 0.75 + 0.25 * admission.severity
        for itemid, shift in admission.reason.labs:
            acute_shift[itemid] = acute_shift.get(itemid, 0.0) + shift * intensity
        panels.update(admission.reason.panels)
        for key in admission.complications:
            for itemid, shift in COMPLICATIONS_BY_KEY[key].labs:
                acute_shift[itemid] = acute_shift.get(itemid, 0.0) + shift * intensity
        for itemid in list(chronic_shift) + list(acute_shift):
            panels.update(_PANELS_OF_ITEM[itemid])
        return chronic_shift, acute_shift, panels

    def _labs(self, admission: Admission, rng: random.Random, bulk: np.random.Generator) -> LabBatch:
        if admission.reason.newborn:
            draws = 1 + _poisson(rng, 0.3 * min(admission.los_days, 20))
            return self._draw_panels(admission.admittime, ("cbc",), {}, {}, draws, rng, bulk, decay=False)
        chronic_shift, acute_shift, panels = self._lab_shifts(admission)
        draws = 1 + _poisson(rng, 0.5 * min(max(admission.los_days, 0.0), 20))
        ordered = ("chem7", "cbc") + tuple(sorted(panels - {"chem7", "cbc"}))
        return self._draw_panels(admission.admittime, ordered, chronic_shift, acute_shift, draws, rng, bulk, decay=True)

    def _draw_panels(
        self,
        start: datetime,
        panels: tuple[str, ...],
        chronic_shift: dict[int, float],
        acute_shift: dict[int, float],
        draws: int,
        rng: random.Random,
        bulk: np.random.Generator,
        decay: bool,
    ) -> LabBatch:
        times: list[datetime] = []
        draw_of_row: list[int] = []
        items: list[int] = []
        for draw in range(draws):
            if draw == 0:
                times.append(start - timedelta(minutes=rng.randrange(0, 180)))
            else:
                times.append(_midnight(start) + timedelta(days=draw, minutes=rng.randrange(180, 420)))
            for panel in panels:
                if draw > 0 and panel not in ("chem7", "cbc"):
                    if panel == "urinalysis" or rng.random() > (0.6 if panel == "mg_phos_ca" else 0.3):
                        continue
                positions = _PANEL_POSITIONS[panel]
                items.extend(positions)
                draw_of_row.extend([draw] * len(positions))
        item = np.array(items, dtype=np.int64)
        draw_index = np.array(draw_of_row, dtype=np.int64)
        chronic = np.zeros(len(LAB_ITEMS))
        acute = np.zeros(len(LAB_ITEMS))
        for itemid, shift in chronic_shift.items():
            chronic[_LAB_POSITION[itemid]] = shift
        for itemid, shift in acute_shift.items():
            acute[_LAB_POSITION[itemid]] = shift
        recovery = np.exp(-0.45 * draw_index) if decay else 1.0
        z = chronic[item] + recovery * acute[item] + bulk.standard_normal(len(item))
        linear = _LAB_CENTER[item] + _LAB_SPREAD[item] * z
        logged = np.exp(_LAB_LOG_CENTER[item] + _LAB_SPREAD[item] * z)
        value = np.where(_LAB_IS_LOG[item], logged, linear)
        categorical = _LAB_LEVELS[item] > 0
        value = np.where(categorical, np.clip(np.floor(z), 0, _LAB_LEVELS[item] - 1), np.maximum(value, 0.0))
        return LabBatch(times, draw_index, item, value)

    def _outpatient_labs(
        self, patient: Patient, when: datetime, rng: random.Random, bulk: np.random.Generator, probability: float
    ) -> None:
        if rng.random() >= probability:
            return
        chronic_shift: dict[int, float] = {}
        for key in patient.chronic:
            for itemid, shift in CHRONIC_BY_KEY[key].labs:
                chronic_shift[itemid] = chronic_shift.get(itemid, 0.0) + shift
        patient.outpatient_labs.append(
            self._draw_panels(when, ("chem7", "cbc"), chronic_shift, {}, 1, rng, bulk, decay=False)
        )

    def _next_admission_gap(
        self, patient: Patient, admission: Admission, rng: random.Random
    ) -> tuple[float | None, bool]:
        """Days from discharge to the next admission (None: no further admission), and whether it is planned."""
        probability = sigmoid(unplanned_readmission_logit(patient, admission))
        admission.readmission_probability = probability
        if rng.random() < probability:
            return 0.5 + 29.0 * rng.betavariate(1.1, 2.2), False
        planned = 0.0
        if "metastatic_cancer" in admission.chronic:
            planned = 0.12
        elif admission.reason.key == "myocardial_infarction":
            planned = 0.04
        elif "coronary_artery_disease" in admission.chronic:
            planned = 0.008
        if rng.random() < planned:
            return 1.0 + 28.0 * rng.random(), True
        chronic = set(admission.chronic)
        death_logit = (
            -3.3
            + 0.5 * admission.severity
            + 0.035 * (admission.age - 65)
            + 1.0 * ("metastatic_cancer" in chronic)
            + 0.5 * ("cirrhosis" in chronic)
            + 0.4 * ("heart_failure" in chronic)
            + 0.3 * ("end_stage_renal_disease" in chronic)
        )
        if rng.random() < sigmoid(death_logit):
            death = _midnight(admission.dischtime + timedelta(days=rng.uniform(31, 1200)))
            # Deaths after the shifted study window are not recorded, as for a patient lost to follow-up.
            if death.year <= LAST_YEAR:
                patient.dod_ssn = death
                patient.dod = death
            return None, False
        burden = 1.0 + 0.12 * len(chronic)
        later = min(0.95, 0.058 * patient.utilization * burden)
        if rng.random() >= later:
            return None, False
        mean_gap = 900.0 / (0.6 + patient.utilization)
        return 30.5 + rng.expovariate(1.0 / mean_gap), False


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method; means here are small (< 30), where it is exact and fast."""
    if mean <= 0:
        return 0
    limit = math.exp(-mean)
    count = 0
    product = rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _midnight(when: datetime) -> datetime:
    return datetime(when.year, when.month, when.day)


def _to_minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)
