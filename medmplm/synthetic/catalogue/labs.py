"""Curated laboratory items (MIMIC-III ``D_LABITEMS`` ITEMIDs) and the panels they are drawn in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabItem:
    """One lab test and the distribution of its value in a well patient.

    Values are ``center + spread * z`` (or ``exp(log(center) + spread * z)`` when ``log_scale``),
    where ``z`` is a standard normal shifted by the patient's conditions. ``low``/``high`` is the
    reference range that sets FLAG. An item with ``categories`` is non-numeric: VALUE is one of
    them (ordered from normal to most abnormal) and VALUENUM is null.
    """

    itemid: int
    label: str
    fluid: str
    category: str
    loinc: str | None
    unit: str | None
    center: float
    spread: float
    low: float
    high: float
    decimals: int
    log_scale: bool = False
    categories: tuple[str, ...] = ()


LAB_ITEMS: tuple[LabItem, ...] = (
    # Chemistry
    LabItem(50868, "Anion Gap", "Blood", "Chemistry", "1863-0", "mEq/L", 13, 2.5, 8, 20, 0),
    LabItem(50882, "Bicarbonate", "Blood", "Chemistry", "1963-8", "mEq/L", 26, 2.5, 22, 32, 0),
    LabItem(50893, "Calcium, Total", "Blood", "Chemistry", "2000-8", "mg/dL", 9.0, 0.45, 8.4, 10.3, 1),
    LabItem(50902, "Chloride", "Blood", "Chemistry", "2075-0", "mEq/L", 102, 3, 96, 108, 0),
    LabItem(50912, "Creatinine", "Blood", "Chemistry", "2160-0", "mg/dL", 0.9, 0.25, 0.4, 1.1, 1, log_scale=True),
    LabItem(50931, "Glucose", "Blood", "Chemistry", "2345-7", "mg/dL", 105, 0.18, 70, 105, 0, log_scale=True),
    LabItem(50960, "Magnesium", "Blood", "Chemistry", "19123-9", "mg/dL", 2.0, 0.2, 1.6, 2.6, 1),
    LabItem(50970, "Phosphate", "Blood", "Chemistry", "2777-1", "mg/dL", 3.5, 0.6, 2.7, 4.5, 1),
    LabItem(50971, "Potassium", "Blood", "Chemistry", "2823-3", "mEq/L", 4.1, 0.35, 3.3, 5.1, 1),
    LabItem(50983, "Sodium", "Blood", "Chemistry", "2951-2", "mEq/L", 139, 2.5, 133, 145, 0),
    LabItem(51006, "Urea Nitrogen", "Blood", "Chemistry", "3094-0", "mg/dL", 15, 0.3, 6, 20, 0, log_scale=True),
    LabItem(50861, "Alanine Aminotransferase (ALT)", "Blood", "Chemistry", "1742-6", "IU/L", 22, 0.4, 0, 40, 0, log_scale=True),
    LabItem(50878, "Asparate Aminotransferase (AST)", "Blood", "Chemistry", "1920-8", "IU/L", 24, 0.4, 0, 40, 0, log_scale=True),
    LabItem(50863, "Alkaline Phosphatase", "Blood", "Chemistry", "6768-6", "IU/L", 80, 0.3, 40, 130, 0, log_scale=True),
    LabItem(50885, "Bilirubin, Total", "Blood", "Chemistry", "1975-2", "mg/dL", 0.6, 0.4, 0, 1.5, 1, log_scale=True),
    LabItem(50862, "Albumin", "Blood", "Chemistry", "1751-7", "g/dL", 3.9, 0.35, 3.5, 5.2, 1),
    LabItem(50910, "Creatine Kinase (CK)", "Blood", "Chemistry", "2157-6", "IU/L", 100, 0.5, 0, 190, 0, log_scale=True),
    LabItem(51003, "Troponin T", "Blood", "Chemistry", "6598-7", "ng/mL", 0.01, 0.6, 0, 0.01, 2, log_scale=True),
    LabItem(50963, "NTproBNP", "Blood", "Chemistry", "33762-6", "pg/mL", 150, 0.8, 0, 450, 0, log_scale=True),
    LabItem(50852, "% Hemoglobin A1c", "Blood", "Chemistry", "4548-4", "%", 5.6, 0.4, 4, 6, 1),
    LabItem(50956, "Lipase", "Blood", "Chemistry", "3040-3", "IU/L", 30, 0.4, 0, 60, 0, log_scale=True),
    LabItem(50889, "C-Reactive Protein", "Blood", "Chemistry", "1988-5", "mg/L", 3, 0.9, 0, 5, 1, log_scale=True),
    # Blood gas
    LabItem(50813, "Lactate", "Blood", "Blood Gas", "32693-4", "mmol/L", 1.3, 0.3, 0.5, 2.0, 1, log_scale=True),
    LabItem(50820, "pH", "Blood", "Blood Gas", "11558-4", "units", 7.40, 0.03, 7.35, 7.45, 2),
    LabItem(50818, "pCO2", "Blood", "Blood Gas", "11557-6", "mm Hg", 40, 4, 35, 45, 0),
    LabItem(50821, "pO2", "Blood", "Blood Gas", "11556-8", "mm Hg", 95, 12, 85, 105, 0),
    # Hematology
    LabItem(51221, "Hematocrit", "Blood", "Hematology", "4544-3", "%", 40, 4, 36, 48, 1),
    LabItem(51222, "Hemoglobin", "Blood", "Hematology", "718-7", "g/dL", 13.5, 1.3, 12, 16, 1),
    LabItem(51248, "MCH", "Blood", "Hematology", "785-6", "pg", 30, 1.8, 27, 32, 1),
    LabItem(51249, "MCHC", "Blood", "Hematology", "786-4", "%", 33.5, 1.0, 31, 35, 1),
    LabItem(51250, "MCV", "Blood", "Hematology", "787-2", "fL", 90, 5, 82, 98, 0),
    LabItem(51265, "Platelet Count", "Blood", "Hematology", "777-3", "K/uL", 250, 0.3, 150, 440, 0, log_scale=True),
    LabItem(51277, "RDW", "Blood", "Hematology", "788-0", "%", 13.8, 1.0, 10.5, 15.5, 1),
    LabItem(51279, "Red Blood Cells", "Blood", "Hematology", "789-8", "m/uL", 4.5, 0.45, 4.2, 5.4, 2),
    LabItem(51301, "White Blood Cells", "Blood", "Hematology", "804-5", "K/uL", 7.5, 0.28, 4.0, 11.0, 1, log_scale=True),
    LabItem(51256, "Neutrophils", "Blood", "Hematology", "770-8", "%", 65, 7, 50, 70, 1),
    LabItem(51244, "Lymphocytes", "Blood", "Hematology", "736-9", "%", 25, 6, 18, 42, 1),
    LabItem(51237, "INR(PT)", "Blood", "Hematology", "5895-7", None, 1.1, 0.1, 0.9, 1.1, 1, log_scale=True),
    LabItem(51274, "PT", "Blood", "Hematology", "5902-2", "sec", 12.5, 0.08, 10.4, 13.4, 1, log_scale=True),
    LabItem(51275, "PTT", "Blood", "Hematology", "3173-2", "sec", 29, 0.12, 22, 35, 1, log_scale=True),
    # Urine
    LabItem(51491, "pH", "Urine", "Hematology", "5803-2", "units", 6.0, 0.6, 5, 8, 1),
    LabItem(51516, "WBC", "Urine", "Hematology", "5821-4", "#/hpf", 2, 0.8, 0, 5, 0, log_scale=True),
    LabItem(51463, "Bacteria", "Urine", "Hematology", "25145-4", None, 0, 1, 0, 0, 0, categories=("NONE", "OCC", "FEW", "MOD", "MANY")),
    LabItem(51508, "Urine Color", "Urine", "Hematology", "5778-6", None, 0, 1, 0, 0, 0, categories=("Yellow", "Straw", "Amber", "Red")),
)

LAB_ITEMS_BY_ID: dict[int, LabItem] = {item.itemid: item for item in LAB_ITEMS}

# Panels drawn together, as ordered on the wards.
LAB_PANELS: dict[str, tuple[int, ...]] = {
    "chem7": (50868, 50882, 50902, 50912, 50931, 50971, 50983, 51006),
    "cbc": (51221, 51222, 51248, 51249, 51250, 51265, 51277, 51279, 51301),
    "cbc_diff": (51256, 51244),
    "mg_phos_ca": (50960, 50970, 50893),
    "coags": (51237, 51274, 51275),
    "lfts": (50861, 50878, 50863, 50885, 50862),
    "cardiac": (51003, 50910),
    "bnp": (50963,),
    "a1c": (50852,),
    "lipase": (50956,),
    "crp": (50889,),
    "blood_gas": (50813, 50820, 50818, 50821),
    "urinalysis": (51491, 51516, 51463, 51508),
}
