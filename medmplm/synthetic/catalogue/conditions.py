"""Curated clinical knowledge linking conditions to codes, drugs, labs, procedures and words.

This is the generative model's structure, kept as data: which chronic conditions a patient's latent
factors raise, why patients are admitted, what complicates a stay, which drugs treat what, how each
shifts lab values, and how notes name each thing (synonyms and abbreviations).

Lab shifts are in standard deviations of the item's well-patient distribution (see
``catalogue.labs``). Drug and code probabilities are per admission.
"""

from __future__ import annotations

from dataclasses import dataclass

# Latent disease axes. A patient's factor values are standard normal at birth of the record and
# drift upward between admissions.
FACTORS: tuple[str, ...] = ("cardio", "metabolic", "renal", "pulmonary", "liver", "oncology", "psych")


@dataclass(frozen=True)
class ChronicCondition:
    """A long-term condition: once acquired it stays, and it is re-coded at every admission.

    Onset log-odds = ``intercept`` + factor loadings + ``age_slope`` per decade above 60 +
    ``risk_shifts`` (social risk keys such as ``smoker``) + ``female_shift`` for women.
    ``readmission_weight`` is its contribution to the log-odds of an unplanned 30-day readmission.
    """

    key: str
    codes: tuple[tuple[str, float], ...]
    phrases: tuple[str, ...]
    drugs: tuple[tuple[str, float], ...]
    intercept: float
    loadings: tuple[tuple[str, float], ...]
    age_slope: float = 0.0
    risk_shifts: tuple[tuple[str, float], ...] = ()
    female_shift: float = 0.0
    extra_codes: tuple[tuple[str, float], ...] = ()
    labs: tuple[tuple[int, float], ...] = ()
    panels: tuple[str, ...] = ()
    coded_prob: float = 0.93
    mention_prob: float = 0.7
    requires: str | None = None
    readmission_weight: float = 0.0


@dataclass(frozen=True)
class AdmissionReason:
    """Why a patient comes in: the principal diagnosis and everything it brings with it.

    The chance of each reason is ``base_weight`` times every ``boosts`` multiplier whose key the
    patient has (a chronic condition, history or social risk); reasons with ``requires`` are only
    possible when the patient has all of those keys.
    """

    key: str
    codes: tuple[tuple[str, float], ...]
    admit_diagnosis: tuple[str, ...]
    chief_complaints: tuple[str, ...]
    phrases: tuple[str, ...]
    service: str
    admission_type: str
    base_weight: float
    severity: float
    los_median_days: float
    icu_prob: float
    mortality_shift: float
    boosts: tuple[tuple[str, float], ...] = ()
    requires: tuple[str, ...] = ()
    procedures: tuple[tuple[str, float], ...] = ()
    drugs: tuple[tuple[str, float], ...] = ()
    labs: tuple[tuple[int, float], ...] = ()
    panels: tuple[str, ...] = ()
    complications: tuple[tuple[str, float], ...] = ()
    extra_codes: tuple[tuple[str, float], ...] = ()
    hpi: tuple[str, ...] = ()
    course: tuple[str, ...] = ()
    radiology: tuple[str, ...] = ()
    # Histories the patient carries after this admission (e.g. "cabg" -> V4581 afterwards).
    adds_history: tuple[str, ...] = ()
    # Mean age for the reason when it opens a record (newborn admissions are age 0).
    newborn: bool = False


@dataclass(frozen=True)
class Complication:
    """An acute secondary problem during a stay; ``base_prob`` is scaled by the stay's severity.

    ``readmission_weight`` adds to the log-odds of an unplanned 30-day readmission.
    """

    key: str
    codes: tuple[tuple[str, float], ...]
    phrases: tuple[str, ...]
    base_prob: float
    drugs: tuple[tuple[str, float], ...] = ()
    labs: tuple[tuple[int, float], ...] = ()
    procedures: tuple[tuple[str, float], ...] = ()
    boosts: tuple[tuple[str, float], ...] = ()
    # Coders capture these from the chart; discharge summaries often leave them out.
    mention_prob: float = 0.2
    readmission_weight: float = 0.0


@dataclass(frozen=True)
class MinorCondition:
    """A condition that notes mention far more reliably than coders code it (often not at all)."""

    key: str
    code: str | None
    coded_prob: float
    prevalence: float
    phrases: tuple[str, ...]
    drugs: tuple[tuple[str, float], ...] = ()
    sex: str | None = None


@dataclass(frozen=True)
class History:
    """A past event carried forward as a status code and a past-history line in notes."""

    key: str
    code: str
    coded_prob: float
    phrases: tuple[str, ...]
    drugs: tuple[tuple[str, float], ...] = ()


CHRONIC_CONDITIONS: tuple[ChronicCondition, ...] = (
    ChronicCondition(
        "hypertension", (("4019", 1.0),), ("hypertension", "HTN", "high blood pressure", "essential hypertension"),
        (("metoprolol_tartrate", 0.45), ("lisinopril", 0.45), ("amlodipine", 0.35), ("hydrochlorothiazide", 0.2), ("losartan", 0.12)),
        intercept=0.1, loadings=(("metabolic", 0.8), ("cardio", 0.5)), age_slope=0.45, readmission_weight=0.0,
    ),
    ChronicCondition(
        "diabetes", (("25000", 0.72), ("25002", 0.1), ("25060", 0.1), ("25040", 0.08)),
        ("diabetes mellitus type 2", "DM2", "type 2 diabetes", "T2DM", "NIDDM", "diabetes"),
        (("insulin_regular", 0.9), ("insulin_glargine", 0.45), ("metformin", 0.35), ("glipizide", 0.2)),
        intercept=-1.5, loadings=(("metabolic", 1.2),), age_slope=0.15,
        extra_codes=(("V5867", 0.3), ("3572", 0.12)), labs=((50931, 2.5), (50852, 3.5)), panels=("a1c",),
        readmission_weight=0.15,
    ),
    ChronicCondition(
        "hyperlipidemia", (("2724", 0.65), ("2720", 0.35)), ("hyperlipidemia", "HLD", "high cholesterol", "dyslipidemia"),
        (("atorvastatin", 0.5), ("simvastatin", 0.4)),
        intercept=-0.7, loadings=(("metabolic", 0.7), ("cardio", 0.5)), age_slope=0.2, coded_prob=0.85,
    ),
    ChronicCondition(
        "coronary_artery_disease", (("41401", 0.85), ("4139", 0.15)),
        ("coronary artery disease", "CAD", "coronary disease", "ischemic heart disease"),
        (("aspirin", 0.85), ("atorvastatin", 0.55), ("metoprolol_tartrate", 0.55), ("clopidogrel", 0.3), ("nitroglycerin", 0.25), ("isosorbide_mononitrate", 0.15)),
        intercept=-1.6, loadings=(("cardio", 1.2), ("metabolic", 0.4)), age_slope=0.4, risk_shifts=(("smoker", 0.5),),
        female_shift=-0.5, extra_codes=(("412", 0.25),), readmission_weight=0.1,
    ),
    ChronicCondition(
        "heart_failure", (("4280", 0.55), ("42832", 0.2), ("42822", 0.2), ("4254", 0.05)),
        ("congestive heart failure", "CHF", "heart failure", "systolic heart failure", "diastolic heart failure", "HFrEF"),
        (("furosemide", 0.8), ("carvedilol", 0.4), ("metoprolol_succinate", 0.35), ("lisinopril", 0.4), ("spironolactone", 0.25), ("digoxin", 0.1)),
        intercept=-2.0, loadings=(("cardio", 1.1), ("renal", 0.3)), age_slope=0.45,
        labs=((50963, 2.8), (50983, -0.6)), panels=("bnp",), readmission_weight=0.55,
    ),
    ChronicCondition(
        "atrial_fibrillation", (("42731", 1.0),), ("atrial fibrillation", "AFib", "afib", "paroxysmal atrial fibrillation", "a-fib"),
        (("warfarin", 0.55), ("metoprolol_tartrate", 0.5), ("diltiazem", 0.25), ("amiodarone", 0.15), ("digoxin", 0.1)),
        intercept=-2.1, loadings=(("cardio", 0.8),), age_slope=0.6, extra_codes=(("V5861", 0.5),),
        labs=((51237, 1.8), (51274, 1.5)), panels=("coags",), readmission_weight=0.05,
    ),
    ChronicCondition(
        "chronic_kidney_disease", (("5859", 0.5), ("5853", 0.35), ("5854", 0.15)),
        ("chronic kidney disease", "CKD", "chronic renal insufficiency", "CRI"),
        (("calcitriol", 0.2), ("epoetin", 0.2), ("furosemide", 0.3), ("sevelamer", 0.15)),
        intercept=-2.5, loadings=(("renal", 1.3), ("metabolic", 0.4)), age_slope=0.35,
        extra_codes=(("40390", 0.45), ("28521", 0.3)), labs=((50912, 3.0), (51006, 2.2), (51222, -1.2), (50971, 0.5)),
        mention_prob=0.6, readmission_weight=0.4,
    ),
    ChronicCondition(
        "end_stage_renal_disease", (("5856", 1.0),), ("ESRD", "end-stage renal disease", "ESRD on HD", "ESRD on hemodialysis"),
        (("sevelamer", 0.75), ("calcitriol", 0.45), ("epoetin", 0.55)),
        intercept=-1.3, loadings=(("renal", 0.8),), requires="chronic_kidney_disease",
        extra_codes=(("40391", 0.7), ("V4511", 0.85), ("28521", 0.4)), labs=((50912, 5.5), (51006, 2.5), (51222, -1.8), (50971, 1.2), (50970, 2.0)),
        coded_prob=0.98, mention_prob=0.95, readmission_weight=0.45,
    ),
    ChronicCondition(
        "copd", (("496", 0.7), ("4928", 0.3)), ("COPD", "chronic obstructive pulmonary disease", "emphysema", "chronic bronchitis"),
        (("albuterol_neb", 0.85), ("ipratropium_neb", 0.6), ("tiotropium", 0.4), ("fluticasone_salmeterol", 0.35), ("prednisone", 0.25)),
        intercept=-3.0, loadings=(("pulmonary", 1.3),), age_slope=0.35, risk_shifts=(("smoker", 1.3),),
        extra_codes=(("V462", 0.2),), labs=((50818, 1.5), (50882, 1.0)), mention_prob=0.7, readmission_weight=0.35,
    ),
    ChronicCondition(
        "asthma", (("49390", 1.0),), ("asthma", "reactive airway disease"),
        (("albuterol_neb", 0.8), ("fluticasone_salmeterol", 0.3), ("montelukast", 0.3)),
        intercept=-3.3, loadings=(("pulmonary", 0.7),), age_slope=-0.2, female_shift=0.4,
    ),
    ChronicCondition(
        "cirrhosis", (("5715", 0.55), ("5712", 0.45)), ("cirrhosis", "ESLD", "end-stage liver disease", "liver cirrhosis"),
        (("lactulose", 0.75), ("rifaximin", 0.4), ("spironolactone", 0.45), ("furosemide", 0.35), ("nadolol", 0.3), ("propranolol", 0.15)),
        intercept=-4.0, loadings=(("liver", 1.5),), risk_shifts=(("heavy_alcohol", 1.8), ("drug_use", 0.9)),
        extra_codes=(("5723", 0.4), ("4561", 0.3), ("78959", 0.3), ("07054", 0.2)),
        labs=((50885, 3.0), (51237, 2.5), (50862, -2.2), (51265, -2.0), (50983, -1.0), (50878, 1.5)), panels=("lfts", "coags"),
        mention_prob=0.92, readmission_weight=0.55,
    ),
    ChronicCondition(
        "metastatic_cancer", (("1629", 0.35), ("1539", 0.15), ("1749", 0.15), ("1579", 0.1), ("185", 0.1), ("1550", 0.05), ("20300", 0.1)),
        ("metastatic cancer", "malignancy", "cancer", "oncologic disease"),
        (("ondansetron", 0.5), ("dexamethasone", 0.3), ("oxycodone", 0.45), ("prochlorperazine", 0.25), ("morphine", 0.3)),
        intercept=-3.8, loadings=(("oncology", 1.6),), age_slope=0.3, risk_shifts=(("smoker", 0.4),),
        extra_codes=(("1970", 0.25), ("1977", 0.25), ("1985", 0.2), ("1983", 0.1), ("2639", 0.2)),
        labs=((51222, -1.0), (50862, -1.0)), mention_prob=0.95, readmission_weight=0.45,
    ),
    ChronicCondition(
        "depression", (("311", 0.8), ("29620", 0.2)), ("depression", "major depressive disorder", "MDD", "depressive disorder"),
        (("sertraline", 0.35), ("citalopram", 0.35), ("trazodone", 0.25)),
        intercept=-2.0, loadings=(("psych", 1.1),), female_shift=0.4, coded_prob=0.75, mention_prob=0.7, readmission_weight=0.1,
    ),
    ChronicCondition(
        "anxiety", (("30000", 1.0),), ("anxiety", "anxiety disorder", "generalized anxiety"),
        (("lorazepam", 0.4),), intercept=-2.9, loadings=(("psych", 0.9),), female_shift=0.3, coded_prob=0.6, mention_prob=0.65,
    ),
    ChronicCondition(
        "dementia", (("2900", 0.4), ("3310", 0.3), ("29410", 0.3)), ("dementia", "Alzheimer's dementia", "senile dementia", "cognitive impairment"),
        (("donepezil", 0.45), ("memantine", 0.3), ("quetiapine", 0.25)),
        intercept=-4.3, loadings=(("psych", 0.3),), age_slope=1.1, mention_prob=0.9, readmission_weight=0.1,
    ),
    ChronicCondition(
        "hypothyroidism", (("2449", 1.0),), ("hypothyroidism", "hypothyroid"), (("levothyroxine", 0.95),),
        intercept=-2.7, loadings=(("metabolic", 0.3),), age_slope=0.2, female_shift=0.9, coded_prob=0.88, mention_prob=0.75,
    ),
    ChronicCondition(
        "gerd", (("53081", 1.0),), ("GERD", "gastroesophageal reflux disease", "reflux"),
        (("omeprazole", 0.45), ("pantoprazole", 0.35), ("famotidine", 0.2)),
        intercept=-1.9, loadings=(), age_slope=0.15, coded_prob=0.75, mention_prob=0.6,
    ),
    ChronicCondition(
        "obesity", (("27800", 0.6), ("27801", 0.4)), ("obesity", "morbid obesity"), (),
        intercept=-2.8, loadings=(("metabolic", 0.9),), age_slope=-0.2, coded_prob=0.6, mention_prob=0.5,
    ),
    ChronicCondition(
        "peripheral_vascular_disease", (("4439", 1.0),), ("peripheral vascular disease", "PVD", "peripheral arterial disease", "PAD"),
        (("aspirin", 0.6), ("cilostazol", 0.2)), intercept=-3.6, loadings=(("cardio", 0.9), ("metabolic", 0.3)), age_slope=0.35,
        risk_shifts=(("smoker", 0.9),),
    ),
    ChronicCondition(
        "hiv", (("042", 1.0),), ("HIV", "HIV/AIDS", "HIV infection"),
        (("emtricitabine_tenofovir", 0.7), ("sulfamethoxazole_trimethoprim", 0.35)),
        intercept=-5.2, loadings=(), age_slope=-0.3, risk_shifts=(("drug_use", 2.2),), coded_prob=0.98, mention_prob=0.95,
        readmission_weight=0.3,
    ),
    ChronicCondition(
        "seizure_disorder", (("34590", 0.8), ("78039", 0.2)), ("seizure disorder", "epilepsy", "seizures"),
        (("levetiracetam", 0.6), ("phenytoin", 0.35)), intercept=-4.0, loadings=(("psych", 0.2),), age_slope=-0.1,
        risk_shifts=(("heavy_alcohol", 0.8),),
    ),
    ChronicCondition(
        "chronic_anemia", (("2859", 0.8), ("28529", 0.2)), ("anemia", "chronic anemia", "anemia of chronic disease"),
        (("ferrous_sulfate", 0.45),), intercept=-2.2, loadings=(("renal", 0.4), ("oncology", 0.5)), age_slope=0.2,
        labs=((51222, -1.8), (51221, -1.8)), coded_prob=0.85, mention_prob=0.55,
    ),
    ChronicCondition(
        "alcohol_use_disorder", (("30500", 0.6), ("30390", 0.4)), ("alcohol abuse", "EtOH abuse", "alcohol dependence", "alcoholism"),
        (("thiamine", 0.85), ("folic_acid", 0.8), ("multivitamin", 0.7)),
        intercept=-7.0, loadings=(("liver", 0.4),), risk_shifts=(("heavy_alcohol", 6.5),), coded_prob=0.7, mention_prob=0.9,
        labs=((51250, 1.5), (50878, 1.2)), readmission_weight=0.0,
    ),
    ChronicCondition(
        "opioid_use_disorder", (("30400", 1.0),), ("opioid dependence", "heroin abuse", "polysubstance abuse", "IVDU"),
        (("methadone", 0.5),), intercept=-7.0, loadings=(), risk_shifts=(("drug_use", 6.3),), coded_prob=0.6, mention_prob=0.9,
    ),
)

CHRONIC_BY_KEY: dict[str, ChronicCondition] = {condition.key: condition for condition in CHRONIC_CONDITIONS}

_SEPSIS_COURSE = (
    "Patient met SIRS criteria on arrival with lactate of {lactate}. Blood and urine cultures were sent and "
    "the patient was started on broad-spectrum antibiotics with {antibiotics}. {pressor_sentence}",
    "Treated for sepsis with {antibiotics}; cultures grew {organism}. Antibiotics were narrowed per sensitivities "
    "and the patient completed a course with plan for {duration} total days.",
)

ADMISSION_REASONS: tuple[AdmissionReason, ...] = (
    AdmissionReason(
        "sepsis", (("0389", 0.6), ("03842", 0.2), ("03811", 0.2)), ("SEPSIS", "FEVER", "HYPOTENSION;SEPSIS"),
        ("fever", "hypotension", "altered mental status", "fevers and chills"), ("sepsis", "septicemia", "urosepsis"),
        "MED", "EMERGENCY", 1.0, severity=1.3, los_median_days=8.5, icu_prob=0.65, mortality_shift=1.1,
        boosts=(("metastatic_cancer", 1.8), ("cirrhosis", 1.6), ("end_stage_renal_disease", 2.0), ("dementia", 1.6), ("diabetes", 1.2), ("hiv", 1.8), ("drug_use", 1.5)),
        procedures=(("3893", 0.55), ("3891", 0.3), ("9671", 0.2), ("9604", 0.18), ("9904", 0.15)),
        drugs=(("vancomycin", 0.9), ("piperacillin_tazobactam", 0.6), ("cefepime", 0.35), ("meropenem", 0.12), ("norepinephrine", 0.45), ("sodium_chloride_bag", 0.9), ("lactated_ringers", 0.4)),
        labs=((51301, 2.5), (50813, 2.5), (50882, -1.2), (50912, 1.0), (51265, -0.8), (50889, 3.0)), panels=("blood_gas", "urinalysis", "crp"),
        complications=(("septic_shock", 0.45), ("severe_sepsis", 0.55), ("acute_kidney_injury", 0.45), ("thrombocytopenia", 0.25), ("acidosis", 0.35), ("hypotension", 0.3), ("delirium", 0.12), ("bacteremia", 0.15)),
        extra_codes=(("99591", 0.5),),
        hpi=(
            "presented with {complaint} and was found to be febrile to {temp} and hypotensive to {sbp}/{dbp} in the ED.",
            "was brought in by EMS for {complaint}; in the ED she was tachycardic to {hr} with a lactate of {lactate}.",
        ),
        course=_SEPSIS_COURSE, radiology=("CHEST (PORTABLE AP)", "CT ABDOMEN W/CONTRAST", "CT CHEST W/CONTRAST"),
    ),
    AdmissionReason(
        "pneumonia", (("486", 0.7), ("5070", 0.2), ("4821", 0.05), ("48241", 0.05)), ("PNEUMONIA", "PNEUMONIA;TELEMETRY", "HYPOXIA"),
        ("shortness of breath", "cough", "fever", "productive cough"), ("pneumonia", "PNA", "community-acquired pneumonia", "aspiration pneumonia"),
        "MED", "EMERGENCY", 1.0, severity=0.6, los_median_days=6.0, icu_prob=0.3, mortality_shift=0.3,
        boosts=(("copd", 2.0), ("dementia", 1.8), ("metastatic_cancer", 1.3), ("hiv", 1.8), ("smoker", 1.3)),
        procedures=(("9671", 0.1), ("9604", 0.08), ("3893", 0.15)),
        drugs=(("ceftriaxone", 0.75), ("azithromycin", 0.7), ("levofloxacin", 0.3), ("vancomycin", 0.35), ("albuterol_neb", 0.5), ("sodium_chloride_bag", 0.5)),
        labs=((51301, 1.8), (50821, -1.5), (50889, 2.0)), panels=("blood_gas",),
        complications=(("acute_respiratory_failure", 0.2), ("hyponatremia", 0.15), ("pleural_effusion", 0.15), ("acute_kidney_injury", 0.15), ("delirium", 0.08), ("sepsis_secondary", 0.2)),
        hpi=(
            "presents with {days} days of {complaint} and subjective fevers. CXR in the ED showed a {side} lower lobe infiltrate.",
            "reports worsening cough productive of green sputum for {days} days with {complaint}. O2 sat was {sat}% on RA.",
        ),
        course=(
            "Treated for community-acquired pneumonia with {antibiotics} with improvement in oxygenation; completed a {duration} day course.",
            "CXR with {side} lower lobe consolidation. Started on {antibiotics}; sputum culture grew {organism}. Weaned to room air by discharge.",
        ),
        radiology=("CHEST (PA & LAT)", "CHEST (PORTABLE AP)", "CT CHEST W/O CONTRAST"),
    ),
    AdmissionReason(
        "urinary_tract_infection", (("5990", 1.0),), ("URINARY TRACT INFECTION", "UTI", "PYELONEPHRITIS"),
        ("dysuria", "fever", "flank pain", "confusion"), ("urinary tract infection", "UTI", "pyelonephritis"),
        "MED", "EMERGENCY", 0.45, severity=0.2, los_median_days=4.0, icu_prob=0.1, mortality_shift=-0.6,
        boosts=(("dementia", 2.5), ("diabetes", 1.4)),
        drugs=(("ceftriaxone", 0.7), ("ciprofloxacin", 0.4), ("nitrofurantoin", 0.15), ("sodium_chloride_bag", 0.5)),
        labs=((51301, 1.3), (51516, 3.0), (51463, 2.5)), panels=("urinalysis",),
        complications=(("acute_kidney_injury", 0.2), ("delirium", 0.15), ("dehydration", 0.25), ("hypokalemia", 0.15)),
        hpi=("presents with {days} days of {complaint} and urinary frequency. UA in the ED was grossly positive.",),
        course=("UA positive, urine culture grew {organism}. Treated with {antibiotics} and transitioned to oral antibiotics to complete {duration} days.",),
        radiology=("RENAL U.S.", "CT ABD & PELVIS W/O CONTRAST"),
    ),
    AdmissionReason(
        "acute_respiratory_failure", (("51881", 0.75), ("51884", 0.25)), ("RESPIRATORY FAILURE", "HYPOXIA", "RESPIRATORY DISTRESS"),
        ("shortness of breath", "respiratory distress", "hypoxia"), ("hypoxemic respiratory failure", "acute respiratory failure", "hypercarbic respiratory failure"),
        "MED", "EMERGENCY", 0.55, severity=1.4, los_median_days=9.0, icu_prob=0.95, mortality_shift=1.0,
        boosts=(("copd", 3.0), ("heart_failure", 1.6), ("obesity", 1.4), ("opioid_use_disorder", 1.5)),
        procedures=(("9604", 0.7), ("9671", 0.5), ("9672", 0.3), ("3893", 0.5), ("3891", 0.5), ("311", 0.08), ("966", 0.25), ("9390", 0.15)),
        drugs=(("propofol", 0.65), ("fentanyl", 0.6), ("midazolam", 0.35), ("albuterol_neb", 0.7), ("ipratropium_neb", 0.5), ("methylprednisolone", 0.3), ("vancomycin", 0.4), ("piperacillin_tazobactam", 0.3)),
        labs=((50821, -2.5), (50818, 2.0), (50820, -1.5), (50813, 1.0)), panels=("blood_gas",),
        complications=(("acute_kidney_injury", 0.3), ("pneumonia_secondary", 0.3), ("delirium", 0.2), ("hypotension", 0.25), ("malnutrition", 0.2)),
        hpi=("was found by family to be {complaint}; on EMS arrival O2 sat was {sat}% and she was placed on NRB. ABG {ph}/{pco2}/{po2}.",),
        course=(
            "Intubated on arrival for hypercarbic respiratory failure. Sedated with propofol and fentanyl. Extubated on hospital day {day} after passing SBT.",
            "Required BiPAP in the ED and was subsequently intubated. Ventilated for {days} days; diuresed and treated with steroids and nebs.",
        ),
        radiology=("CHEST (PORTABLE AP)", "CHEST (PORTABLE AP)", "CTA CHEST W&W/O C&RECONS, NON-CORONARY"),
    ),
    AdmissionReason(
        "myocardial_infarction", (("41071", 0.6), ("41041", 0.2), ("41011", 0.2)), ("CHEST PAIN", "ST ELEVATION MYOCARDIAL INFARCTION", "NSTEMI", "CHEST PAIN\\CATH"),
        ("chest pain", "substernal chest pressure", "chest pain radiating to the left arm", "dyspnea on exertion"),
        ("NSTEMI", "STEMI", "acute myocardial infarction", "myocardial infarction", "acute coronary syndrome"),
        "CMED", "EMERGENCY", 0.5, severity=0.8, los_median_days=4.5, icu_prob=0.6, mortality_shift=0.2,
        boosts=(("coronary_artery_disease", 3.0), ("diabetes", 1.4), ("hyperlipidemia", 1.3), ("smoker", 1.4), ("peripheral_vascular_disease", 1.5)),
        procedures=(("3722", 0.6), ("8856", 0.7), ("8853", 0.4), ("0066", 0.55), ("3607", 0.45), ("0045", 0.35), ("0040", 0.4), ("3606", 0.1), ("8872", 0.3)),
        drugs=(("aspirin", 0.95), ("clopidogrel", 0.8), ("heparin_iv", 0.75), ("atorvastatin", 0.85), ("metoprolol_tartrate", 0.85), ("nitroglycerin", 0.5), ("lisinopril", 0.45)),
        labs=((51003, 4.0), (50910, 2.0)), panels=("cardiac", "coags"),
        complications=(("cardiac_arrhythmia", 0.15), ("heart_failure_acute", 0.2), ("cath_complication", 0.05), ("acute_kidney_injury", 0.1)),
        extra_codes=(("41401", 0.8),),
        hpi=(
            "presents with {hours} hours of {complaint} associated with diaphoresis and nausea. ECG showed ST depressions in {leads}; troponin {troponin}.",
            "developed {complaint} while shoveling snow. ECG in the ED with ST elevations in {leads}; taken emergently to cath lab.",
        ),
        course=(
            "Taken to cardiac catheterization which showed {vessel} disease; a drug-eluting stent was placed to the {artery}. Started on aspirin, plavix, statin and beta blocker.",
            "Ruled in for NSTEMI with peak troponin {troponin}. Managed medically with heparin gtt x48h, aspirin, plavix, high dose statin. Echo with EF {ef}%.",
        ),
        radiology=("CHEST (PORTABLE AP)",),
        adds_history=("pci",),
    ),
    AdmissionReason(
        "heart_failure_exacerbation", (("42833", 0.35), ("42823", 0.35), ("4280", 0.3)), ("CONGESTIVE HEART FAILURE", "CHF EXACERBATION", "SHORTNESS OF BREATH"),
        ("shortness of breath", "dyspnea on exertion", "lower extremity edema", "orthopnea", "weight gain"),
        ("CHF exacerbation", "acute on chronic heart failure", "decompensated heart failure", "volume overload"),
        "MED", "EMERGENCY", 2.2, severity=0.6, los_median_days=5.0, icu_prob=0.25, mortality_shift=0.1,
        requires=("heart_failure",), boosts=(("nonadherent", 2.2),),
        procedures=(("8872", 0.3), ("3723", 0.08)),
        drugs=(("furosemide_iv", 0.95), ("furosemide", 0.7), ("carvedilol", 0.4), ("lisinopril", 0.4), ("spironolactone", 0.25), ("potassium_chloride", 0.7)),
        labs=((50963, 2.5), (50912, 0.8), (50983, -0.8), (50821, -1.0)), panels=("bnp", "mg_phos_ca"),
        complications=(("acute_kidney_injury", 0.3), ("hyponatremia", 0.25), ("hypokalemia", 0.3), ("pleural_effusion", 0.3), ("cardiac_arrhythmia", 0.15)),
        hpi=(
            "presents with {days} days of progressive {complaint} and a {weight} lb weight gain. {adherence_clause}",
            "with known systolic CHF (EF {ef}%) presents with {complaint}, 3-pillow orthopnea and PND. {adherence_clause}",
        ),
        course=(
            "Diuresed with IV lasix with net negative {liters} L over the admission; transitioned to PO furosemide {lasix_dose} mg daily. Discharge weight {weight} kg.",
            "Admitted with volume overload. Aggressively diuresed with IV furosemide with improvement in dyspnea and edema. Cr peaked at {creatinine} and improved.",
        ),
        radiology=("CHEST (PA & LAT)", "CHEST (PORTABLE AP)"),
    ),
    AdmissionReason(
        "atrial_fibrillation_rvr", (("42731", 1.0),), ("ATRIAL FIBRILLATION", "ATRIAL FIBRILLATION WITH RAPID VENTRICULAR RESPONSE"),
        ("palpitations", "lightheadedness", "shortness of breath"), ("AFib with RVR", "atrial fibrillation with rapid ventricular response", "rapid afib"),
        "MED", "EMERGENCY", 0.8, severity=0.2, los_median_days=3.0, icu_prob=0.15, mortality_shift=-0.8,
        requires=("atrial_fibrillation",), boosts=(("nonadherent", 1.6), ("heavy_alcohol", 1.4)),
        procedures=(("8872", 0.3),),
        drugs=(("diltiazem", 0.8), ("metoprolol_tartrate", 0.8), ("heparin_iv", 0.4), ("warfarin", 0.6)),
        panels=("coags", "mg_phos_ca"),
        complications=(("hypokalemia", 0.2), ("heart_failure_acute", 0.15)),
        hpi=("presents with palpitations since {time}; found to be in AFib with rates to {hr}. {adherence_clause}",),
        course=("Rate controlled with IV diltiazem then transitioned to PO; anticoagulation continued with goal INR 2-3.",),
        radiology=("CHEST (PA & LAT)",),
    ),
    AdmissionReason(
        "gastrointestinal_bleed", (("5789", 0.5), ("5780", 0.25), ("5781", 0.25)), ("GI BLEED", "UPPER GI BLEED", "LOWER GI BLEED", "BRBPR"),
        ("melena", "hematemesis", "bright red blood per rectum", "coffee ground emesis", "lightheadedness"),
        ("GI bleed", "upper GI bleed", "GIB", "lower GI bleed"),
        "MED", "EMERGENCY", 0.6, severity=0.6, los_median_days=4.5, icu_prob=0.45, mortality_shift=0.1,
        boosts=(("cirrhosis", 2.5), ("heavy_alcohol", 1.5), ("atrial_fibrillation", 1.4), ("chronic_kidney_disease", 1.3)),
        procedures=(("4513", 0.55), ("4516", 0.3), ("4523", 0.3), ("9904", 0.75), ("4443", 0.15), ("3893", 0.25)),
        drugs=(("pantoprazole_iv", 0.9), ("pantoprazole", 0.6), ("sodium_chloride_bag", 0.6)),
        labs=((51222, -2.5), (51221, -2.5), (51006, 1.8)), panels=("coags",),
        complications=(("acute_blood_loss_anemia", 0.7), ("anticoagulant_adverse_effect", 0.15), ("acute_kidney_injury", 0.15), ("hypotension", 0.2)),
        hpi=("presents with {days} days of {complaint}. Hct on arrival {hct} (baseline {baseline_hct}). NG lavage {lavage}.",),
        course=(
            "Received {units} units PRBCs. EGD showed {egd_finding}; treated endoscopically. Hct remained stable for 48 hours prior to discharge.",
            "Hct stabilized after {units} units pRBC. Colonoscopy revealed {colon_finding}. Started on PPI BID.",
        ),
        radiology=("CHEST (PORTABLE AP)",),
    ),
    AdmissionReason(
        "variceal_bleed", (("4560", 1.0),), ("UPPER GI BLEED", "VARICEAL BLEED"), ("hematemesis", "melena"),
        ("variceal bleed", "esophageal variceal hemorrhage"),
        "MED", "EMERGENCY", 0.5, severity=1.2, los_median_days=6.0, icu_prob=0.85, mortality_shift=0.9,
        requires=("cirrhosis",), boosts=(("heavy_alcohol", 1.6),),
        procedures=(("4291", 0.7), ("4513", 0.6), ("9904", 0.9), ("9907", 0.4), ("3893", 0.5), ("9604", 0.3)),
        drugs=(("octreotide", 0.95), ("pantoprazole_iv", 0.9), ("ceftriaxone", 0.7), ("nadolol", 0.4)),
        labs=((51222, -3.0), (51221, -3.0), (51237, 1.0)), panels=("coags", "lfts"),
        complications=(("acute_blood_loss_anemia", 0.85), ("coagulopathy", 0.4), ("hepatic_encephalopathy_secondary", 0.3), ("thrombocytopenia", 0.4)),
        hpi=("with known cirrhosis presents with large-volume hematemesis; Hct {hct} on arrival.",),
        course=("EGD with grade III varices, banded x{bands}. Started on octreotide gtt and ceftriaxone for SBP prophylaxis; transitioned to nadolol.",),
        radiology=("LIVER OR GALLBLADDER US (SINGLE ORGAN)", "CHEST (PORTABLE AP)"),
    ),
    AdmissionReason(
        "hepatic_encephalopathy", (("5722", 1.0),), ("HEPATIC ENCEPHALOPATHY", "ALTERED MENTAL STATUS"), ("confusion", "altered mental status", "lethargy"),
        ("hepatic encephalopathy", "HE"),
        "MED", "EMERGENCY", 1.2, severity=0.7, los_median_days=5.0, icu_prob=0.3, mortality_shift=0.5,
        requires=("cirrhosis",), boosts=(("nonadherent", 2.5), ("heavy_alcohol", 1.3)),
        procedures=(("5491", 0.35),),
        drugs=(("lactulose", 0.98), ("rifaximin", 0.8), ("ceftriaxone", 0.3), ("albumin", 0.3)),
        labs=((50885, 1.5), (50983, -0.8), (51237, 0.8)), panels=("lfts", "coags"),
        complications=(("hyponatremia", 0.35), ("acute_kidney_injury", 0.3), ("thrombocytopenia", 0.4), ("coagulopathy", 0.3), ("ascites", 0.5)),
        hpi=("with cirrhosis presents with {days} days of worsening {complaint}. {adherence_clause}",),
        course=("Treated with lactulose titrated to 3-4 BMs daily and rifaximin, with resolution of encephalopathy. Diagnostic paracentesis negative for SBP.",),
        radiology=("LIVER OR GALLBLADDER US (SINGLE ORGAN)", "CT HEAD W/O CONTRAST"),
    ),
    AdmissionReason(
        "stroke", (("43491", 0.6), ("431", 0.3), ("430", 0.1)), ("STROKE", "INTRACRANIAL HEMORRHAGE", "STROKE;TELEMETRY;TRANSIENT ISCHEMIC ATTACK"),
        ("left-sided weakness", "right-sided weakness", "slurred speech", "facial droop", "headache"),
        ("stroke", "CVA", "ischemic stroke", "intracranial hemorrhage", "ICH"),
        "NMED", "EMERGENCY", 0.5, severity=1.0, los_median_days=6.0, icu_prob=0.55, mortality_shift=1.0,
        boosts=(("atrial_fibrillation", 2.2), ("hypertension", 1.4), ("diabetes", 1.2), ("smoker", 1.2), ("stroke_history", 2.0)),
        procedures=(("9604", 0.2), ("9671", 0.15), ("4311", 0.15), ("966", 0.3)),
        drugs=(("aspirin", 0.7), ("atorvastatin", 0.6), ("labetalol", 0.4), ("levetiracetam", 0.2)),
        complications=(("dysphagia_aspiration", 0.15), ("delirium", 0.15), ("urinary_retention", 0.1)),
        hpi=("was last seen well at {time} when family noted {complaint}. NIHSS {nihss} in the ED. CT head {ct_finding}.",),
        course=("MRI confirmed {territory} territory infarct. Not a tPA candidate given time window. Started on aspirin and statin; PT/OT/speech evaluated.",),
        radiology=("CT HEAD W/O CONTRAST", "MR HEAD W & W/O CONTRAST", "CTA HEAD W&W/O C & RECONS", "CAROTID SERIES COMPLETE"),
        adds_history=("stroke_history",),
    ),
    AdmissionReason(
        "copd_exacerbation", (("49121", 1.0),), ("COPD EXACERBATION", "SHORTNESS OF BREATH", "HYPOXIA"), ("shortness of breath", "wheezing", "increased sputum"),
        ("COPD exacerbation", "acute exacerbation of COPD", "AECOPD"),
        "MED", "EMERGENCY", 1.8, severity=0.4, los_median_days=4.0, icu_prob=0.2, mortality_shift=-0.3,
        requires=("copd",), boosts=(("smoker", 1.5), ("nonadherent", 1.5)),
        procedures=(("9390", 0.15), ("9604", 0.05)),
        drugs=(("methylprednisolone", 0.7), ("prednisone", 0.85), ("albuterol_neb", 0.95), ("ipratropium_neb", 0.9), ("azithromycin", 0.55), ("levofloxacin", 0.2)),
        labs=((50818, 1.5), (50821, -1.2)), panels=("blood_gas",),
        complications=(("acute_respiratory_failure_secondary", 0.2), ("steroid_hyperglycemia", 0.25)),
        hpi=("with severe COPD on {o2} L home O2 presents with {days} days of {complaint} and increased sputum production. {adherence_clause}",),
        course=("Treated with solumedrol transitioned to prednisone taper, standing nebs and azithromycin with improvement. Ambulatory sat {sat}% on {o2}L at discharge.",),
        radiology=("CHEST (PA & LAT)",),
    ),
    AdmissionReason(
        "diabetic_ketoacidosis", (("25012", 0.5), ("25013", 0.5)), ("DIABETIC KETOACIDOSIS", "HYPERGLYCEMIA"), ("nausea and vomiting", "abdominal pain", "polyuria"),
        ("DKA", "diabetic ketoacidosis"),
        "MED", "EMERGENCY", 0.5, severity=0.6, los_median_days=3.0, icu_prob=0.7, mortality_shift=-1.0,
        requires=("diabetes",), boosts=(("nonadherent", 3.0),),
        drugs=(("insulin_regular", 0.99), ("insulin_glargine", 0.8), ("sodium_chloride_bag", 0.95), ("potassium_chloride_additive", 0.7), ("dextrose_5_water", 0.6)),
        labs=((50931, 4.0), (50882, -3.5), (50868, 3.5), (50820, -2.5), (50971, 1.0)), panels=("blood_gas",),
        complications=(("acidosis", 0.9), ("hypokalemia", 0.4), ("dehydration", 0.5)),
        hpi=("presents with {days} days of {complaint}; BG {glucose} with AG of {anion_gap}. {adherence_clause}",),
        course=("Started on insulin gtt and IVF per DKA protocol; gap closed within 24 hours and transitioned to SC insulin. Seen by Joslin diabetes team.",),
    ),
    AdmissionReason(
        "alcohol_withdrawal", (("29181", 0.7), ("2910", 0.3)), ("ETOH WITHDRAWAL", "ALCOHOL WITHDRAWAL", "ETOH INTOXICATION"),
        ("tremors", "anxiety", "visual hallucinations", "seizure"), ("alcohol withdrawal", "EtOH withdrawal", "DTs"),
        "MED", "EMERGENCY", 1.5, severity=0.4, los_median_days=4.0, icu_prob=0.45, mortality_shift=-0.8,
        requires=("heavy_alcohol",),
        drugs=(("diazepam", 0.8), ("lorazepam", 0.6), ("thiamine", 0.95), ("folic_acid", 0.9), ("multivitamin", 0.85)),
        labs=((50960, -1.5), (50970, -1.2), (51250, 1.5), (50878, 1.5), (50861, 1.0)), panels=("mg_phos_ca", "lfts"),
        complications=(("hypokalemia", 0.3), ("hypomagnesemia_low_k", 0.2), ("seizure_acute", 0.1)),
        extra_codes=(("30390", 0.5),),
        hpi=("with long history of EtOH abuse, last drink {hours} hours prior to presentation, presents with {complaint}. CIWA {ciwa} in the ED.",),
        course=("Placed on CIWA scale requiring {diazepam} mg valium total. Repleted electrolytes. Social work consulted for substance abuse resources.",),
        radiology=("CT HEAD W/O CONTRAST",),
    ),
    AdmissionReason(
        "overdose", (("96509", 0.5), ("9694", 0.5)), ("OVERDOSE", "ALTERED MENTAL STATUS", "INGESTION"), ("unresponsive", "altered mental status"),
        ("overdose", "opioid overdose", "intentional ingestion"),
        "MED", "EMERGENCY", 0.3, severity=0.5, los_median_days=2.5, icu_prob=0.8, mortality_shift=-0.3,
        boosts=(("drug_use", 4.0), ("depression", 2.0)),
        procedures=(("9604", 0.3), ("9671", 0.25)),
        drugs=(("naloxone", 0.7), ("sodium_chloride_bag", 0.7)),
        labs=((50818, 1.2),), panels=("blood_gas",),
        complications=(("aspiration_pneumonitis", 0.15), ("suicidal_ideation", 0.3)),
        extra_codes=(("E8502", 0.5), ("E9502", 0.3)),
        hpi=("was found unresponsive by {finder} with drug paraphernalia nearby; responded to narcan in the field.",),
        course=("Monitored in the ICU; mental status improved. Psychiatry evaluated and felt patient was not at acute risk. Counseled on overdose risk.",),
    ),
    AdmissionReason(
        "acute_pancreatitis", (("5770", 1.0),), ("PANCREATITIS", "ABDOMINAL PAIN"), ("epigastric pain", "abdominal pain radiating to the back", "nausea and vomiting"),
        ("acute pancreatitis", "pancreatitis"),
        "MED", "EMERGENCY", 0.3, severity=0.5, los_median_days=5.0, icu_prob=0.2, mortality_shift=-0.5,
        boosts=(("heavy_alcohol", 5.0), ("hyperlipidemia", 1.3)),
        drugs=(("hydromorphone", 0.8), ("sodium_chloride_bag", 0.95), ("lactated_ringers", 0.6), ("ondansetron", 0.7)),
        labs=((50956, 4.5), (51301, 1.2)), panels=("lipase", "lfts"),
        complications=(("dehydration", 0.3), ("hypokalemia", 0.2), ("acute_kidney_injury", 0.15)),
        hpi=("presents with {days} days of {complaint}. Lipase {lipase} in the ED.",),
        course=("Made NPO, aggressive IVF and IV dilaudid for pain. Diet advanced as tolerated. RUQ US without gallstones.",),
        radiology=("LIVER OR GALLBLADDER US (SINGLE ORGAN)", "CT ABDOMEN W/CONTRAST"),
    ),
    AdmissionReason(
        "acute_kidney_injury", (("5849", 0.8), ("5845", 0.2)), ("ACUTE RENAL FAILURE", "HYPERKALEMIA", "RENAL FAILURE"), ("decreased urine output", "weakness", "nausea"),
        ("acute kidney injury", "AKI", "acute renal failure", "ARF"),
        "MED", "EMERGENCY", 0.4, severity=0.4, los_median_days=4.5, icu_prob=0.15, mortality_shift=-0.2,
        boosts=(("chronic_kidney_disease", 2.5), ("heart_failure", 1.3), ("diabetes", 1.3)),
        procedures=(("3995", 0.15), ("3895", 0.1)),
        drugs=(("sodium_chloride_bag", 0.8), ("sodium_chloride_flush", 0.5)),
        labs=((50912, 3.0), (51006, 2.5), (50971, 1.5), (50882, -1.0)),
        complications=(("hyperkalemia", 0.4), ("acidosis", 0.3), ("dehydration", 0.4)),
        hpi=("referred from clinic for Cr of {creatinine} (baseline {baseline_creatinine}) with {complaint}.",),
        course=("AKI felt prerenal in setting of poor PO intake and diuretics; improved with IVF. Cr {creatinine} at discharge. Lisinopril held.",),
        radiology=("RENAL U.S.",),
    ),
    AdmissionReason(
        "pulmonary_embolism", (("41519", 0.7), ("45341", 0.3)), ("PULMONARY EMBOLISM", "SHORTNESS OF BREATH", "DVT"), ("pleuritic chest pain", "shortness of breath", "leg swelling"),
        ("pulmonary embolism", "PE", "DVT", "deep vein thrombosis"),
        "MED", "EMERGENCY", 0.3, severity=0.5, los_median_days=4.0, icu_prob=0.2, mortality_shift=0.0,
        boosts=(("metastatic_cancer", 3.0), ("dvt_history", 2.5), ("obesity", 1.3)),
        drugs=(("heparin_iv", 0.8), ("enoxaparin", 0.5), ("warfarin", 0.7)),
        panels=("coags",),
        complications=(("hypotension", 0.1),),
        hpi=("presents with {days} days of {complaint}; CTA showed {side} segmental PE.",),
        course=("Started on heparin gtt bridged to coumadin with goal INR 2-3; TTE without RV strain. Lovenox bridge at discharge.",),
        radiology=("CTA CHEST W&W/O C&RECONS, NON-CORONARY", "BILAT LOWER EXT VEINS"),
        adds_history=("dvt_history",),
    ),
    AdmissionReason(
        "hip_fracture", (("82021", 0.6), ("8208", 0.4)), ("HIP FRACTURE", "S/P FALL", "LEFT HIP FRACTURE", "RIGHT HIP FRACTURE"),
        ("fall", "hip pain", "inability to bear weight"), ("hip fracture", "intertrochanteric fracture", "femoral neck fracture"),
        "ORTHO", "EMERGENCY", 0.3, severity=0.4, los_median_days=5.0, icu_prob=0.1, mortality_shift=-0.2,
        boosts=(("dementia", 2.5), ("lives_alone", 1.6), ("heavy_alcohol", 1.4)),
        procedures=(("7935", 0.65), ("8151", 0.3), ("9904", 0.3)),
        drugs=(("oxycodone", 0.9), ("enoxaparin", 0.85), ("cefazolin", 0.9), ("acetaminophen", 0.9)),
        labs=((51222, -1.2),),
        complications=(("acute_blood_loss_anemia", 0.4), ("delirium", 0.2), ("urinary_retention", 0.2), ("postop_atelectasis", 0.1)),
        extra_codes=(("E8889", 0.85), ("E8497", 0.15)),
        hpi=("sustained a mechanical fall at {location} and was unable to bear weight. Films showed a {side} {fracture}.",),
        course=("Taken to the OR by orthopedics for ORIF on hospital day {day}. Post-op course notable for {complication_word}. Lovenox x4 weeks for DVT ppx.",),
        radiology=("HIP UNILAT MIN 2 VIEWS", "CHEST (PA & LAT)", "CT HEAD W/O CONTRAST"),
    ),
    AdmissionReason(
        "coronary_bypass", (("41401", 1.0),), ("CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA", "CORONARY ARTERY DISEASE"),
        ("exertional chest pain", "dyspnea on exertion", "positive stress test"), ("three vessel coronary artery disease", "multivessel CAD"),
        "CSURG", "ELECTIVE", 0.6, severity=0.5, los_median_days=6.0, icu_prob=0.98, mortality_shift=-0.6,
        requires=("coronary_artery_disease",), boosts=(("diabetes", 1.5),),
        procedures=(("3615", 0.95), ("3613", 0.5), ("3612", 0.4), ("3961", 0.95), ("3891", 0.8), ("3893", 0.6), ("9904", 0.4)),
        drugs=(("cefazolin", 0.95), ("vancomycin", 0.4), ("metoprolol_tartrate", 0.95), ("aspirin", 0.95), ("furosemide_iv", 0.85), ("potassium_chloride", 0.9), ("insulin_regular", 0.9), ("oxycodone", 0.8), ("acetaminophen", 0.9), ("atorvastatin", 0.8), ("magnesium_sulfate", 0.6)),
        labs=((51222, -1.5),),
        complications=(("postop_atelectasis", 0.3), ("postop_afib", 0.3), ("acute_blood_loss_anemia", 0.4), ("cardiac_complication_surgery", 0.15)),
        hpi=("with known CAD had a positive stress test; cath revealed {vessel} disease and was referred for surgical revascularization.",),
        course=("Taken to the OR for CABG x{grafts} (LIMA-LAD, SVG-OM). Extubated POD0, chest tubes removed POD{day}. Started on beta blocker, aspirin, statin.",),
        radiology=("CHEST (PA & LAT)", "CHEST (PORTABLE AP)"),
        adds_history=("cabg",),
    ),
    AdmissionReason(
        "aortic_valve_replacement", (("4241", 1.0),), ("AORTIC STENOSIS\\AORTIC VALVE REPLACEMENT /SDA", "AORTIC STENOSIS"),
        ("dyspnea on exertion", "syncope", "chest tightness"), ("aortic stenosis", "severe AS", "aortic valve disease"),
        "CSURG", "ELECTIVE", 0.25, severity=0.5, los_median_days=6.5, icu_prob=0.98, mortality_shift=-0.5,
        procedures=(("3521", 0.6), ("3522", 0.4), ("3961", 0.95), ("3891", 0.8), ("3893", 0.5), ("9904", 0.35)),
        drugs=(("cefazolin", 0.95), ("metoprolol_tartrate", 0.9), ("aspirin", 0.9), ("furosemide_iv", 0.8), ("potassium_chloride", 0.85), ("insulin_regular", 0.8), ("oxycodone", 0.8), ("acetaminophen", 0.9), ("warfarin", 0.2)),
        complications=(("postop_afib", 0.3), ("postop_atelectasis", 0.3), ("acute_blood_loss_anemia", 0.4)),
        hpi=("with progressive dyspnea on exertion; echo showed critical AS with valve area {ava} cm2.",),
        course=("Underwent AVR (#{valve_size} tissue valve) without complication. Post-op course notable for {complication_word}.",),
        radiology=("CHEST (PA & LAT)", "CHEST (PORTABLE AP)"),
    ),
    AdmissionReason(
        "elective_pci", (("41401", 0.8), ("4139", 0.2)), ("CORONARY ARTERY DISEASE", "UNSTABLE ANGINA\\CATH", "ANGINA"),
        ("exertional chest pain", "positive stress test"), ("stable angina", "CAD", "coronary artery disease"),
        "CMED", "ELECTIVE", 0.45, severity=-0.3, los_median_days=1.5, icu_prob=0.05, mortality_shift=-2.0,
        requires=("coronary_artery_disease",),
        procedures=(("3722", 0.7), ("8856", 0.8), ("0066", 0.8), ("3607", 0.7), ("0045", 0.5), ("0040", 0.5)),
        drugs=(("aspirin", 0.95), ("clopidogrel", 0.95), ("heparin_iv", 0.5), ("atorvastatin", 0.8), ("metoprolol_tartrate", 0.7)),
        panels=("cardiac", "coags"),
        complications=(("cath_complication", 0.06),),
        hpi=("with CAD and exertional angina referred for elective cardiac catheterization after abnormal stress test.",),
        course=("Cath showed {vessel} disease; DES placed to {artery}. Groin site without hematoma. Plavix for at least 12 months.",),
        adds_history=("pci",),
    ),
    AdmissionReason(
        "chemotherapy", (("V5811", 1.0),), ("CHEMOTHERAPY", "ADMIT FOR CHEMOTHERAPY"), ("scheduled chemotherapy",), ("chemotherapy admission", "cycle of chemotherapy"),
        "OMED", "ELECTIVE", 1.6, severity=-0.3, los_median_days=3.0, icu_prob=0.02, mortality_shift=-1.5,
        requires=("metastatic_cancer",),
        procedures=(("9925", 0.95),),
        drugs=(("carboplatin", 0.6), ("paclitaxel", 0.5), ("ondansetron", 0.95), ("dexamethasone", 0.8), ("prochlorperazine", 0.4)),
        labs=((51301, -1.0), (51265, -0.8)),
        complications=(("neutropenia_nausea", 0.2),),
        hpi=("with {cancer} admitted electively for cycle {cycle} of chemotherapy.",),
        course=("Received cycle {cycle} of carboplatin/paclitaxel without complication. Antiemetics as needed.",),
    ),
    AdmissionReason(
        "craniotomy", (("2252", 1.0),), ("BRAIN TUMOR\\CRANIOTOMY /SDA", "MENINGIOMA"), ("headaches", "seizure", "vision changes"),
        ("meningioma", "brain mass"),
        "NSURG", "ELECTIVE", 0.12, severity=0.3, los_median_days=4.0, icu_prob=0.9, mortality_shift=-1.0,
        procedures=(("0159", 0.95), ("3891", 0.6)),
        drugs=(("dexamethasone", 0.95), ("levetiracetam", 0.85), ("cefazolin", 0.9), ("oxycodone", 0.7)),
        complications=(("steroid_hyperglycemia", 0.2),),
        hpi=("with {months} months of {complaint}; MRI showed an extra-axial mass consistent with meningioma.",),
        course=("Underwent craniotomy for resection of meningioma. Post-op MRI with gross total resection. Decadron taper.",),
        radiology=("MR HEAD W & W/O CONTRAST", "CT HEAD W/O CONTRAST"),
    ),
    AdmissionReason(
        "newborn", (("V3000", 0.55), ("V3001", 0.45)), ("NEWBORN",), ("newborn",), ("newborn", "term infant"),
        "NB", "NEWBORN", 0.0, severity=-0.8, los_median_days=3.5, icu_prob=0.6, mortality_shift=-2.5,
        procedures=(("9955", 0.6), ("9983", 0.15), ("640", 0.2), ("9915", 0.1)),
        drugs=(("ampicillin", 0.35), ("gentamicin", 0.35), ("phytonadione", 0.9), ("erythromycin_ophthalmic", 0.9), ("hepatitis_b_vaccine", 0.75), ("caffeine_citrate", 0.08)),
        complications=(("newborn_sepsis_rule_out", 0.4), ("prematurity", 0.25), ("neonatal_jaundice", 0.2), ("transient_tachypnea", 0.1)),
        extra_codes=(("V053", 0.6),),
        newborn=True,
    ),
)

ADMISSION_REASONS_BY_KEY: dict[str, AdmissionReason] = {reason.key: reason for reason in ADMISSION_REASONS}

COMPLICATIONS: tuple[Complication, ...] = (
    Complication("acute_kidney_injury", (("5849", 1.0),), ("acute kidney injury", "AKI", "acute renal failure", "ARF"), 0.035,
                 labs=((50912, 2.5), (51006, 1.8)), boosts=(("chronic_kidney_disease", 2.0),), readmission_weight=0.55),
    Complication("septic_shock", (("78552", 1.0),), ("septic shock",), 0.0, drugs=(("norepinephrine", 0.95),), labs=((50813, 2.0),),
                 procedures=(("3893", 0.6),), mention_prob=0.9, readmission_weight=0.2),
    Complication("severe_sepsis", (("99592", 1.0),), ("severe sepsis",), 0.0),
    Complication("sepsis_secondary", (("99591", 1.0),), ("sepsis",), 0.0, drugs=(("vancomycin", 0.8),), labs=((50813, 1.2),)),
    Complication("hyponatremia", (("2761", 1.0),), ("hyponatremia", "hypoNa"), 0.06, labs=((50983, -3.0),),
                 boosts=(("heart_failure", 1.5), ("cirrhosis", 2.0)), readmission_weight=0.55),
    Complication("hypokalemia", (("2768", 1.0),), ("hypokalemia",), 0.06, drugs=(("potassium_chloride", 0.95),), labs=((50971, -2.5),)),
    Complication("hyperkalemia", (("2767", 1.0),), ("hyperkalemia",), 0.03, drugs=(("calcium_gluconate", 0.5), ("insulin_regular", 0.5)), labs=((50971, 3.0),),
                 boosts=(("end_stage_renal_disease", 3.0),), readmission_weight=0.4),
    Complication("hypomagnesemia_low_k", (("2769", 1.0),), ("hypomagnesemia",), 0.03, drugs=(("magnesium_sulfate", 0.95),), labs=((50960, -2.5),)),
    Complication("acidosis", (("2762", 1.0),), ("metabolic acidosis", "acidosis"), 0.04, labs=((50882, -2.5), (50868, 2.0))),
    Complication("dehydration", (("27651", 1.0),), ("dehydration", "hypovolemia"), 0.04, drugs=(("sodium_chloride_bag", 0.9),), labs=((51006, 1.2),)),
    Complication("thrombocytopenia", (("2875", 1.0),), ("thrombocytopenia",), 0.04, labs=((51265, -2.5),), boosts=(("cirrhosis", 2.5),), readmission_weight=0.35),
    Complication("coagulopathy", (("2869", 1.0),), ("coagulopathy",), 0.02, labs=((51237, 2.5),), readmission_weight=0.4),
    Complication("acute_blood_loss_anemia", (("2851", 1.0),), ("acute blood loss anemia", "ABLA"), 0.03, procedures=(("9904", 0.8),),
                 labs=((51222, -2.5), (51221, -2.5)), readmission_weight=0.4),
    Complication("anticoagulant_adverse_effect", (("E9342", 1.0),), ("supratherapeutic INR",), 0.0, drugs=(("phytonadione", 0.6),), labs=((51237, 3.0),)),
    Complication("delirium", (("2930", 1.0),), ("delirium", "acute encephalopathy", "sundowning"), 0.015, drugs=(("haloperidol", 0.5), ("quetiapine", 0.4)),
                 boosts=(("dementia", 3.0),), readmission_weight=0.5),
    Complication("hypotension", (("4589", 1.0),), ("hypotension",), 0.02),
    Complication("bacteremia", (("7907", 1.0),), ("bacteremia",), 0.01),
    Complication("pleural_effusion", (("5119", 1.0),), ("pleural effusion", "effusion"), 0.03, procedures=(("3491", 0.3),)),
    Complication("postop_atelectasis", (("5180", 1.0),), ("atelectasis",), 0.01),
    Complication("acute_respiratory_failure", (("51881", 1.0),), ("respiratory failure", "hypoxemic respiratory failure"), 0.03,
                 procedures=(("9604", 0.6), ("9671", 0.6)), drugs=(("propofol", 0.5), ("fentanyl", 0.5))),
    Complication("acute_respiratory_failure_secondary", (("51881", 1.0),), ("hypercarbic respiratory failure",), 0.0, procedures=(("9390", 0.5),)),
    Complication("pneumonia_secondary", (("486", 1.0),), ("pneumonia", "VAP"), 0.02, drugs=(("vancomycin", 0.6), ("cefepime", 0.6))),
    Complication("aspiration_pneumonitis", (("5070", 1.0),), ("aspiration pneumonitis",), 0.0),
    Complication("dysphagia_aspiration", (("5070", 1.0),), ("aspiration pneumonia",), 0.0, drugs=(("piperacillin_tazobactam", 0.7),)),
    Complication("malnutrition", (("2639", 1.0),), ("malnutrition", "protein-calorie malnutrition"), 0.012, procedures=(("966", 0.4),),
                 boosts=(("metastatic_cancer", 3.0), ("heavy_alcohol", 2.0)), readmission_weight=0.9),
    Complication("urinary_retention", (("78820", 1.0),), ("urinary retention",), 0.02, drugs=(("tamsulosin", 0.6),)),
    Complication("cardiac_arrhythmia", (("42789", 1.0),), ("arrhythmia", "NSVT"), 0.01),
    Complication("heart_failure_acute", (("4280", 1.0),), ("CHF", "volume overload"), 0.0, drugs=(("furosemide_iv", 0.9),)),
    Complication("postop_afib", (("42731", 1.0),), ("post-operative atrial fibrillation", "post-op AFib"), 0.0, drugs=(("amiodarone", 0.8),)),
    Complication("cardiac_complication_surgery", (("9971", 1.0), ), ("cardiac complication",), 0.0),
    Complication("cath_complication", (("99811", 1.0),), ("groin hematoma",), 0.0),
    Complication("hepatic_encephalopathy_secondary", (("5722", 1.0),), ("hepatic encephalopathy",), 0.0, drugs=(("lactulose", 0.95),)),
    Complication("ascites", (("78959", 1.0),), ("ascites",), 0.0, procedures=(("5491", 0.6),)),
    Complication("steroid_hyperglycemia", (("E9320", 1.0),), ("steroid-induced hyperglycemia",), 0.0, drugs=(("insulin_regular", 0.9),), labs=((50931, 2.0),)),
    Complication("seizure_acute", (("78039", 1.0),), ("withdrawal seizure",), 0.0, drugs=(("lorazepam", 0.9),)),
    Complication("suicidal_ideation", (("V6284", 1.0),), ("suicidal ideation",), 0.0),
    Complication("neutropenia_nausea", (("78791", 1.0),), ("diarrhea",), 0.0),
    Complication("clostridium_difficile", (("00845", 1.0),), ("C. diff colitis", "C diff"), 0.012, drugs=(("metronidazole", 0.7), ("vancomycin_oral", 0.5)), readmission_weight=0.9),
    Complication("pressure_ulcer", (("70703", 0.5), ("70722", 0.5)), ("sacral decubitus ulcer", "pressure ulcer"), 0.01, boosts=(("dementia", 4.0),), readmission_weight=0.8),
    Complication("mrsa_colonization", (("V090", 1.0),), ("MRSA",), 0.012),
    Complication("newborn_sepsis_rule_out", (("V290", 1.0),), ("rule out sepsis",), 0.0, drugs=(("ampicillin", 0.9), ("gentamicin", 0.9))),
    Complication("prematurity", (("76519", 0.4), ("76518", 0.3), ("76528", 0.2), ("76527", 0.1)), ("prematurity",), 0.0, drugs=(("caffeine_citrate", 0.5),)),
    Complication("neonatal_jaundice", (("7742", 1.0),), ("hyperbilirubinemia",), 0.0, procedures=(("9983", 0.8),)),
    Complication("transient_tachypnea", (("7706", 1.0),), ("transient tachypnea of the newborn", "TTN"), 0.0),
)

COMPLICATIONS_BY_KEY: dict[str, Complication] = {complication.key: complication for complication in COMPLICATIONS}

MINOR_CONDITIONS: tuple[MinorCondition, ...] = (
    MinorCondition("gout", "2749", 0.5, 0.05, ("gout",), drugs=(("allopurinol", 0.6), ("colchicine", 0.15))),
    MinorCondition("sleep_apnea", "32723", 0.45, 0.06, ("OSA on CPAP", "obstructive sleep apnea", "OSA")),
    MinorCondition("bph", "60000", 0.35, 0.12, ("BPH", "benign prostatic hypertrophy"), drugs=(("tamsulosin", 0.6), ("finasteride", 0.25)), sex="M"),
    MinorCondition("osteoarthritis", "71590", 0.25, 0.15, ("osteoarthritis", "OA of the knees", "DJD")),
    MinorCondition("glaucoma", "3659", 0.35, 0.05, ("glaucoma",), drugs=(("latanoprost", 0.7),)),
    MinorCondition("osteoporosis", "73300", 0.35, 0.08, ("osteoporosis",), drugs=(("alendronate", 0.5),), sex="F"),
    MinorCondition("parkinsons", "3320", 0.9, 0.01, ("Parkinson's disease",)),
    MinorCondition("hearing_loss", None, 0.0, 0.08, ("hard of hearing", "hearing loss", "bilateral hearing aids")),
    MinorCondition("cholecystectomy", None, 0.0, 0.07, ("s/p cholecystectomy", "s/p lap chole")),
    MinorCondition("appendectomy", None, 0.0, 0.05, ("s/p appendectomy",)),
    MinorCondition("nephrolithiasis", None, 0.0, 0.05, ("h/o kidney stones", "nephrolithiasis")),
    MinorCondition("migraines", None, 0.0, 0.04, ("migraines",)),
    MinorCondition("cataracts", None, 0.0, 0.06, ("s/p cataract surgery", "cataracts")),
    MinorCondition("seasonal_allergies", None, 0.0, 0.06, ("seasonal allergies",)),
    MinorCondition("hemorrhoids", None, 0.0, 0.03, ("hemorrhoids",)),
    MinorCondition("diverticulosis", None, 0.0, 0.05, ("diverticulosis",)),
)

HISTORIES: tuple[History, ...] = (
    History("cabg", "V4581", 0.8, ("s/p CABG", "CABG x3", "s/p coronary artery bypass grafting"), drugs=(("aspirin", 0.8),)),
    History("pci", "V4582", 0.75, ("s/p PCI", "s/p DES to LAD", "s/p stenting"), drugs=(("clopidogrel", 0.5),)),
    History("stroke_history", "V1254", 0.7, ("h/o CVA", "prior stroke", "h/o TIA")),
    History("dvt_history", "V1251", 0.6, ("h/o DVT", "history of PE", "h/o LLE DVT"), drugs=(("warfarin", 0.6),)),
    History("breast_cancer_history", "V103", 0.7, ("h/o breast cancer s/p lumpectomy", "breast cancer in remission")),
    History("prostate_cancer_history", "V1046", 0.7, ("h/o prostate cancer s/p XRT", "prostate cancer s/p prostatectomy")),
)

HISTORIES_BY_KEY: dict[str, History] = {history.key: history for history in HISTORIES}

FAMILY_HISTORY: tuple[str, ...] = (
    "Mother with breast cancer. Father died of MI at age {age}.",
    "Father with CAD, s/p CABG in his 60s. Mother with HTN and DM2.",
    "Non-contributory.",
    "No family history of early MI, arrhythmia, cardiomyopathies, or sudden cardiac death.",
    "Brother with type 2 diabetes. Mother died of stroke.",
    "Mother with colon cancer diagnosed at age {age}. No other known family history.",
    "Father with alcoholism and cirrhosis. Sister with depression.",
    "Unable to obtain; patient is adopted.",
    "Father died of lung cancer at {age}, was a heavy smoker. Mother alive with dementia.",
    "Both parents with hypertension. No family history of kidney disease.",
)

# Secondary diagnoses coders add that the model does not otherwise explain: (code, weight).
INCIDENTAL_CODES: tuple[tuple[str, float], ...] = (
    ("2859", 1.5), ("2724", 0.5), ("V1582", 0.5), ("5180", 1.5), ("5119", 1.5), ("2768", 1.5), ("2761", 1.5),
    ("2875", 1.2), ("78791", 1.0), ("7907", 0.8), ("V4986", 1.0), ("E8497", 0.5), ("E8889", 0.6), ("V1254", 0.6),
    ("V1251", 0.6), ("78820", 0.8), ("27800", 0.8), ("60000", 0.8), ("71590", 0.8), ("32723", 0.8), ("73300", 0.6),
    ("2749", 0.5), ("3659", 0.4), ("53081", 1.2), ("2449", 1.0), ("311", 1.0), ("30000", 0.8), ("2767", 0.8),
    ("2762", 0.8), ("4589", 0.8), ("42789", 0.6), ("2639", 0.2), ("V090", 0.6), ("2869", 0.5), ("27651", 0.8),
    ("2760", 0.6), ("E9320", 0.3), ("E8798", 0.5), ("V5867", 0.5), ("V462", 0.3), ("4240", 0.8), ("4241", 0.5),
    ("412", 0.4), ("4439", 0.6), ("28529", 0.5), ("V4581", 0.3), ("V4582", 0.3), ("V103", 0.2),
    ("V1046", 0.2), ("3572", 0.3), ("2800", 0.4), ("V5861", 0.4), ("5990", 0.8), ("00845", 0.2), ("2930", 0.5),
)
