"""Clinical note text rendered from a simulated admission, in MIMIC-III's style.

Notes describe the stay in words, not codes: conditions by synonym or abbreviation ("HTN", "CHF",
"DM2"), drugs by generic or brand name with doses and frequencies, and the social facts that only
notes carry (living alone, homelessness, substance use, missed medications, leaving against
advice). Notes omit some coded conditions and mention some uncoded ones, as real notes do.
De-identification placeholders follow MIMIC's ``[**...**]`` forms.

Each function draws from the patient's ``random.Random`` only, in a fixed order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from medmplm.synthetic.catalogue.conditions import (
    CHRONIC_BY_KEY,
    COMPLICATIONS_BY_KEY,
    FAMILY_HISTORY,
    HISTORIES_BY_KEY,
    MINOR_CONDITIONS,
)
from medmplm.synthetic.catalogue.drugs import DRUGS_BY_KEY, Drug
from medmplm.synthetic.catalogue.icd9cm import diagnosis_titles, procedure_titles
from medmplm.synthetic.catalogue.labs import LAB_ITEMS
from medmplm.synthetic.model import Admission, LabBatch, Patient

_MINOR_BY_KEY = {minor.key: minor for minor in MINOR_CONDITIONS}
# Chances that a discharge summary names one of the stay's tail diagnoses (see model.Admission.tail_diagnoses)
# in the past history and in the discharge diagnoses: notes name a minority of a stay's secondary codes.
TAIL_MENTION_IN_HISTORY = 0.25
TAIL_MENTION_IN_DISCHARGE_DIAGNOSIS = 0.3
_TITLE_QUALIFIERS = re.compile(r",? (?:unspecified|not elsewhere classified|NOS|NEC)$|, (?:site|type) unspecified$")


def tail_condition_phrase(code: str, rng: random.Random) -> str:
    """How a note names a tail diagnosis: its long title in plain words, or now and then the coder's short title."""
    short, long = diagnosis_titles()[code]
    if rng.random() < 0.2:
        return short
    plain = _TITLE_QUALIFIERS.sub("", long)
    first = plain.split(" ", 1)[0]
    return plain if first.isupper() else plain[:1].lower() + plain[1:]

SERVICES = {
    "MED": "MEDICINE",
    "CMED": "MEDICINE",
    "CSURG": "CARDIOTHORACIC",
    "NMED": "NEUROLOGY",
    "NSURG": "NEUROSURGERY",
    "ORTHO": "ORTHOPAEDICS",
    "OMED": "MEDICINE",
    "NB": "NEONATOLOGY",
}

_FREQUENCY_WORDS = {
    "DAILY": "DAILY (Daily)",
    "BID": "BID (2 times a day)",
    "TID": "TID (3 times a day)",
    "QID": "QID (4 times a day)",
    "QHS": "HS (at bedtime)",
    "HS": "HS (at bedtime)",
    "Q6H PRN": "Q6H (every 6 hours) as needed",
    "Q4H PRN": "Q4H (every 4 hours) as needed for pain",
    "Q8H PRN": "Q8H (every 8 hours) as needed for nausea",
    "HS PRN": "HS (at bedtime) as needed for insomnia",
    "BID PRN": "BID (2 times a day) as needed for constipation",
    "DAILY PRN": "DAILY (Daily) as needed for constipation",
    "QWEEK": "QSUN (every Sunday)",
    "TID W/MEALS": "TID W/MEALS (3 TIMES A DAY WITH MEALS)",
    "DAILY (at 4pm)": "Once Daily at 4 PM",
    "Q12H": "Q12H (every 12 hours)",
    "Q24H": "Q24H (every 24 hours)",
    "Q8H": "Q8H (every 8 hours)",
    "Q6H": "Q6H (every 6 hours)",
    "PRN": "PRN (as needed) as needed for chest pain",
}
_COUNT_WORDS = ("Zero", "One", "Two", "Three", "Four")

# How MIMIC's "Pertinent Results" lines abbreviate lab labels.
_LAB_ABBREVIATIONS = {
    50868: "AnGap",
    50882: "HCO3",
    50893: "Calcium",
    50902: "Cl",
    50912: "Creat",
    50931: "Glucose",
    50960: "Mg",
    50970: "Phos",
    50971: "K",
    50983: "Na",
    51006: "UreaN",
    50861: "ALT",
    50878: "AST",
    50863: "AlkPhos",
    50885: "TotBili",
    50862: "Albumin",
    50910: "CK(CPK)",
    51003: "cTropnT",
    50963: "proBNP",
    50852: "%HbA1c",
    50956: "Lipase",
    50889: "CRP",
    50813: "Lactate",
    50820: "pH",
    50818: "pCO2",
    50821: "pO2",
    51221: "Hct",
    51222: "Hgb",
    51248: "MCH",
    51249: "MCHC",
    51250: "MCV",
    51265: "Plt Ct",
    51277: "RDW",
    51279: "RBC",
    51301: "WBC",
    51256: "Neuts",
    51244: "Lymphs",
    51237: "INR(PT)",
    51274: "PT",
    51275: "PTT",
}
_RESULT_LINE_GROUPS = (
    ("BLOOD", (51301, 51279, 51222, 51221, 51250, 51248, 51249, 51277, 51265)),
    ("BLOOD", (51256, 51244)),
    ("BLOOD", (51274, 51275, 51237)),
    ("BLOOD", (50931, 51006, 50912, 50983, 50971, 50902, 50882, 50868)),
    ("BLOOD", (50861, 50878, 50910, 50863, 50885)),
    ("BLOOD", (51003, 50963)),
    ("BLOOD", (50862, 50893, 50970, 50960)),
    ("BLOOD", (50852, 50956, 50889)),
    ("BLOOD", (50820, 50818, 50821, 50813)),
)
_LAB_POSITION = {item.itemid: position for position, item in enumerate(LAB_ITEMS)}

_PROCEDURE_WORDS = {
    "9604": "Endotracheal intubation",
    "9671": "Mechanical ventilation",
    "9672": "Mechanical ventilation",
    "3893": "Central venous line placement",
    "3891": "Arterial line placement",
    "9904": "Transfusion of packed red blood cells",
    "3722": "Cardiac catheterization",
    "3723": "Right and left heart catheterization",
    "8856": "Coronary angiography",
    "0066": "Percutaneous coronary intervention",
    "3607": "Drug-eluting stent placement",
    "3615": "Coronary artery bypass grafting",
    "3612": "Coronary artery bypass grafting",
    "3613": "Coronary artery bypass grafting",
    "3521": "Aortic valve replacement",
    "3522": "Aortic valve replacement",
    "4513": "Upper endoscopy (EGD)",
    "4516": "EGD with biopsy",
    "4523": "Colonoscopy",
    "4291": "Esophageal variceal banding",
    "3995": "Hemodialysis",
    "3491": "Thoracentesis",
    "5491": "Paracentesis",
    "7935": "Open reduction internal fixation of hip fracture",
    "8151": "Hip hemiarthroplasty",
    "0159": "Craniotomy for tumor resection",
    "4311": "PEG tube placement",
    "311": "Tracheostomy",
    "0331": "Lumbar puncture",
    "9390": "BiPAP",
    "8872": "Transthoracic echocardiogram",
}

_ORGANISMS = (
    "E. coli",
    "Klebsiella pneumoniae",
    "MSSA",
    "MRSA",
    "Pseudomonas aeruginosa",
    "Streptococcus pneumoniae",
    "Enterococcus",
)
_SIDES = ("right", "left", "bilateral")


@dataclass(frozen=True)
class NoteRow:
    """One NOTEEVENTS row before ids are assigned; ``hadm_id`` None for outpatient notes."""

    hadm_id: int | None
    chartdate: datetime
    charttime: datetime | None
    storetime: datetime | None
    category: str
    description: str
    cgid: int | None
    text: str


def deid_date(when: datetime) -> str:
    """A date as MIMIC's de-identified placeholder, e.g. ``[**2151-7-16**]``."""
    return f"[**{when.year}-{when.month}-{when.day}**]"


def _clock(when: datetime) -> str:
    hour = when.hour % 12 or 12
    return f"{hour:02d}:{when.minute:02d}{'AM' if when.hour < 12 else 'PM'}"


def _name(rng: random.Random) -> str:
    return f"[**First Name4 (NamePattern1) {rng.randrange(1, 9999)}**] [**Last Name (NamePattern1) {rng.randrange(1, 9999)}**]"


class _Slots(dict):
    """Template values filled on demand, so a template only draws the values it uses."""

    def __init__(self, fillers: dict[str, Callable[[], str]]) -> None:
        super().__init__()
        self._fillers = fillers

    def __missing__(self, key: str) -> str:
        value = self._fillers[key]()
        self[key] = value
        return value


class NoteWriter:
    """Renders the notes of one patient's admissions."""

    def __init__(self, patient: Patient, rng: random.Random) -> None:
        self._patient = patient
        self._rng = rng

    # Shared pieces ------------------------------------------------------------------------

    def _age_words(self, admission: Admission) -> str:
        if admission.age >= 90:
            return "[**Age over 90 **]"
        return str(int(admission.age))

    def _sex_word(self) -> str:
        return "M" if self._patient.gender == "M" else "F"

    def _person(self, admission: Admission) -> str:
        rng = self._rng
        sex = ("man", "male", "M", "gentleman") if self._patient.gender == "M" else ("woman", "female", "F", "lady")
        return f"{self._age_words(admission)} {rng.choice(('yo', 'year old', 'y/o'))} {rng.choice(sex)}"

    def _phrase(self, phrases: tuple[str, ...]) -> str:
        return self._rng.choice(phrases)

    def _mentioned_history(self, admission: Admission) -> list[str]:
        """Past-history items the note names: most coded conditions, plus uncoded minor ones."""
        rng = self._rng
        items = []
        for key in admission.chronic:
            condition = CHRONIC_BY_KEY[key]
            if key in ("alcohol_use_disorder", "opioid_use_disorder"):
                continue
            if rng.random() < condition.mention_prob:
                items.append(self._phrase(condition.phrases))
        for key in admission.histories:
            if rng.random() < 0.85:
                items.append(self._phrase(HISTORIES_BY_KEY[key].phrases))
        for key in self._patient.minors:
            if rng.random() < 0.8:
                items.append(self._phrase(_MINOR_BY_KEY[key].phrases))
        for code in admission.tail_diagnoses:
            if rng.random() < TAIL_MENTION_IN_HISTORY:
                items.append(tail_condition_phrase(code, rng))
        rng.shuffle(items)
        return items

    def _slots(self, admission: Admission) -> _Slots:
        rng = self._rng
        reason = admission.reason
        first_drugs = [drug for drug in (admission.prescriptions.drug_keys() if admission.prescriptions else [])]
        antibiotics = [
            DRUGS_BY_KEY[key].note_names[0] for key in first_drugs if DRUGS_BY_KEY[key].atc4.startswith("J01")
        ]
        fillers: dict[str, Callable[[], str]] = {
            "complaint": lambda: rng.choice(reason.chief_complaints),
            "temp": lambda: f"{rng.uniform(100.4, 103.5):.1f}",
            "sbp": lambda: str(rng.randrange(68, 95)),
            "dbp": lambda: str(rng.randrange(35, 60)),
            "hr": lambda: str(rng.randrange(105, 160)),
            "lactate": lambda: f"{rng.uniform(2.1, 8.5):.1f}",
            "days": lambda: str(rng.randrange(2, 8)),
            "side": lambda: rng.choice(_SIDES),
            "sat": lambda: str(rng.randrange(82, 94)),
            "organism": lambda: rng.choice(_ORGANISMS),
            "antibiotics": lambda: " and ".join(antibiotics[:2]) if antibiotics else "broad spectrum antibiotics",
            "pressor_sentence": lambda: (
                f"Required levophed for blood pressure support, weaned off on hospital day {rng.randrange(2, 5)}."
                if "septic_shock" in admission.complications
                else "Blood pressure responded to IV fluid boluses."
            ),
            "duration": lambda: str(rng.choice((5, 7, 10, 14))),
            "ph": lambda: f"{rng.uniform(7.12, 7.32):.2f}",
            "pco2": lambda: str(rng.randrange(50, 95)),
            "po2": lambda: str(rng.randrange(48, 80)),
            "day": lambda: str(rng.randrange(2, 6)),
            "hours": lambda: str(rng.randrange(2, 36)),
            "leads": lambda: rng.choice(("V2-V4", "II, III, aVF", "V4-V6", "I, aVL")),
            "troponin": lambda: f"{rng.uniform(0.08, 4.5):.2f}",
            "vessel": lambda: rng.choice(("one vessel", "two vessel", "three vessel", "left main")),
            "artery": lambda: rng.choice(("LAD", "RCA", "LCx", "OM1")),
            "ef": lambda: str(rng.choice((20, 25, 30, 35, 40, 45, 55, 60))),
            "weight": lambda: str(rng.randrange(5, 20)),
            "adherence_clause": lambda: self._adherence_clause(admission),
            "liters": lambda: f"{rng.uniform(2, 9):.1f}",
            "lasix_dose": lambda: str(rng.choice((20, 40, 80))),
            "creatinine": lambda: f"{rng.uniform(1.3, 4.5):.1f}",
            "baseline_creatinine": lambda: f"{rng.uniform(0.8, 1.6):.1f}",
            "time": lambda: f"{rng.randrange(1, 12)}{rng.choice(('am', 'pm'))}",
            "hct": lambda: str(rng.randrange(18, 29)),
            "baseline_hct": lambda: str(rng.randrange(32, 40)),
            "lavage": lambda: rng.choice(("positive for coffee grounds", "negative", "cleared after 500cc")),
            "units": lambda: str(rng.randrange(2, 7)),
            "egd_finding": lambda: rng.choice(
                (
                    "a clean-based duodenal ulcer",
                    "a gastric ulcer with visible vessel",
                    "diffuse gastritis",
                    "an AVM in the jejunum",
                )
            ),
            "colon_finding": lambda: rng.choice(
                ("diverticulosis without active bleeding", "a bleeding polyp which was removed", "internal hemorrhoids")
            ),
            "bands": lambda: str(rng.randrange(2, 6)),
            "nihss": lambda: str(rng.randrange(2, 22)),
            "ct_finding": lambda: rng.choice(
                (
                    "without acute hemorrhage",
                    "with a small left basal ganglia hemorrhage",
                    "with loss of gray-white differentiation in the right MCA territory",
                )
            ),
            "territory": lambda: rng.choice(("left MCA", "right MCA", "posterior circulation", "left PCA")),
            "o2": lambda: str(rng.randrange(2, 5)),
            "glucose": lambda: str(rng.randrange(420, 900)),
            "anion_gap": lambda: str(rng.randrange(22, 34)),
            "ciwa": lambda: str(rng.randrange(12, 30)),
            "diazepam": lambda: str(rng.randrange(20, 200, 10)),
            "finder": lambda: rng.choice(("a friend", "his roommate", "police", "a family member", "shelter staff")),
            "lipase": lambda: str(rng.randrange(400, 4000)),
            "location": lambda: rng.choice(("home", "her nursing home", "the grocery store", "church")),
            "fracture": lambda: rng.choice(("intertrochanteric fracture", "femoral neck fracture")),
            "complication_word": lambda: rng.choice(
                (
                    "post-operative delirium",
                    "acute blood loss anemia requiring transfusion",
                    "urinary retention",
                    "no complications",
                )
            ),
            "grafts": lambda: str(rng.randrange(2, 5)),
            "ava": lambda: f"{rng.uniform(0.5, 0.9):.1f}",
            "valve_size": lambda: str(rng.choice((21, 23, 25, 27))),
            "cycle": lambda: str(rng.randrange(1, 7)),
            "cancer": lambda: self._phrase(CHRONIC_BY_KEY["metastatic_cancer"].phrases),
            "months": lambda: str(rng.randrange(2, 12)),
        }
        return _Slots(fillers)

    def _adherence_clause(self, admission: Admission) -> str:
        rng = self._rng
        if not admission.nonadherent:
            return rng.choice(
                (
                    "Reports good medication compliance.",
                    "She has been taking all of her medications as prescribed.",
                    "Denies missing any doses of her medications.",
                    "",
                    "",
                )
            )
        home = [DRUGS_BY_KEY[key] for key in admission.home_medications]
        drug = rng.choice(home).note_names[-1] if home else "medications"
        return rng.choice(
            (
                f"Notably, she ran out of her {drug} {rng.randrange(1, 4)} weeks ago and did not get it refilled.",
                f"Admits to not taking her {drug} for the past {rng.randrange(3, 21)} days.",
                "Reports she has not been taking her medications regularly because she cannot afford them.",
                f"States she stopped taking {drug} because it made her feel tired.",
                "Has been noncompliant with her medications and missed her last two clinic appointments.",
                f"Per family she has been skipping doses of {drug} and eating a high salt diet.",
            )
        )

    # Discharge summary ----------------------------------------------------------------------

    def discharge_summary(self, admission: Admission, labs: LabBatch | None) -> str:
        """A MIMIC-style discharge summary (several thousand characters)."""
        rng = self._rng
        patient = self._patient
        reason = admission.reason
        if reason.newborn:
            return self._newborn_summary(admission)
        she_he = (lambda text: text) if patient.gender == "F" else _masculine
        slots = self._slots(admission)
        history = self._mentioned_history(admission)
        principal = self._phrase(reason.phrases)
        person = self._person(admission)
        parts: list[str] = []
        parts.append(
            f"Admission Date:  {deid_date(admission.admittime)}              Discharge Date:   {deid_date(admission.dischtime)}\n\n"
        )
        parts.append(f"Date of Birth:  {deid_date(patient.dob)}             Sex:   {self._sex_word()}\n\n")
        parts.append(f"Service: {SERVICES.get(reason.service, 'MEDICINE')}\n\n")
        parts.append(
            "Allergies:\n"
            + rng.choice(
                (
                    "Patient recorded as having No Known Allergies to Drugs",
                    "Penicillins",
                    "Sulfa (Sulfonamide Antibiotics)",
                    "Codeine / Lisinopril",
                    "Patient recorded as having No Known Allergies to Drugs",
                )
            )
            + "\n\n"
        )
        parts.append(f"Attending:[**First Name3 (LF) {rng.randrange(1, 9999)}**]\n")
        parts.append(f"Chief Complaint:\n{slots['complaint']}\n\n")
        titles = procedure_titles()
        procedures = [(_PROCEDURE_WORDS.get(code) or titles[code][1]) for code in admission.procedures]
        parts.append(
            "Major Surgical or Invasive Procedure:\n"
            + ("\n".join(dict.fromkeys(procedures)) if procedures else "None")
            + "\n\n\n"
        )

        hpi_template = rng.choice(reason.hpi) if reason.hpi else "presents with {complaint}."
        pmh = ", ".join(history[:6]) if history else "no significant past medical history"
        hpi = f"{person} with PMH significant for {pmh} who " + hpi_template.format_map(slots)
        if admission.nonadherent and "{adherence_clause}" not in hpi_template and rng.random() < 0.85:
            hpi += " " + self._adherence_clause(admission)
        hpi += (
            f"\n\nIn the ED, initial VS were: T {rng.uniform(96.5, 101.5):.1f} P {rng.randrange(55, 130)} "
            f"BP {rng.randrange(85, 185)}/{rng.randrange(40, 100)} R {rng.randrange(12, 30)} O2 sat {rng.randrange(86, 100)}% "
            f"on {rng.choice(('RA', '2L NC', '4L NC', 'NRB'))}. {self._ed_course(admission)}\n\n"
            f"On arrival to the {'MICU' if admission.icu else 'floor'}, patient reports {rng.choice(('feeling better', 'ongoing ' + slots['complaint'], 'mild discomfort', 'no complaints'))}.\n\n"
            "Review of systems:\n(+) Per HPI\n(-) Denies headache, vision changes, rhinorrhea, congestion, sore throat, "
            "cough, chest pain, abdominal pain, nausea, vomiting, diarrhea, constipation, BRBPR, melena, dysuria, "
            "arthralgias or myalgias."
        )
        parts.append("History of Present Illness:\n" + she_he(hpi) + "\n\n")
        parts.append(
            "Past Medical History:\n" + ("\n".join(f"- {item}" for item in history) if history else "None") + "\n\n"
        )
        parts.append("Social History:\n" + she_he(self._social_history(admission)) + "\n\n")
        parts.append(
            "Family History:\n"
            + FAMILY_HISTORY[patient.family_history % len(FAMILY_HISTORY)].format(age=40 + patient.family_history % 40)
            + "\n\n"
        )
        parts.append("Physical Exam:\n" + self._physical_exam(admission) + "\n\n")
        parts.append(
            "Pertinent Results:\n" + self._pertinent_results(labs) + self._imaging_impressions(admission) + "\n\n"
        )
        parts.append(
            "Brief Hospital Course:\n" + she_he(self._hospital_course(admission, slots, principal, pmh)) + "\n\n"
        )
        home = list(admission.home_medications)
        parts.append("Medications on Admission:\n" + self._admission_medication_list(home) + "\n\n")
        if admission.died:
            parts.append("Discharge Medications:\nNone\n\nDischarge Disposition:\nExpired\n\n")
            parts.append(f"Discharge Diagnosis:\n{principal}\n\nDischarge Condition:\nExpired\n\n")
            parts.append("Discharge Instructions:\nN/A\n\nFollowup Instructions:\nN/A\n\n")
        else:
            discharge_drugs = self._discharge_drugs(admission, home)
            parts.append("Discharge Medications:\n" + self._discharge_medication_list(discharge_drugs) + "\n\n")
            parts.append("Discharge Disposition:\n" + self._disposition(admission) + "\n\n")
            parts.append("Discharge Diagnosis:\n" + self._discharge_diagnosis(admission, principal) + "\n\n")
            parts.append(
                "Discharge Condition:\n"
                + rng.choice(
                    (
                        "Mental Status: Clear and coherent.\nLevel of Consciousness: Alert and interactive.\nActivity Status: Ambulatory - Independent.",
                        "Mental Status: Confused - sometimes.\nLevel of Consciousness: Alert and interactive.\nActivity Status: Ambulatory - requires assistance or aid (walker or cane).",
                        "Hemodynamically stable, afebrile, tolerating PO.",
                    )
                )
                + "\n\n"
            )
            parts.append("Discharge Instructions:\n" + self._instructions(admission, principal) + "\n\n")
            parts.append("Followup Instructions:\n" + self._followup(admission) + "\n\n")
        signer = f"{_name(rng)} MD [**MD Number({rng.randrange(1, 4)}) {rng.randrange(100, 9999)}**]"
        parts.append(
            f"                             {signer}\n\nCompleted by:{deid_date(admission.dischtime + timedelta(days=rng.randrange(0, 3)))}"
        )
        return "".join(parts)

    def addendum(self, admission: Admission) -> str:
        """A short discharge-summary addendum, as MIMIC files under DESCRIPTION "Addendum"."""
        rng = self._rng
        return (
            f"Name:  [**Known lastname {rng.randrange(1, 99999)}**],[**Known firstname {rng.randrange(1, 9999)}**]"
            f"             Unit No:   [**Numeric Identifier {rng.randrange(10000, 99999)}**]\n\n"
            f"Admission Date:  {deid_date(admission.admittime)}              Discharge Date:   {deid_date(admission.dischtime)}\n\n"
            f"Date of Birth:  {deid_date(self._patient.dob)}             Sex:   {self._sex_word()}\n\n"
            f"Service: {SERVICES.get(admission.reason.service, 'MEDICINE')}\n\nAddendum:\n"
            + rng.choice(
                (
                    "Patient's discharge was delayed by one day pending rehab bed availability.",
                    "Final blood cultures were no growth at 5 days. No change to the plan.",
                    "Please note the correct dose of the home medication is as listed in the discharge medication list.",
                )
            )
            + f"\n\n{_name(rng)} MD [**MD Number(2) {rng.randrange(100, 9999)}**]\n\nCompleted by:{deid_date(admission.dischtime + timedelta(days=rng.randrange(1, 10)))}"
        )

    def _ed_course(self, admission: Admission) -> str:
        rng = self._rng
        reason_drugs = {key for key, _ in admission.reason.drugs}
        given_keys = [
            key
            for key in (admission.prescriptions.drug_keys() if admission.prescriptions else [])
            if key in reason_drugs
        ]
        given = [DRUGS_BY_KEY[key].note_names[0] for key in given_keys[:3]]
        text = f"Patient was given {', '.join(given)}." if given else "Labs were drawn and a CXR was obtained."
        if admission.icu:
            text += rng.choice(
                (" Admitted to the MICU for closer monitoring.", " Vitals on transfer to the ICU were stable.", "")
            )
        return text

    def _social_history(self, admission: Admission) -> str:
        rng = self._rng
        social = self._patient.social
        sentences = []
        living = social.living
        if living == "alone":
            sentences.append(
                rng.choice(
                    (
                        "Lives alone in an apartment.",
                        "Lives alone; daughter lives out of state.",
                        "Widowed, lives alone on the second floor.",
                        "Lives by herself, no services at home.",
                        "Lives alone and manages her own medications.",
                    )
                )
                if rng.random() < 0.93
                else "Lives in an apartment."
            )
        elif living == "homeless":
            sentences.append(
                rng.choice(
                    (
                        "Currently homeless, staying at a shelter.",
                        "Homeless, sleeps on the street or at [**Location (un) 86**] shelter.",
                        "Undomiciled for the past year.",
                        "Recently evicted, currently homeless and staying with friends intermittently.",
                    )
                )
            )
        elif living == "spouse":
            sentences.append(
                rng.choice(
                    (
                        "Lives with her husband who manages her medications.",
                        "Lives with husband, who is very involved in her care.",
                        "Married, lives with spouse in [**Location (un) 86**].",
                        "Lives with husband; children nearby.",
                    )
                )
            )
        elif living == "family":
            sentences.append(
                rng.choice(
                    (
                        "Lives with her daughter and grandchildren.",
                        "Lives with son and daughter-in-law.",
                        "Lives with family who help with medications.",
                        "Lives with her sister.",
                    )
                )
            )
        else:
            sentences.append(
                rng.choice(
                    (
                        "Resides at [**Hospital 100**] Rehab and Nursing Center.",
                        "Lives in an assisted living facility.",
                        "Nursing home resident.",
                    )
                )
            )
        if social.smoking == "current":
            sentences.append(
                rng.choice(
                    (
                        f"Smokes {rng.choice(('1/2', '1', '2'))} ppd, {social.pack_years} pack-year history.",
                        f"Active smoker with {social.pack_years} pack-year history.",
                        "Tobacco: current smoker.",
                    )
                )
            )
        elif social.smoking == "former":
            sentences.append(
                rng.choice(
                    (
                        f"Former smoker, quit {rng.randrange(1, 30)} years ago ({social.pack_years} pack-years).",
                        f"Remote tobacco history, {social.pack_years} pack-years.",
                    )
                )
            )
        else:
            sentences.append(rng.choice(("Denies tobacco.", "Never smoker.", "No tobacco use.")))
        if social.alcohol == "heavy":
            sentences.append(
                rng.choice(
                    (
                        f"Drinks {rng.randrange(6, 18)} beers daily.",
                        "Drinks 1 pint of vodka per day.",
                        "Heavy EtOH use, last drink the day prior to admission.",
                        "Reports drinking a 1/5 of liquor daily; h/o withdrawal.",
                    )
                )
            )
        elif social.alcohol == "social":
            sentences.append(rng.choice(("Occasional glass of wine.", "Drinks socially.", "Rare EtOH.")))
        else:
            sentences.append(rng.choice(("Denies EtOH.", "No alcohol use.", "Does not drink alcohol.")))
        if social.drug_use == "ivdu":
            sentences.append(
                rng.choice(
                    (
                        "Active IV heroin use.",
                        "History of IVDU, reports last use 1 week ago.",
                        "Uses heroin IV daily; on methadone in the past.",
                    )
                )
            )
        elif social.drug_use == "cocaine":
            sentences.append(
                rng.choice(("Reports crack cocaine use.", "Intermittent cocaine use, last used last weekend."))
            )
        else:
            sentences.append(rng.choice(("Denies illicit drug use.", "No IVDU.", "Denies drug use.")))
        if admission.nonadherent and rng.random() < 0.4:
            sentences.append(
                rng.choice(
                    (
                        "Reports difficulty affording medications.",
                        "Has missed several PCP appointments.",
                        "Does not use a pill box and often forgets doses.",
                    )
                )
            )
        sentences.append(
            rng.choice(
                (
                    "Retired teacher.",
                    "Works in construction.",
                    "Unemployed.",
                    "Retired.",
                    "On disability.",
                    "Former mechanic.",
                    "",
                )
            )
        )
        return " ".join(sentence for sentence in sentences if sentence)

    def _physical_exam(self, admission: Admission) -> str:
        rng = self._rng
        lungs = (
            "Crackles at the bases bilaterally"
            if admission.reason.key in ("heart_failure_exacerbation", "pneumonia")
            else "Diffuse expiratory wheezes"
            if admission.reason.key == "copd_exacerbation"
            else "Clear to auscultation bilaterally"
        )
        return (
            f"Vitals: T: {rng.uniform(97.0, 101.0):.1f} BP: {rng.randrange(90, 170)}/{rng.randrange(50, 95)} P: {rng.randrange(60, 115)} "
            f"R: {rng.randrange(14, 26)} O2: {rng.randrange(90, 100)}% {rng.choice(('RA', '2L'))}\n"
            f"General: {rng.choice(('Alert, oriented, no acute distress', 'Elderly, ill-appearing, mildly uncomfortable', 'Lethargic but arousable'))}\n"
            "HEENT: Sclera anicteric, MMM, oropharynx clear\n"
            f"Neck: supple, JVP {rng.choice(('not elevated', 'elevated to 10 cm', 'elevated to the angle of the jaw'))}, no LAD\n"
            f"Lungs: {lungs}, no rhonchi\n"
            f"CV: {rng.choice(('Regular rate and rhythm', 'Irregularly irregular', 'Tachycardic'))}, normal S1 + S2, {rng.choice(('no murmurs', '2/6 systolic murmur at the RUSB'))}\n"
            "Abdomen: soft, non-tender, non-distended, bowel sounds present, no organomegaly\n"
            f"Ext: {rng.choice(('warm, well perfused, 2+ pulses, no edema', '2+ pitting edema to the knees bilaterally', 'trace bilateral LE edema'))}\n"
            f"Neuro: {rng.choice(('CNII-XII intact, 5/5 strength throughout', 'A&Ox3, moving all extremities', 'Oriented x1, no focal deficits'))}"
        )

    def _pertinent_results(self, labs: LabBatch | None) -> str:
        if labs is None or len(labs) == 0:
            return ""
        lines = []
        last_draw = int(labs.draw.max())
        for draw in dict.fromkeys((0, last_draw)):
            when = labs.times[draw]
            rows = labs.draw == draw
            values = dict(zip(labs.item[rows].tolist(), labs.value[rows].tolist()))
            for fluid, itemids in _RESULT_LINE_GROUPS:
                pieces = []
                for itemid in itemids:
                    position = _LAB_POSITION[itemid]
                    if position not in values:
                        continue
                    item = LAB_ITEMS[position]
                    if item.categories:
                        continue
                    value = values[position]
                    text = f"{value:.{item.decimals}f}"
                    star = "*" if float(text) < item.low or float(text) > item.high else ""
                    pieces.append(f"{_LAB_ABBREVIATIONS[itemid]}-{text}{star}")
                if pieces:
                    lines.append(f"{deid_date(when)} {_clock(when)} {fluid} " + " ".join(pieces))
        return "\n".join(lines) + "\n"

    def _imaging_impressions(self, admission: Admission) -> str:
        rng = self._rng
        studies = admission.reason.radiology
        if not studies:
            return ""
        study = rng.choice(studies)
        return f"\n{study}: {_radiology_impression(admission, study, rng)}"

    def _hospital_course(self, admission: Admission, slots: _Slots, principal: str, pmh: str) -> str:
        rng = self._rng
        reason = admission.reason
        lines = [
            f"{self._person(admission)} with {pmh} who presented with {slots['complaint']}, found to have {principal}.\n"
        ]
        course = (
            rng.choice(reason.course).format_map(slots) if reason.course else "Treated supportively with improvement."
        )
        lines.append(f"# {_sentence_case(principal)}: {course}")
        for key in admission.complications:
            complication = COMPLICATIONS_BY_KEY[key]
            if rng.random() < complication.mention_prob:
                lines.append(
                    f"# {_sentence_case(self._phrase(complication.phrases))}: {rng.choice(_COMPLICATION_COURSE)}"
                )
        if admission.nonadherent and rng.random() < 0.55:
            lines.append(
                "# Medication non-adherence: "
                + rng.choice(
                    (
                        "Extensive discussion with patient regarding the importance of taking medications as prescribed. Pill box provided.",
                        "Likely contributed to presentation. Social work consulted to assist with medication costs.",
                        "Patient counseled; VNA arranged for medication teaching.",
                    )
                )
            )
        for key in admission.chronic:
            condition = CHRONIC_BY_KEY[key]
            if rng.random() > condition.mention_prob * 0.5:
                continue
            drugs = self._patient.regimen.get(key, ())
            drug_words = ", ".join(
                DRUGS_BY_KEY[drug].note_names[rng.randrange(len(DRUGS_BY_KEY[drug].note_names))] for drug in drugs[:2]
            )
            action = rng.choice(("Continued home", "Stable; continued", "Held", "Restarted"))
            lines.append(
                f"# {self._phrase(condition.phrases)}: "
                + (f"{action} {drug_words}." if drug_words else "Stable, no active issues.")
            )
        living = self._patient.social.living
        if admission.left_ama:
            lines.append(
                "# Dispo: Patient left against medical advice on the day of discharge despite extensive counseling regarding risks."
            )
        elif living == "alone" and rng.random() < 0.5:
            lines.append("# Dispo: Lives alone; PT evaluated and recommended home with services. VNA arranged.")
        elif living == "homeless" and rng.random() < 0.7:
            lines.append("# Dispo: Homeless; social work assisted with shelter placement at discharge.")
        code_status = "DNR/DNI" if "V4986" in admission.diagnoses else "Full code"
        lines.append(f"# Code: {code_status} (confirmed)")
        return "\n".join(lines)

    def _admission_medication_list(self, home: list[str]) -> str:
        if not home:
            return "None"
        rng = self._rng
        lines = []
        for number, key in enumerate(home, 1):
            drug = DRUGS_BY_KEY[key]
            dose = drug.doses[self._patient.doses.get(key, 0)]
            lines.append(
                f"{number}. {drug.note_names[rng.randrange(len(drug.note_names))]} {dose} {drug.dose_unit} {drug.route} {drug.frequency}"
            )
        return "\n".join(lines)

    def _discharge_drugs(self, admission: Admission, home: list[str]) -> list[Drug]:
        rng = self._rng
        given = admission.prescriptions.drug_keys() if admission.prescriptions else []
        keys = [key for key in home if rng.random() < 0.92]
        keys += [
            key
            for key in given
            if DRUGS_BY_KEY[key].home_med
            and DRUGS_BY_KEY[key].frequency != "ONCE"
            and key not in keys
            and rng.random() < 0.6
        ]
        return [DRUGS_BY_KEY[key] for key in keys]

    def _discharge_medication_list(self, drugs: list[Drug]) -> str:
        if not drugs:
            return "None"
        rng = self._rng
        lines = []
        for number, drug in enumerate(drugs, 1):
            dose = drug.doses[self._patient.doses.get(drug.key, 0)]
            count = 1 if drug.unit_dose <= 0 else max(1, min(4, round(_as_float(dose) / drug.unit_dose)))
            form = {"TAB": "Tablet", "CAP": "Capsule"}.get(drug.form_unit, drug.form_unit.capitalize())
            lines.append(
                f"{number}. {drug.generic} {drug.strength} Sig: {_COUNT_WORDS[count]} ({count}) {form} {drug.route} "
                f"{_FREQUENCY_WORDS.get(drug.frequency, drug.frequency)}.\nDisp:*{rng.choice((30, 60, 90))} {form}(s)* Refills:*{rng.randrange(0, 3)}*"
            )
        return "\n".join(lines)

    def _disposition(self, admission: Admission) -> str:
        location = admission.discharge_location
        if location in ("SNF", "REHAB/DISTINCT PART HOSP", "LONG TERM CARE HOSPITAL", "HOSPICE-MEDICAL FACILITY"):
            return f"Extended Care\n\nFacility:\n[**Hospital {self._rng.randrange(100, 9999)}**] - [**Location (un) {self._rng.randrange(1, 999)}**]"
        if location in ("HOME HEALTH CARE", "HOME WITH HOME IV PROVIDR", "HOSPICE-HOME"):
            return f"Home With Service\n\nFacility:\n[**Location (un) {self._rng.randrange(1, 999)}**] VNA"
        if location == "LEFT AGAINST MEDICAL ADVI":
            return "Left Against Medical Advice"
        return "Home"

    def _discharge_diagnosis(self, admission: Admission, principal: str) -> str:
        rng = self._rng
        secondary = [
            self._phrase(COMPLICATIONS_BY_KEY[key].phrases)
            for key in admission.complications
            if rng.random() < COMPLICATIONS_BY_KEY[key].mention_prob
        ]
        secondary += [self._phrase(CHRONIC_BY_KEY[key].phrases) for key in admission.chronic if rng.random() < 0.35]
        secondary += [
            tail_condition_phrase(code, rng)
            for code in admission.tail_diagnoses
            if rng.random() < TAIL_MENTION_IN_DISCHARGE_DIAGNOSIS
        ]
        text = f"Primary:\n{principal}\n"
        if secondary:
            text += "\nSecondary:\n" + "\n".join(secondary)
        return text

    def _instructions(self, admission: Admission, principal: str) -> str:
        rng = self._rng
        text = (
            f"You were admitted to the hospital with {principal}. {rng.choice(_INSTRUCTION_MIDDLE)}\n\n"
            "Please take all of your medications as prescribed and keep your follow up appointments."
        )
        if admission.nonadherent and rng.random() < 0.5:
            text += " It is very important that you take your medications every day; missing doses is likely what brought you back to the hospital."
        if "heart_failure" in admission.chronic:
            text += " Weigh yourself every morning, call your doctor if your weight goes up more than 3 lbs. Adhere to a 2 gm sodium diet."
        return text

    def _followup(self, admission: Admission) -> str:
        rng = self._rng
        visits = []
        for _ in range(rng.randrange(1, 4)):
            when = admission.dischtime + timedelta(days=rng.randrange(3, 30))
            visits.append(
                f"Provider: [**Name10 (NameIs) {rng.randrange(1, 9999)}**] [**Last Name (NamePattern4) {rng.randrange(1, 9999)}**], MD "
                f"Phone:[**Telephone/Fax (1) {rng.randrange(1000, 9999)}**] Date/Time:{deid_date(when)} {rng.randrange(8, 17)}:{rng.choice(('00', '15', '30', '45'))}"
            )
        return "\n".join(visits)

    def _newborn_summary(self, admission: Admission) -> str:
        rng = self._rng
        weeks = 35 if "prematurity" in admission.complications else rng.randrange(37, 42)
        grams = rng.randrange(1800, 2500) if weeks < 37 else rng.randrange(2600, 4300)
        problems = [self._phrase(COMPLICATIONS_BY_KEY[key].phrases) for key in admission.complications]
        return (
            f"Admission Date:  {deid_date(admission.admittime)}              Discharge Date:   {deid_date(admission.dischtime)}\n\n"
            f"Date of Birth:  {deid_date(self._patient.dob)}             Sex:   {self._sex_word()}\n\nService: NB\n\n"
            f"HISTORY OF PRESENT ILLNESS:  Baby [**Known lastname {rng.randrange(1, 99999)}**] is a {weeks} week, {grams} gram infant "
            f"born by {rng.choice(('spontaneous vaginal delivery', 'cesarean section'))} to a {rng.randrange(18, 44)} year old G{rng.randrange(1, 5)} "
            f"mother. Apgars {rng.randrange(6, 9)} and {rng.randrange(8, 10)}.\n\n"
            f"HOSPITAL COURSE BY SYSTEMS:\n{'; '.join(problems) if problems else 'Well infant.'}\n"
            "Respiratory: comfortable in room air.\nCardiovascular: no murmur.\nFluids, electrolytes and nutrition: breast feeding well.\n"
            f"Infectious disease: {'ampicillin and gentamicin for 48 hours, cultures negative' if 'newborn_sepsis_rule_out' in admission.complications else 'no issues'}.\n\n"
            f"CONDITION ON DISCHARGE:  Stable.\n\nDISCHARGE DISPOSITION:  Home with parents.\n\nPRIMARY PEDIATRICIAN:  Dr. [**Last Name (STitle) {rng.randrange(1, 9999)}**]\n\n"
            f"                        {_name(rng)}, MD  [**MD Number(1) {rng.randrange(1, 9999)}**]\n\nDictated By:[**Last Name (NamePattern1) {rng.randrange(1, 9999)}**]"
        )

    # Other note categories --------------------------------------------------------------------

    def stay_notes(self, admission: Admission) -> list[NoteRow]:
        """Nursing, radiology, ECG, physician, echo and other notes written during a stay."""
        rng = self._rng
        notes: list[NoteRow] = []
        days = max(1, int(admission.los_days + 0.999))
        start = admission.admittime
        if admission.reason.newborn:
            for _ in range(1 + _small_poisson(rng, 1.2 * min(days, 30))):
                notes.append(
                    self._nursing_other(
                        admission, start + timedelta(minutes=rng.randrange(0, days * 1440)), newborn=True
                    )
                )
            return notes
        for _ in range(_small_poisson(rng, 0.8 * min(days, 20))):
            notes.append(
                self._nursing_other(admission, start + timedelta(minutes=rng.randrange(0, days * 1440)), newborn=False)
            )
        for _ in range(1 + _small_poisson(rng, 0.45 * min(days, 20))):
            notes.append(self._radiology(admission, start + timedelta(minutes=rng.randrange(0, days * 1440))))
        for _ in range(_small_poisson(rng, 1.3)):
            notes.append(
                self._ecg(admission.hadm_id, admission, start + timedelta(minutes=rng.randrange(0, days * 1440)))
            )
        if admission.icu:
            icu_days = min(days, 15)
            for _ in range(_small_poisson(rng, 0.9 * icu_days)):
                notes.append(self._physician(admission, start + timedelta(minutes=rng.randrange(0, icu_days * 1440))))
            for _ in range(_small_poisson(rng, 0.7 * icu_days)):
                notes.append(self._nursing(admission, start + timedelta(minutes=rng.randrange(0, icu_days * 1440))))
            if "9671" in admission.procedures or "9672" in admission.procedures:
                for _ in range(1 + _small_poisson(rng, 0.5 * icu_days)):
                    notes.append(
                        self._respiratory(admission, start + timedelta(minutes=rng.randrange(0, icu_days * 1440)))
                    )
        if admission.reason.service in ("CMED", "CSURG") or "heart_failure" in admission.chronic:
            if rng.random() < 0.45:
                notes.append(self._echo(admission, start + timedelta(minutes=rng.randrange(0, days * 1440))))
        if rng.random() < 0.12 or (self._patient.social.living in ("homeless", "alone") and rng.random() < 0.35):
            notes.append(self._social_work(admission, start + timedelta(minutes=rng.randrange(0, days * 1440))))
        if rng.random() < 0.08:
            notes.append(
                self._short_note(
                    admission,
                    start + timedelta(minutes=rng.randrange(0, days * 1440)),
                    rng.choice(
                        (
                            ("Nutrition", "Nutrition Note"),
                            ("Rehab Services", "Physical Therapy Evaluation"),
                            ("Case Management ", "Case Management Note"),
                            ("General", "Generic Note"),
                            ("Pharmacy", "Pharmacy Note"),
                            ("Consult", "Consult Note"),
                        )
                    ),
                )
            )
        return notes

    def outpatient_notes(self, when: datetime) -> list[NoteRow]:
        """Radiology and ECG reports from outpatient visits: NOTEEVENTS rows with a null HADM_ID."""
        rng = self._rng
        notes = []
        if rng.random() < 0.5:
            notes.append(
                NoteRow(
                    None,
                    _midnight(when),
                    when,
                    when + timedelta(minutes=rng.randrange(30, 600)),
                    "Radiology",
                    rng.choice(("CHEST (PA & LAT)", "RENAL U.S.", "CT HEAD W/O CONTRAST", "MAMMOGRAM BILAT")),
                    None,
                    self._radiology_text(None, rng.choice(("CHEST (PA & LAT)", "RENAL U.S.")), when),
                )
            )
        if rng.random() < 0.5:
            notes.append(self._ecg(None, None, when))
        return notes

    def _nursing_other(self, admission: Admission, when: datetime, newborn: bool) -> NoteRow:
        rng = self._rng
        if newborn:
            text = (
                f"NICU Nursing Progress Note\n\n#1 FEN: Infant on {rng.choice(('breast milk', 'Enfamil 20', 'Similac 24'))} "
                f"{rng.randrange(20, 60)}cc q3-4hrs PO/PG. Weight {rng.randrange(1800, 4200)} grams, {rng.choice(('up', 'down'))} {rng.randrange(5, 60)} grams. "
                f"Abd soft, +BS, voiding and stooling.\n\n#2 Resp: In RA, RR 30-50s, LS clear and equal. {rng.choice(('No spells.', 'One brady to 70s, self-resolved.'))}\n\n"
                f"#3 Parenting: {rng.choice(('Mom in to visit, holding and feeding.', 'Parents called for update.', 'Family visiting.'))} "
                f"Updated on plan of care.\n\n#4 G&D: Temp stable in {rng.choice(('open crib', 'isolette'))}. Alert and active with cares.\n"
                f"{_NURSING_FILLER[rng.randrange(len(_NURSING_FILLER))]}"
            )
        else:
            text = (
                f"NPN {rng.choice(('7a-7p', '7p-7a', '0700-1900', '1900-0700'))}:\n"
                f"Neuro: {rng.choice(('A+Ox3, MAE, follows commands.', 'Lethargic but arousable to voice, oriented x1.', 'Alert, pleasant, cooperative.'))}\n"
                f"CV: HR {rng.randrange(60, 120)}s {rng.choice(('SR', 'ST', 'AF'))}, no ectopy. SBP {rng.randrange(90, 160)}s. {rng.choice(('Pulses palpable.', 'Trace edema.', ''))}\n"
                f"Resp: LS {rng.choice(('clear', 'coarse', 'diminished at bases'))}. O2 sat {rng.randrange(90, 100)}% on {rng.choice(('RA', '2L NC', '4L NC'))}.\n"
                f"GI/GU: Abd soft. {rng.choice(('Tolerating diet.', 'NPO.', 'Poor appetite.'))} Foley draining clear yellow urine, {rng.randrange(30, 120)}cc/hr.\n"
                f"Skin: {rng.choice(('Intact.', 'Coccyx reddened, duoderm applied.', 'IV sites clean.'))}\n"
                f"Social: {self._nursing_social(admission)}\n"
                f"Plan: {rng.choice(('Continue to monitor.', 'Possible transfer to floor tomorrow.', 'Follow up AM labs.', 'Continue current plan of care.'))}\n"
                f"{_NURSING_FILLER[rng.randrange(len(_NURSING_FILLER))]}"
            )
        return NoteRow(
            admission.hadm_id,
            _midnight(when),
            when,
            when + timedelta(minutes=rng.randrange(5, 240)),
            "Nursing/other",
            "Report",
            rng.randrange(14000, 21000),
            text,
        )

    def _nursing_social(self, admission: Admission) -> str:
        rng = self._rng
        living = self._patient.social.living
        if living == "homeless":
            return rng.choice(
                ("Pt is homeless, SW aware.", 'Pt states "I don\'t have anywhere to go" after discharge.')
            )
        if living == "alone":
            return rng.choice(
                ("Pt lives alone, no visitors today.", "No family in to visit; pt states she lives alone.")
            )
        if admission.nonadherent and rng.random() < 0.3:
            return 'Pt admits he "hasn\'t been taking the pills" at home.'
        return rng.choice(("Family in to visit and updated.", "Wife called for update.", "No calls."))

    def _radiology(self, admission: Admission, when: datetime) -> NoteRow:
        rng = self._rng
        study = rng.choice(admission.reason.radiology or ("CHEST (PORTABLE AP)", "CHEST (PA & LAT)"))
        return NoteRow(
            admission.hadm_id,
            _midnight(when),
            when,
            when + timedelta(minutes=rng.randrange(20, 900)),
            "Radiology",
            study,
            None,
            self._radiology_text(admission, study, when),
        )

    def _radiology_text(self, admission: Admission | None, study: str, when: datetime) -> str:
        rng = self._rng
        person = (
            self._person(admission)
            if admission
            else f"{rng.randrange(40, 85)} year old {'man' if self._patient.gender == 'M' else 'woman'}"
        )
        reason_words = self._phrase(admission.reason.phrases) if admission else "routine follow up"
        impression = _radiology_impression(admission, study, rng)
        return (
            f"{deid_date(when)} {when.hour}:{when.minute:02d} {'AM' if when.hour < 12 else 'PM'}\n"
            f" {study}                                            Clip # [**Clip Number (Radiology) {rng.randrange(10000, 99999)}**]\n"
            f" Reason: {reason_words}\n"
            f" Admitting Diagnosis: {admission.diagnosis_text if admission else ''}\n"
            " ______________________________________________________________________________\n"
            f" [**Hospital 4**] MEDICAL CONDITION:\n  {person} with {reason_words}\n"
            f" REASON FOR THIS EXAMINATION:\n  eval for {rng.choice(('interval change', 'acute process', 'infiltrate', 'effusion', 'fracture', 'hemorrhage'))}\n"
            " ______________________________________________________________________________\n"
            "                                 FINAL REPORT\n"
            f" INDICATION:  {person} with {reason_words}.\n\n"
            f" COMPARISON:  {rng.choice(('None.', deid_date(when - timedelta(days=rng.randrange(1, 900)))))}\n\n"
            f" TECHNIQUE:  {study.lower()}.\n\n"
            f" FINDINGS:  {rng.choice(_RADIOLOGY_FINDINGS)} {rng.choice(_RADIOLOGY_FINDINGS)} {rng.choice(_RADIOLOGY_FINDINGS)}\n\n"
            f" IMPRESSION:\n {impression}\n"
        )

    def _ecg(self, hadm_id: int | None, admission: Admission | None, when: datetime) -> NoteRow:
        rng = self._rng
        afib = admission is not None and "atrial_fibrillation" in admission.chronic
        rhythm = (
            "Atrial fibrillation with controlled ventricular response."
            if afib and rng.random() < 0.7
            else rng.choice(
                (
                    "Sinus rhythm.",
                    "Sinus tachycardia.",
                    "Sinus bradycardia.",
                    "Sinus rhythm with premature atrial contractions.",
                )
            )
        )
        text = (
            f"{rhythm} {rng.choice(_ECG_FINDINGS)} {rng.choice(_ECG_FINDINGS)} "
            f"Since the previous tracing of {deid_date(when - timedelta(days=rng.randrange(1, 700)))} {rng.choice(('no significant change.', 'the rate is faster.', 'ST-T wave abnormalities are new.'))}\n"
        )
        return NoteRow(hadm_id, _midnight(when), None, None, "ECG", "Report", None, text)

    def _physician(self, admission: Admission, when: datetime) -> NoteRow:
        rng = self._rng
        slots = self._slots(admission)
        principal = self._phrase(admission.reason.phrases)
        drugs = admission.prescriptions.drug_keys() if admission.prescriptions else []
        infusions = (
            ", ".join(DRUGS_BY_KEY[key].note_names[0] for key in drugs if DRUGS_BY_KEY[key].route == "IV DRIP")
            or "None"
        )
        other = ", ".join(DRUGS_BY_KEY[key].note_names[-1] for key in drugs[:8])
        problems = "\n".join(
            f"{self._phrase(COMPLICATIONS_BY_KEY[key].phrases).upper()}\n   {rng.choice(_COMPLICATION_COURSE)}"
            for key in admission.complications
        )
        text = (
            f"Chief Complaint: {slots['complaint']}\n24 Hour Events:\n {rng.choice(_ICU_EVENTS)}\n {rng.choice(_ICU_EVENTS)}\n"
            "Allergies:\n" + rng.choice(("No Known Drug Allergies", "Penicillins\nRash;")) + "\n"
            f"Last dose of Antibiotics:\nInfusions:\n {infusions}\nOther ICU medications:\n {other}\n"
            f"Flowsheet Data as of  {deid_date(when)} {when.hour:02d}:{when.minute:02d} AM\nVital signs\n"
            f"Hemodynamic monitoring\nFluid balance\n                  24 hours\n  Total In:\n                  {rng.randrange(500, 4000)} mL\n"
            f"  Total out:\n                  {rng.randrange(300, 3500)} mL\nRespiratory support\n O2 Delivery Device: {rng.choice(('Nasal cannula', 'Endotracheal tube', 'Face tent', 'None'))}\n"
            f" SpO2: {rng.randrange(88, 100)}%\n ABG: {slots['ph']}/{slots['pco2']}/{slots['po2']}/{rng.randrange(18, 32)}/0\n"
            "Physical Examination\n" + self._physical_exam(admission) + "\n"
            f"Labs / Radiology\n {rng.randrange(150, 400)} K/uL\n {rng.uniform(7, 14):.1f} g/dL\n {rng.randrange(80, 250)} mg/dL\n {rng.uniform(0.5, 4.0):.1f} mg/dL\n"
            f" {rng.randrange(18, 32)} mEq/L\n {rng.uniform(3.0, 5.5):.1f} mEq/L\n {rng.randrange(8, 60)} mg/dL\n"
            f"Assessment and Plan\n {self._person(admission)} with {principal}.\n"
            f"{principal.upper()}\n   {rng.choice(admission.reason.course).format_map(slots) if admission.reason.course else ''}\n{problems}\n"
            "ICU Care\nNutrition:\nGlycemic Control:  Regular insulin sliding scale\nLines:\n"
            f"{rng.choice(('Multi Lumen - ', 'Arterial Line - ', '20 Gauge - '))}{deid_date(when)} {rng.randrange(0, 12):02d}:{rng.randrange(0, 60):02d} PM\n"
            "Prophylaxis:\nDVT: SQ UF Heparin\nStress ulcer: PPI\nVAP:  HOB elevation, Mouth care, Daily wake up\n"
            f"Comments:\nCommunication:  {rng.choice(('Comments: with family at bedside', 'Patient discussed on interdisciplinary rounds'))}\n"
            f"Code status: {'DNR / DNI' if 'V4986' in admission.diagnoses else 'Full code'}\nDisposition: ICU\n"
            f"Total time spent: {rng.randrange(30, 60)} minutes\n{_PHYSICIAN_FILLER[rng.randrange(len(_PHYSICIAN_FILLER))]}"
        )
        description = rng.choice(
            (
                "Physician Resident Progress Note",
                "Intensivist Note",
                "Physician Attending Progress Note",
                "Physician Resident Admission Note",
            )
        )
        return NoteRow(
            admission.hadm_id,
            _midnight(when),
            when,
            when + timedelta(minutes=rng.randrange(10, 300)),
            "Physician ",
            description,
            rng.randrange(14000, 21000),
            text,
        )

    def _nursing(self, admission: Admission, when: datetime) -> NoteRow:
        rng = self._rng
        principal = self._phrase(admission.reason.phrases)
        text = (
            f"{_sentence_case(principal)}\n   Assessment:\n   {rng.choice(_NURSING_ASSESSMENTS)}\n   Action:\n   {rng.choice(_NURSING_ACTIONS)}\n"
            f"   Response:\n   {rng.choice(('Improving.', 'No change.', 'Remains hemodynamically stable.', 'Worsening hypotension overnight.'))}\n"
            f"   Plan:\n   {rng.choice(('Continue to monitor, wean pressors as tolerated.', 'Continue current management, follow labs.', 'Possible extubation in AM.'))}\n"
            f"{_NURSING_FILLER[rng.randrange(len(_NURSING_FILLER))]}"
        )
        return NoteRow(
            admission.hadm_id,
            _midnight(when),
            when,
            when + timedelta(minutes=rng.randrange(10, 300)),
            "Nursing",
            rng.choice(("Nursing Progress Note", "Nursing Transfer Note", "Generic Note")),
            rng.randrange(14000, 21000),
            text,
        )

    def _respiratory(self, admission: Admission, when: datetime) -> NoteRow:
        rng = self._rng
        text = (
            f"Respiratory Care Shift Note\nPt remains intubated on {rng.choice(('CMV/AC', 'PSV', 'CPAP+PS'))} "
            f"{rng.randrange(400, 600)} x {rng.randrange(12, 24)}, PEEP {rng.randrange(5, 12)}, FiO2 {rng.randrange(30, 80)}%. "
            f"BS {rng.choice(('coarse bilaterally', 'clear', 'diminished at bases'))}. Suctioned for {rng.choice(('small', 'moderate', 'large'))} "
            f"amounts of {rng.choice(('thick white', 'tan', 'blood tinged'))} secretions. RSBI {rng.randrange(30, 140)}. Plan: {rng.choice(('SBT in AM', 'continue current settings', 'wean as tolerated'))}."
        )
        return NoteRow(
            admission.hadm_id,
            _midnight(when),
            when,
            when + timedelta(minutes=rng.randrange(10, 200)),
            "Respiratory ",
            "Respiratory Care Shift Note",
            rng.randrange(14000, 21000),
            text,
        )

    def _echo(self, admission: Admission, when: datetime) -> NoteRow:
        rng = self._rng
        ef = (
            rng.choice((20, 25, 30, 35, 40, 50, 55, 60, 65))
            if "heart_failure" in admission.chronic
            else rng.choice((50, 55, 60, 65, 70))
        )
        text = (
            f"PATIENT/TEST INFORMATION:\nIndication: {self._phrase(admission.reason.phrases)}.\nHeight: (in) {rng.randrange(58, 76)}\n"
            f"Weight (lb): {rng.randrange(100, 300)}\nBSA (m2): {rng.uniform(1.5, 2.4):.2f} m2\nBP (mm Hg): {rng.randrange(90, 170)}/{rng.randrange(50, 95)}\n"
            f"HR (bpm): {rng.randrange(55, 120)}\nStatus: Inpatient\nDate/Time: {deid_date(when)} at {when.hour:02d}:{when.minute:02d}\n"
            "Test: TTE (Complete)\nDoppler: Full Doppler and color Doppler\nContrast: None\nTechnical Quality: Adequate\n\n\n"
            "INTERPRETATION:\n\nFindings:\n\nLEFT ATRIUM: Mild LA enlargement.\n\nRIGHT ATRIUM/INTERATRIAL SEPTUM: Normal RA size.\n\n"
            f"LEFT VENTRICLE: {'Severely depressed' if ef < 35 else 'Mildly depressed' if ef < 50 else 'Normal'} LVEF. LVEF = {ef}%.\n\n"
            f"AORTIC VALVE: {rng.choice(('Mildly thickened aortic valve leaflets.', 'Severe AS.', 'Normal aortic valve.'))}\n\n"
            f"MITRAL VALVE: {rng.choice(('Mild (1+) MR.', 'Moderate (2+) MR.', 'Normal mitral valve leaflets.'))}\n\n"
            f"Conclusions:\nThe left atrium is mildly dilated. Overall left ventricular systolic function is {'depressed' if ef < 50 else 'normal'} (LVEF {ef}%). "
            "Right ventricular chamber size and free wall motion are normal. There is no pericardial effusion.\n\n"
            f"IMPRESSION: {'Depressed' if ef < 50 else 'Preserved'} biventricular systolic function.\n"
        )
        return NoteRow(admission.hadm_id, _midnight(when), None, None, "Echo", "Report", None, text)

    def _social_work(self, admission: Admission, when: datetime) -> NoteRow:
        rng = self._rng
        social = self._patient.social
        situation = {
            "alone": "Pt lives alone in an apartment; reports limited support, daughter lives out of state.",
            "homeless": "Pt is currently homeless and has been staying in shelters; no stable address.",
            "spouse": "Pt lives with spouse who is supportive and involved in care.",
            "family": "Pt lives with family who are supportive.",
            "facility": "Pt resides in a long-term care facility.",
        }[social.living]
        text = (
            f"Social Work Note\nReason for referral: {rng.choice(('discharge planning', 'psychosocial support', 'substance abuse', 'insurance/financial concerns'))}.\n"
            f"Living situation: {situation}\n"
            f"Substance use: {'Pt endorses daily alcohol use and is interested in detox resources.' if social.alcohol == 'heavy' else 'Denies.'}\n"
            f"Medications: {'Pt reports difficulty obtaining medications due to cost.' if admission.nonadherent else 'Pt reports no barriers to obtaining medications.'}\n"
            f"Plan: SW will {rng.choice(('follow for discharge planning', 'provide resources', 'assist with shelter placement', 'meet with family'))}.\n"
            f"{_name(rng)}, LICSW"
        )
        return NoteRow(
            admission.hadm_id,
            _midnight(when),
            when,
            when + timedelta(minutes=rng.randrange(10, 300)),
            "Social Work",
            "Social Work Note",
            rng.randrange(14000, 21000),
            text,
        )

    def _short_note(self, admission: Admission, when: datetime, kind: tuple[str, str]) -> NoteRow:
        rng = self._rng
        category, description = kind
        text = (
            f"{description}\nPt seen and evaluated for {self._phrase(admission.reason.phrases)}. "
            f"{rng.choice(_NURSING_ASSESSMENTS)} Recommendations discussed with the primary team.\n{_NURSING_FILLER[rng.randrange(len(_NURSING_FILLER))]}"
        )
        return NoteRow(
            admission.hadm_id,
            _midnight(when),
            when,
            when + timedelta(minutes=rng.randrange(10, 300)),
            category,
            description,
            rng.randrange(14000, 21000),
            text,
        )


def _radiology_impression(admission: Admission | None, study: str, rng: random.Random) -> str:
    key = admission.reason.key if admission else ""
    if study.startswith("CHEST"):
        if key == "pneumonia":
            return f"{rng.choice(_SIDES).capitalize()} lower lobe opacity concerning for pneumonia."
        if key == "heart_failure_exacerbation":
            return "Moderate pulmonary edema and small bilateral pleural effusions, worse compared to prior."
        return rng.choice(
            (
                "No acute cardiopulmonary process.",
                "Mild atelectasis at the lung bases. No pneumothorax.",
                "Stable cardiomegaly without edema.",
            )
        )
    if "HEAD" in study:
        if key == "stroke":
            return rng.choice(
                (
                    "Acute infarct in the left MCA territory.",
                    "Intraparenchymal hemorrhage in the right basal ganglia with surrounding edema.",
                )
            )
        return "No acute intracranial process."
    return rng.choice(
        (
            "No acute abnormality.",
            "Findings as above, clinical correlation recommended.",
            "Cirrhotic liver with moderate ascites."
            if key in ("hepatic_encephalopathy", "variceal_bleed")
            else "Unremarkable study.",
        )
    )


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def _masculine(text: str) -> str:
    """Switch a note written with feminine pronouns to masculine ones."""
    return (
        text.replace(" she ", " he ")
        .replace("She ", "He ")
        .replace(" her ", " his ")
        .replace("Her ", "His ")
        .replace(" herself", " himself")
        .replace("husband", "wife")
        .replace(" hers", " his")
    )


def _as_float(text: str) -> float:
    try:
        return float(text.split("-")[0])
    except ValueError:
        return 1.0


def _small_poisson(rng: random.Random, mean: float) -> int:
    count = 0
    total = rng.expovariate(1.0) if mean > 0 else 1.0
    while total < mean:
        count += 1
        total += rng.expovariate(1.0)
    return count


def _midnight(when: datetime) -> datetime:
    return datetime(when.year, when.month, when.day)


_COMPLICATION_COURSE = (
    "Monitored closely and resolved with supportive care.",
    "Treated with repletion per sliding scale with normalization.",
    "Likely multifactorial. Improved with IV fluids; will need repeat labs at follow up.",
    "Trended daily and stable at discharge.",
    "Managed conservatively; no further intervention was required.",
    "Improved over the course of the admission.",
)
_INSTRUCTION_MIDDLE = (
    "You were treated with antibiotics and improved.",
    "Your symptoms improved with treatment.",
    "We made some changes to your medications, which are listed below.",
    "You were monitored closely in the hospital and are now safe to go home.",
)
_ICU_EVENTS = (
    "- Weaned off pressors overnight",
    "- Received 1L NS bolus for hypotension",
    "- ARTERIAL LINE - START",
    "- Febrile to 101.8, pan-cultured",
    "- Transfused 1 unit pRBC",
    "- Lasix 40 IV given with good UOP",
    "- Extubated without complication",
    "- MULTI LUMEN - START",
)
_NURSING_ASSESSMENTS = (
    "Pt alert and oriented x3, following commands, MAE. Lungs coarse bilaterally, sats 94-97% on 4L NC.",
    "Pt remains intubated and sedated on propofol, RASS -2. HR 90s ST, MAP 60s on levophed.",
    "Pt with poor PO intake, abd soft and distended, +BS. UOP 20-30cc/hr via foley.",
    "Pt complaining of pain 6/10, medicated with dilaudid with relief. Ambulated in hallway with PT.",
)
_NURSING_ACTIONS = (
    "Levophed titrated to keep MAP > 65. 500cc NS bolus given. Blood cultures sent.",
    "Lasix 40mg IV given, K repleted. Electrolytes monitored.",
    "Suctioned for thick secretions, repositioned q2h.",
    "Family meeting held with team; questions answered.",
)
_NURSING_FILLER = (
    "Will continue to monitor closely and update team with any changes.",
    "Emotional support provided to pt and family. All questions answered. Safety measures maintained; bed in low position, call light within reach.",
    "Skin care provided, pt turned and repositioned every 2 hours. Heels elevated off bed. Oral care done. Pt resting comfortably at this time with no acute distress noted.",
    "",
)
_PHYSICIAN_FILLER = (
    "I saw and examined the patient, and was physically present with the ICU team for the key portions of the services provided. "
    "I agree with the note above, including the assessment and plan. Critical care time spent in evaluation and management of the patient.",
    "Patient is critically ill. Discussed with the family at length about goals of care and prognosis; they wish to continue full treatment at this time.",
    "",
)
_RADIOLOGY_FINDINGS = (
    "The heart size is normal.",
    "There is mild cardiomegaly.",
    "The mediastinal and hilar contours are unremarkable.",
    "There is no pneumothorax.",
    "Small bilateral pleural effusions are present.",
    "Mild pulmonary vascular congestion.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "Right IJ central venous catheter tip in the SVC.",
    "Degenerative changes of the thoracic spine.",
    "No focal consolidation.",
    "The kidneys are normal in size without hydronephrosis.",
    "There is no acute intracranial hemorrhage, mass effect or shift of midline structures.",
)
_ECG_FINDINGS = (
    "Left axis deviation.",
    "Right bundle-branch block.",
    "Non-specific ST-T wave changes.",
    "Q waves in the inferior leads consistent with prior myocardial infarction.",
    "Left ventricular hypertrophy.",
    "Low QRS voltages in the limb leads.",
    "Prolonged QT interval.",
    "Poor R wave progression.",
    "",
)
